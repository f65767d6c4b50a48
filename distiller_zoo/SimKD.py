"""Chen et al. 2022, "Knowledge Distillation with the Reused Teacher Classifier" (SimKD, ``--distill simkd``).

A projector maps the student's last stage map ``feat[-2]`` to the teacher's width and is trained to reproduce
the teacher's map by MSE; the student then predicts through the teacher's own classifier, frozen:
``logits = classifier_t(avgpool(projector(feat_s[-2])))``. That network, student + projector + teacher classifier,
is what a SimKD run deploys, so its evaluation during training, its checkpoints and ``validation.py`` all use it
(the training accuracy too, as in the reference; the student's own ``fc`` is not used and, with SimKD's
``-r 0 -a 0``, not trained by any loss). Spatial sizes: the larger of the two maps is average-pooled to the other's.

The teacher's target is the map its classifier's pooling actually reads (the model's ``pooled_map`` of
``feat[-2]``): for resnet, vgg, ResNet50 and ShuffleV1 teachers that is ``feat[-2]``; for WRN its head's BN-ReLU,
for MobileNetV2 and ShuffleV2 their 1x1 head conv (1280 / 1024 channels). The reference's ``feat[-2]`` is that
map only for its own ResNets and VGG (spec FIX 3). With ``--teacher_bn`` train modes the head's BatchNorm then
sees each batch a second time.

Checkpoints: ``model`` stays the student's state dict (RepDistiller's format, loadable as before); ``deploy``
holds what rebuilds the deployed network around it: ``{'method': 'simkd', 'head': projector and classifier
weights, 'source_size': the size the student's map is pooled to, or None}`` (the reference kept the projector but
not the teacher classifier, so inference needed the teacher's checkpoint: spec FIX 1). The classifier copy is
frozen (the reference left ``requires_grad`` on and accumulated its gradients forever: spec FIX 2).
"""
from __future__ import annotations

import copy
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from helper.option import Option
from helper.types import float32_outputs

from .base import POST, Batch, Distiller, Outputs, register

GROUP = "SimKD (--distill simkd)"


def projector(s_channels: int, t_channels: int, factor: int) -> nn.Sequential:
    """SimKD's projector: 1x1, 3x3 and 1x1 convs (no bias), each followed by BN and ReLU, through
    ``t_channels // factor`` middle channels; PyTorch's default initialisation."""
    mid = t_channels // factor
    return nn.Sequential(
        nn.Conv2d(s_channels, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
        nn.Conv2d(mid, mid, 3, padding=1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
        nn.Conv2d(mid, t_channels, 1, bias=False), nn.BatchNorm2d(t_channels), nn.ReLU(inplace=True),
    )


def projector_like(state: Dict[str, torch.Tensor], prefix: str = "projector.") -> nn.Sequential:
    """An untrained projector with the shapes of the one saved in ``state`` (keys ``projector.0.weight`` ...)."""
    first, middle = state[prefix + "0.weight"], state[prefix + "6.weight"]
    s_channels, t_channels, mid = int(first.shape[1]), int(middle.shape[0]), int(first.shape[0])
    return projector(s_channels, t_channels, t_channels // mid)


def the_linear_layer(module: nn.Module) -> nn.Linear:
    """The one ``nn.Linear`` of a classifier (``fc``, or MobileNetV2's ``Sequential(Linear)``)."""
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    if len(linears) != 1:
        raise ValueError(f"--distill simkd reuses the teacher's classifier, which must be one linear layer; "
                         f"{type(module).__name__} holds {len(linears)}")
    return linears[0]


def project(projector: nn.Module, last_stage_map: torch.Tensor,
            source_size: Optional[Tuple[int, int]]) -> torch.Tensor:
    """The projector's output for the student's ``feat[-2]``, pooled to ``source_size`` first when given."""
    if source_size is not None:
        last_stage_map = F.adaptive_avg_pool2d(last_stage_map, source_size)
    return projector(last_stage_map)


def classify(classifier: nn.Module, projected: torch.Tensor) -> torch.Tensor:
    """The reused classifier on the globally pooled projected map."""
    return classifier(torch.flatten(F.adaptive_avg_pool2d(projected, 1), 1))


class ReusedClassifierStudent(nn.Module):
    """SimKD's deployed network: the student up to ``feat[-2]``, the projector, global average pooling and the
    teacher's classifier. ``forward(x)`` returns the logits."""

    def __init__(self, student: nn.Module, projector: nn.Module, classifier: nn.Linear,
                 source_size: Optional[Tuple[int, int]] = None):
        super().__init__()
        self.student = student
        self.projector = projector
        self.classifier = classifier
        self.source_size = None if source_size is None else tuple(int(d) for d in source_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats, _ = self.student(x, is_feat=True)
        return classify(self.classifier, project(self.projector, feats[-2], self.source_size))


@register("simkd")
class SimKD(Distiller):
    """SimKD: defaults ``-r 0 -a 0 -b 1`` (its reference's ``-c 0 -d 0 -b 1``), ``-f/--factor 2``.

    Trainable: the projector. The teacher classifier is a frozen copy in this method's state.
    """

    student_features = teacher_features = POST
    defaults = {"gamma": 0.0, "alpha": 0.0, "beta": 1.0}
    options = Distiller.options + (
        Option("factor", int, 2, "SimKD's projector narrows to the teacher's width / factor in its middle",
               flags=("-f", "--factor"), group=GROUP),
    )

    def __init__(self, ctx):
        super().__init__(ctx)
        factor = int(ctx.options.factor)
        teacher = ctx.teacher
        f_s, f_t = ctx.feat_s[-2], ctx.feat_t[-2]
        if f_s.dim() != 4 or f_t.dim() != 4:
            raise ValueError("--distill simkd projects the student's last stage map feat[-2] onto the teacher's, "
                             f"and got shapes {tuple(f_s.shape[1:])} and {tuple(f_t.shape[1:])}")
        try:
            classifier = the_linear_layer(teacher.classifier_module())
        except AttributeError:
            raise ValueError(f"--distill simkd reuses the teacher's classifier, and the teacher "
                             f"({type(teacher).__name__}) does not name it (classifier_module)") from None
        # the classifier's pooled input, from the probe's feat[-2] (eval mode: no BN statistics move)
        was_training = teacher.training
        teacher.eval()
        try:
            with torch.no_grad():
                target = teacher.pooled_map(f_t)
        finally:
            teacher.train(was_training)
        t_channels = int(target.shape[1])
        if t_channels != classifier.in_features:
            raise ValueError(f"--distill simkd: the teacher's pooled map has {t_channels} channels but its "
                             f"classifier takes {classifier.in_features}")
        if factor < 1 or t_channels // factor < 1:
            raise ValueError(f"-f/--factor must lie in 1..{t_channels} (the teacher's width), got {factor}")
        s_size, t_size = tuple(f_s.shape[-2:]), tuple(target.shape[-2:])
        # the larger map is pooled to the smaller one's size (the reference compares heights)
        self.source_size = t_size if s_size[0] > t_size[0] else None
        self.target_size = s_size if s_size[0] < t_size[0] else None
        self.projector = projector(int(f_s.shape[1]), t_channels, factor)
        frozen = copy.deepcopy(classifier)
        for p in frozen.parameters():
            p.requires_grad_(False)
        self.classifier = frozen
        # the teacher's head, called on its feature map; a bound method is not a submodule, so the teacher's
        # weights stay out of this method's state and optimizer
        self.teacher_map = teacher.pooled_map

    def deployed(self, student: nn.Module) -> ReusedClassifierStudent:
        """The network a SimKD run deploys (sharing this method's modules, so it evaluates the current weights)."""
        return ReusedClassifierStudent(student, self.projector, self.classifier, self.source_size)

    def deploy_state(self) -> Dict[str, Any]:
        head = {f"projector.{k}": v for k, v in self.projector.state_dict().items()}
        head.update({f"classifier.{k}": v for k, v in self.classifier.state_dict().items()})
        return {"method": self.name, "head": head,
                "source_size": None if self.source_size is None else list(self.source_size)}

    @classmethod
    def deployed_from(cls, student: nn.Module, state: Dict[str, Any]) -> ReusedClassifierStudent:
        """Rebuild the deployed network around a loaded student from a checkpoint's ``deploy`` entry."""
        head = state["head"]
        weight = head["classifier.weight"]
        classifier = nn.Linear(int(weight.shape[1]), int(weight.shape[0]), bias="classifier.bias" in head)
        model = ReusedClassifierStudent(student, projector_like(head), classifier, state.get("source_size"))
        for name in ("projector", "classifier"):
            prefix = name + "."
            getattr(model, name).load_state_dict({k[len(prefix):]: v for k, v in head.items()
                                                  if k.startswith(prefix)})
        for p in model.classifier.parameters():
            p.requires_grad_(False)
        return model

    def teacher_target(self, out_t: Outputs) -> torch.Tensor:
        with torch.no_grad():
            target = self.teacher_map(out_t.feats[-2].detach())
        if self.target_size is not None:
            target = F.adaptive_avg_pool2d(target, self.target_size)
        return target.float()

    def terms_and_prediction(self, out_s: Outputs, out_t: Outputs, batch: Batch):
        """The loss terms (CE and KL on the student's own logits, as the reference; the projector's MSE) and the
        deployed network's logits."""
        projected = project(self.projector, out_s.feats[-2], self.source_size)
        terms = {"ce": F.cross_entropy(out_s.logits, batch.y), "kl": self.kl_term(out_s.logits, out_t.logits),
                 "kd": F.mse_loss(projected, self.teacher_target(out_t))}
        return terms, classify(self.classifier, projected)

    def loss(self, out_s: Outputs, out_t: Optional[Outputs], batch: Batch, epoch: int) -> Dict[str, torch.Tensor]:
        return self.terms_and_prediction(out_s, out_t, batch)[0]

    def step_loss(self, out_s: Outputs, out_t: Optional[Outputs], batch: Batch, epoch: int):
        with torch.autocast(out_s.logits.device.type, enabled=False):
            return self.terms_and_prediction(float32_outputs(out_s), float32_outputs(out_t), batch)

    def trainable_modules(self) -> List[nn.Module]:
        return [self.projector]
