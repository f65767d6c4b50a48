"""Guo et al. 2023, "Class Attention Transfer Based Knowledge Distillation" (CAT-KD, CVPR; ``--distill catkd``),
as in GzyAftermath/CAT-KD.

A class activation map (CAM) is the network's last feature map F (the one its global pooling averages) seen
through its classifier weight W: ``CAM_c = sum_k W_ck F_k``, i.e. the classifier applied as a 1x1 convolution
before the pooling. CAT-KD average-pools the student's and the teacher's CAMs to r x r
(``--cat_resolution``), optionally L2-normalises every (sample, class) map over its r x r positions
(``--cat_normalize``), and takes the mean squared error over all B x C x r x r values.

As in the reference (its ``*_test`` models): the teacher's classifier bias is left out of its CAMs, and the
student's classifier has no bias. Here the student keeps RepDistiller's layers (its checkpoints load into the
plain model) and its bias is set to zero and frozen, which is the same network as a bias-free one. Adaptive
average pooling is linear in every channel, so ``AAP(W * F) = W * AAP(F)``: the CAMs are formed at r x r from the
pooled map instead of at the map's full size (the same values, C/K of the work).

Which map is F is the model's answer (``pooled_map_module()``, else ``feat[-2]``): ResNets' last stage,
WRN's relu(bn1(block3)), VGG's relu(block4), MobileNetV2's 1280-channel head, ShuffleV2's 1024-channel head.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from helper.option import Option, str2bool
from helper.util import at_least_float32

from .base import Batch, Distiller, Outputs, POST, register
from .ICKD import OutputTap

CAT_GROUP = "CAT-KD (--distill catkd)"

# (teacher, student) -> the CIFAR-100 yaml's (CAT_loss_weight = -b, CAM_RESOLUTION, IF_NORMALIZE) (spec 2.5; their
# learning rates are RepDistiller's rule: 0.05, 0.01 for MobileNetV2 and the ShuffleNets)
PAIR_SETTINGS: Dict[Tuple[str, str], Tuple[float, int, bool]] = {
    ("resnet32x4", "resnet8x4"): (15.0, 2, False), ("resnet56", "resnet20"): (0.7, 2, False),
    ("resnet110", "resnet32"): (1.8, 2, False), ("wrn_40_2", "wrn_16_2"): (12.0, 2, False),
    ("wrn_40_2", "wrn_40_1"): (1.5, 2, False), ("vgg13", "vgg8"): (4.5, 2, False),
    ("ResNet50", "MobileNetV2"): (40.0, 2, True), ("vgg13", "MobileNetV2"): (15.0, 2, True),
    ("resnet32x4", "ShuffleV1"): (600.0, 4, True), ("resnet32x4", "ShuffleV2"): (600.0, 4, True),
    ("wrn_40_2", "ShuffleV1"): (80.0, 4, True),
}


def cat_loss(cam_s: torch.Tensor, cam_t: torch.Tensor, resolution: int, normalize: bool) -> torch.Tensor:
    """CAT-KD's transfer loss between two CAM tensors [B, C, H, W] (their sizes may differ).

    Both are average-pooled to ``resolution`` x ``resolution``; with ``normalize`` every (sample, class) map is
    divided by its L2 norm over the positions (eps 1e-12, ``F.normalize``'s); then the mean squared error over all
    elements.
    """
    cam_s, cam_t = at_least_float32(cam_s), at_least_float32(cam_t)
    a_s = F.adaptive_avg_pool2d(cam_s, resolution)
    a_t = F.adaptive_avg_pool2d(cam_t, resolution)
    if normalize:
        a_s = F.normalize(a_s.flatten(2), dim=2)
        a_t = F.normalize(a_t.flatten(2), dim=2)
    return F.mse_loss(a_s, a_t)


def pooled_cams(feature_map: torch.Tensor, weight: torch.Tensor, resolution: int) -> torch.Tensor:
    """The CAMs of ``feature_map`` [B, K, H, W] under classifier ``weight`` [C, K], average-pooled to r x r."""
    pooled = F.adaptive_avg_pool2d(at_least_float32(feature_map), resolution)
    return torch.einsum("bkhw,ck->bchw", pooled, at_least_float32(weight))


def classifier_of(model: nn.Module, side: str) -> nn.Linear:
    """The linear layer of a network's classifier (``classifier_module()``: ``fc``, or MobileNetV2's
    ``Sequential(Linear)``)."""
    try:
        module = model.classifier_module()
    except (AttributeError, NotImplementedError):
        raise ValueError(f"--distill catkd needs the {side}'s classifier to form class activation maps; "
                         f"{type(model).__name__} does not name it (models/features.py classifier_module)") from None
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    if len(linears) != 1:
        raise ValueError(f"--distill catkd applies the {side}'s classifier to its last map as a 1x1 convolution, so "
                         f"it must be one linear layer; {type(module).__name__} holds {len(linears)}")
    return linears[0]


@register("catkd")
class CATKD(Distiller):
    """CAT-KD: ``-r 1 -a 0 -b beta`` with the CAT loss as the ``kd`` term.

    Defaults: the reference's cfg (beta 400, r 2, normalised); its per-pair CIFAR-100 settings are
    :data:`PAIR_SETTINGS` (:meth:`defaults_for`). No extra trainable modules: the student's classifier is the
    reference's bias-free one (its bias zero and frozen at build time).
    """

    student_features = teacher_features = POST
    defaults = {"gamma": 1.0, "alpha": 0.0, "beta": 400.0}
    options = Distiller.options + (
        Option("cat_resolution", int, 2, "CAT-KD: side r of the r x r average-pooled class activation maps "
               "(CAM_RESOLUTION)", group=CAT_GROUP),
        Option("cat_normalize", str2bool, True, "CAT-KD: L2-normalise each class activation map over its r x r "
               "positions before the MSE (IF_NORMALIZE)", group=CAT_GROUP),
    )

    @classmethod
    def defaults_for(cls, teacher: Optional[str], student: Optional[str]) -> Dict[str, object]:
        """The reference's CIFAR-100 settings for a teacher/student pair (empty for other pairs)."""
        settings = PAIR_SETTINGS.get((teacher, student))
        if settings is None:
            return {}
        beta, resolution, normalize = settings
        return {"beta": beta, "cat_resolution": resolution, "cat_normalize": normalize}

    def __init__(self, ctx):
        super().__init__(ctx)
        opt = ctx.options
        self.resolution = int(opt.cat_resolution)
        if self.resolution < 1:
            raise ValueError(f"--cat_resolution must be at least 1, got {self.resolution}")
        self.normalize = bool(opt.cat_normalize)
        if ctx.teacher is None:
            raise ValueError("--distill catkd needs a teacher (--path_t)")
        classifier_s = classifier_of(ctx.student, "student")
        classifier_t = classifier_of(ctx.teacher, "teacher")
        if classifier_s.out_features != classifier_t.out_features:
            raise ValueError(f"--distill catkd compares class activation maps class by class: the student has "
                             f"{classifier_s.out_features} classes, the teacher {classifier_t.out_features}")
        # a tuple, not attributes: the layers belong to the networks, not to this method's state dict
        self._classifiers = (classifier_s, classifier_t)
        if classifier_s.bias is not None:
            # the reference's student classifier is a bias-free 1x1 conv; a zero bias without gradient is that
            # network, and the checkpoint keeps RepDistiller's keys
            with torch.no_grad():
                classifier_s.bias.zero_()
            classifier_s.bias.requires_grad_(False)
        module_s = ctx.student.pooled_map_module()
        module_t = ctx.teacher.pooled_map_module()
        self._tap_s: Optional[OutputTap] = None if module_s is None else OutputTap(module_s)
        self._tap_t: Optional[OutputTap] = None if module_t is None else OutputTap(module_t)

    @staticmethod
    def _pooled_map(out: Outputs, tap: Optional[OutputTap]) -> torch.Tensor:
        if tap is None:
            return out.feats[-2]
        if tap.value is None:
            raise RuntimeError("CAT-KD's pooled-map hook has not seen a forward pass yet")
        value, tap.value = tap.value, None  # read once: the next forward sets it again
        return value

    def cams(self, out_s: Outputs, out_t: Outputs):
        """The student's and the teacher's r x r class activation maps (the teacher's without gradient)."""
        classifier_s, classifier_t = self._classifiers
        cam_s = pooled_cams(self._pooled_map(out_s, self._tap_s), classifier_s.weight, self.resolution)
        with torch.no_grad():
            cam_t = pooled_cams(self._pooled_map(out_t, self._tap_t), classifier_t.weight, self.resolution)
        return cam_s, cam_t

    def method_loss(self, out_s: Outputs, out_t: Outputs, batch: Batch, epoch: int) -> torch.Tensor:
        cam_s, cam_t = self.cams(out_s, out_t)
        return cat_loss(cam_s, cam_t, self.resolution, self.normalize)

    def remove_hooks(self) -> None:
        for tap in (self._tap_s, self._tap_t):
            if tap is not None:
                tap.remove()
