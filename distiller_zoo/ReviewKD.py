"""Chen et al. 2021, "Distilling Knowledge via Knowledge Review" (ReviewKD, ``--distill reviewkd``).

The student's stage maps and its pooled vector (as a 1x1 map) are fused deepest first by one attention-based
fusion module (ABF) per level; each ABF's output, shaped like the teacher's feature of that level, is compared
with it by the hierarchical context loss (HCL). As in mdistiller (the spec's REPRODUCE choice): the student's
post-ReLU stage maps, the teacher's pre-ReLU ones (``feat[1:-1]`` with ``preact=True``: the residual sum for
ResNets, ``BN_next(f)`` for WRN, the BN output for VGG) and the pooled vectors; nearest-neighbour resizing; the
loss weight ramps up as ``min(epoch / --reviewkd_warmup, 1)`` (epochs count from 1).

Levels: the student's ``feat[1:-1]`` plus its pooled vector, and the teacher's likewise; where one network has
more of them, the deepest ones of both are paired (the pooled level always with the pooled level), so every pair
of the zoo is served. Each level's ABF is sized from the two features of a dummy forward: input width the
student's, output width and size the teacher's, middle width ``min(--reviewkd_max_mid, the student's pooled
width)``. mdistiller hard-codes 512 there and ignores its ``MAX_MID_CHANNEL`` setting (spec FIX); here the flag is
honoured (the default 512 gives mdistiller's CIFAR modules).

The ABFs are trained with the student (SGD, weight decay included) and are not part of the deployed student.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from helper.option import Option

from .base import POST, PRE, Batch, Distiller, Outputs, register

GROUP = "ReviewKD (--distill reviewkd)"

# -b per teacher/student pair: the original ReviewKD CIFAR script (script/reviewKD.sh); resnet32x4 -> resnet8x4
# is also mdistiller's only CIFAR ReviewKD config. Other pairs: mdistiller's default REVIEWKD_WEIGHT 1.0 (the
# weights for vgg13 -> vgg8, ResNet50 -> MobileNetV2 and vgg13 -> MobileNetV2 are not in either reference).
PAIR_WEIGHTS: Dict[Tuple[str, str], float] = {
    ("resnet32x4", "resnet8x4"): 5.0,
    ("resnet56", "resnet20"): 0.6,
    ("resnet110", "resnet32"): 1.0,
    ("wrn_40_2", "wrn_16_2"): 5.0,
    ("wrn_40_2", "wrn_40_1"): 5.0,
    ("resnet32x4", "ShuffleV1"): 5.0,
    ("wrn_40_2", "ShuffleV1"): 5.0,
    ("resnet32x4", "ShuffleV2"): 8.0,
}
PAIR_DEFAULTS: Dict[Tuple[str, str], Dict[str, float]] = {pair: {"beta": w} for pair, w in PAIR_WEIGHTS.items()}

# HCL's pyramid: average-pooled to 4x4, 2x2 and 1x1 where the map is larger, with weights halving in that order
HCL_LEVELS = (4, 2, 1)


def hcl_level(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """HCL of one level: the full-resolution MSE and the MSEs of the pooled pyramid levels smaller than the map,
    weighted 1, 1/2, 1/4, ... and normalised by the sum of the weights."""
    loss = F.mse_loss(out, target)
    weight, total = 1.0, 1.0
    for size in HCL_LEVELS:
        if size >= out.shape[2]:
            continue
        weight /= 2.0
        loss = loss + weight * F.mse_loss(F.adaptive_avg_pool2d(out, size), F.adaptive_avg_pool2d(target, size))
        total += weight
    return loss / total


def hcl_loss(outs: Sequence[torch.Tensor], targets: Sequence[torch.Tensor]) -> torch.Tensor:
    """The hierarchical context loss: the plain sum of :func:`hcl_level` over the levels."""
    return sum(hcl_level(o, t) for o, t in zip(outs, targets))


class ABF(nn.Module):
    """Attention-based fusion of one level: 1x1 conv + BN to the middle width, fused with the deeper level's
    output by two sigmoid attention maps (all but the deepest level), resized to the teacher's size, then
    3x3 conv + BN to the teacher's width."""

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, fuse: bool):
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(in_channels, mid_channels, 1, bias=False),
                                   nn.BatchNorm2d(mid_channels))
        self.conv2 = nn.Sequential(nn.Conv2d(mid_channels, out_channels, 3, padding=1, bias=False),
                                   nn.BatchNorm2d(out_channels))
        self.att_conv = (nn.Sequential(nn.Conv2d(2 * mid_channels, 2, 1), nn.Sigmoid()) if fuse else None)
        # the reference's initialisation of the two convs; the attention conv and the BNs keep PyTorch's
        nn.init.kaiming_uniform_(self.conv1[0].weight, a=1)
        nn.init.kaiming_uniform_(self.conv2[0].weight, a=1)

    def forward(self, x: torch.Tensor, residual: Optional[torch.Tensor], out_size: Tuple[int, int]):
        """Returns (output for the loss, the fused map handed to the next, shallower level)."""
        x = self.conv1(x)
        if self.att_conv is not None:
            residual = F.interpolate(residual, size=x.shape[-2:], mode="nearest")
            att = self.att_conv(torch.cat([x, residual], dim=1))
            x = x * att[:, 0:1] + residual * att[:, 1:2]
        if tuple(x.shape[-2:]) != tuple(out_size):
            x = F.interpolate(x, size=out_size, mode="nearest")
        return self.conv2(x), x


def review_levels(feats: Sequence[torch.Tensor]) -> List[torch.Tensor]:
    """A network's ReviewKD levels, shallow to deep: its stage maps ``feat[1:-1]`` and the pooled vector as 1x1."""
    pooled = feats[-1]
    if pooled.dim() == 2:
        pooled = pooled[:, :, None, None]
    return list(feats[1:-1]) + [pooled]


@register("reviewkd")
class ReviewKD(Distiller):
    """ReviewKD: ABFs (deepest level first, ``abfs[0]`` on the pooled vector) and the HCL as the ``-b`` term.

    Defaults ``-r 1 -a 0 -b 1`` (mdistiller's CE and REVIEWKD_WEIGHT); for the pairs of the authors' script its
    ``-b`` is a preset (:data:`PAIR_WEIGHTS`, e.g. 5 for resnet32x4 -> resnet8x4; printed at the start, a flag wins).
    """

    student_features = POST
    teacher_features = PRE
    defaults = {"gamma": 1.0, "alpha": 0.0, "beta": 1.0}
    options = Distiller.options + (
        Option("reviewkd_warmup", int, 20, "epochs over which the review loss weight ramps up linearly "
               "(min(epoch / N, 1); 0: none)", group=GROUP),
        Option("reviewkd_max_mid", int, 512, "largest middle width of the ABFs (min of this and the student's "
               "pooled width)", group=GROUP),
    )

    @classmethod
    def defaults_for(cls, teacher, student):
        return dict(PAIR_DEFAULTS.get((teacher, student), {}))

    def __init__(self, ctx):
        super().__init__(ctx)
        opt = ctx.options
        if opt.reviewkd_warmup < 0:
            raise ValueError(f"--reviewkd_warmup must be 0 or more epochs, got {opt.reviewkd_warmup}")
        if opt.reviewkd_max_mid < 1:
            raise ValueError(f"--reviewkd_max_mid must be at least 1, got {opt.reviewkd_max_mid}")
        s_levels, t_levels = review_levels(ctx.feat_s), review_levels(ctx.feat_t)
        for who, levels in (("student", s_levels), ("teacher", t_levels)):
            flat = [tuple(f.shape[1:]) for f in levels if f.dim() != 4]
            if flat:
                raise ValueError(f"--distill reviewkd fuses feature maps, but the {who}'s features include "
                                 f"non-map shapes {flat}")
        n = min(len(s_levels), len(t_levels))
        s_levels, t_levels = s_levels[-n:], t_levels[-n:]
        self.warmup = int(opt.reviewkd_warmup)
        self.mid_channels = min(int(opt.reviewkd_max_mid), int(s_levels[-1].shape[1]))
        # deepest first, as the review runs
        self.out_sizes = [tuple(int(d) for d in t.shape[-2:]) for t in reversed(t_levels)]
        self.abfs = nn.ModuleList(
            ABF(int(s.shape[1]), self.mid_channels, int(t.shape[1]), fuse=k > 0)
            for k, (s, t) in enumerate(zip(reversed(s_levels), reversed(t_levels))))
        self.levels = n

    def review(self, student_feats: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        """The ABF outputs, shallow to deep (paired with the teacher's levels), from the student's features."""
        levels = review_levels(student_feats)[-self.levels:][::-1]
        out, residual = self.abfs[0](levels[0], None, self.out_sizes[0])
        outs = [out]
        for x, abf, size in zip(levels[1:], self.abfs[1:], self.out_sizes[1:]):
            out, residual = abf(x, residual, size)
            outs.append(out)
        return outs[::-1]

    def warmup_factor(self, epoch):
        if self.warmup <= 0:
            return 1.0
        if isinstance(epoch, torch.Tensor):
            # the compiled training step passes the epoch as a device scalar (one graph for every epoch)
            return torch.clamp(epoch / float(self.warmup), max=1.0)
        return min(float(epoch) / float(self.warmup), 1.0)

    def method_loss(self, out_s: Outputs, out_t: Outputs, batch: Batch, epoch: int) -> torch.Tensor:
        targets = [t.detach() for t in review_levels(out_t.feats)[-self.levels:]]
        return self.warmup_factor(epoch) * hcl_loss(self.review(out_s.feats), targets)
