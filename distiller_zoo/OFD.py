"""Heo et al. 2019, "A Comprehensive Overhaul of Feature Distillation" (OFD, ``--distill ofd``), as in mdistiller.

Both networks' pre-ReLU stage maps (``feat[1:-1]`` with ``preact=True``) are compared after a connector (1x1 conv +
BN) maps the student's to the teacher's width: a partial L2 against the teacher's map clipped below at a per-channel
margin, the expected value of the teacher's negative responses under a Gaussian model whose mean and standard
deviation are the BN's bias and |weight| (the BN before that stage's ReLU: ``get_bn_before_relu()``). The margins
are computed once, when the method is built, from the teacher's weights (not its running statistics).

Stage pairing: the deepest ``min`` of the two networks' stage maps and the teacher's BN count (three for
ImageNet ResNets, whose BNs are layer2..4's as in mdistiller), and the teacher's BNs by the same "last k"
rule (mdistiller pairs them from the shallow end for CIFAR ResNet50 teachers and fails: spec FIX 4). The teacher's
map is average-pooled to the student's size. Stage i of N (0 the shallowest kept) weighs 1 / 2^(N-1-i).

Teacher mode: OFD keeps the teacher's BatchNorm in train mode while distilling (batch statistics, running
statistics updated; the authors found it better), so this method's default is ``--teacher_bn train_always``
(the teacher's state then goes into the student's checkpoints, so a resumed run continues it exactly).

Teachers: every family that names the BN before each stage ReLU, ShuffleNets included (mdistiller raised for
them, its issue #34): ShuffleNetV2's stage map is the kept half of the channels (outputs of earlier ReLUs, never
negative, so their margin 0 gives the same loss as any negative margin) followed by the BN's half
(``bn_channel_offsets``). MobileNetV2's block outputs are already pre-activation (mdistiller lacked the key:
spec FIX 2). The rep* models serve where their stages end in a plain conv+BN (repmobilenetv2; represnet and
repvgg trained with ``--blocktype base``); an AMBB block sums several BNs and a fused block has none, so such a
teacher is refused.
"""
from __future__ import annotations

import math
from typing import List, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .base import PRE, Batch, Distiller, Outputs, register

# mdistiller's CIFAR connector kernel (OFD.CONNECTOR.KERNEL_SIZE)
CONNECTOR_KERNEL = 1
# below this probability of a negative response the margin is -3 standard deviations (mdistiller's rule)
MIN_NEGATIVE_PROBABILITY = 0.001


def ofd_margin(weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Per-channel margins E[x | x < 0] for x ~ N(bias, weight^2), or -3|weight| where P(x < 0) <= 0.001.

    Computed in float64 (the reference uses scipy on Python floats), returned as float32. A channel with weight 0
    is the constant ``bias``: its margin is ``min(bias, 0)``.
    """
    s = weight.detach().double().abs()
    m = bias.detach().double()
    safe_s = torch.where(s > 0, s, torch.ones_like(s))
    u = m / safe_s
    negative = 0.5 * torch.special.erfc(u / math.sqrt(2.0))  # Phi(-m/s)
    density = torch.exp(-0.5 * u * u) / math.sqrt(2.0 * math.pi)  # phi(m/s)
    expected = m - s * density / torch.where(negative > 0, negative, torch.ones_like(negative))
    margin = torch.where(negative > MIN_NEGATIVE_PROBABILITY, expected, -3.0 * s)
    margin = torch.where(s > 0, margin, torch.clamp(m, max=0.0))
    return margin.float()


def ofd_elementwise(source: torch.Tensor, target: torch.Tensor, margin: torch.Tensor) -> torch.Tensor:
    """The partial L2 of each element: d(max(target, margin), source), where d(T, S) is 0 if S <= T <= 0 and
    (T - S)^2 otherwise."""
    to_margin = (source > margin) & (target <= margin)
    to_target = ((source > target) & (target > margin) & (target <= 0)) | (target > 0)
    return ((source - margin).pow(2) * to_margin.to(source.dtype)
            + (source - target).pow(2) * to_target.to(source.dtype))


def ofd_stage_loss(source: torch.Tensor, target: torch.Tensor, margin: torch.Tensor) -> torch.Tensor:
    """One stage: the element losses summed over channels and positions, averaged over the batch."""
    return ofd_elementwise(source, target, margin).sum() / source.shape[0]


def connector(s_channels: int, t_channels: int, kernel: int = CONNECTOR_KERNEL) -> nn.Sequential:
    """Conv (no bias) + BN from the student's to the teacher's width, with the reference's initialisation."""
    conv = nn.Conv2d(s_channels, t_channels, kernel, stride=1, padding=(kernel - 1) // 2, bias=False)
    conv.weight.data.normal_(0, math.sqrt(2.0 / (kernel * kernel * t_channels)))
    bn = nn.BatchNorm2d(t_channels)
    bn.weight.data.fill_(1)
    bn.bias.data.zero_()
    return nn.Sequential(conv, bn)


def stage_bns(teacher: nn.Module):
    """The teacher's BNs before its stage ReLUs and each one's channel offset in its stage map."""
    try:
        return teacher.get_bn_before_relu(), teacher.bn_channel_offsets()
    except (NotImplementedError, AttributeError):
        raise ValueError(f"--distill ofd takes its margins from the BatchNorm before each of the teacher's stage "
                         f"ReLUs, and the teacher ({type(teacher).__name__}) does not name them") from None


def stage_margins(teacher_name: str, bns: Sequence[nn.Module], offsets: Sequence[int],
                  maps: Sequence[torch.Tensor]) -> List[torch.Tensor]:
    """Margins (1, C, 1, 1) for the teacher's stage maps ``maps``, one from each of ``bns`` (the BN before that
    stage's ReLU, whose channels start at ``offsets``)."""
    margins = []
    for bn, offset, fmap in zip(bns, offsets, maps):
        if not isinstance(bn, nn.BatchNorm2d):
            raise ValueError(f"--distill ofd takes its margins from the BatchNorm before each of the teacher's stage "
                             f"ReLUs; the teacher ({teacher_name}) ends its stages in {type(bn).__name__} "
                             f"blocks (re-parameterisable: several BNs summed, or fused into the conv); train it with "
                             f"--blocktype base, or use a teacher of another family")
        channels = int(fmap.shape[1])
        if offset + bn.num_features > channels:
            raise ValueError(f"--distill ofd: the teacher's BN of {bn.num_features} channels at offset {offset} does "
                             f"not fit its {channels}-channel stage map")
        # channels no BN produces come from an earlier ReLU (never negative): margin 0
        margin = torch.zeros(channels)
        margin[offset:offset + bn.num_features] = ofd_margin(bn.weight, bn.bias).cpu()
        margins.append(margin.reshape(1, channels, 1, 1))
    return margins


@register("ofd")
class OFD(Distiller):
    """OFD on the pre-activation stage maps. Defaults ``-r 1 -a 0 -b 1e-3`` (mdistiller's CIFAR FEAT_WEIGHT; its
    only CIFAR config is resnet32x4 -> resnet8x4) and ``--teacher_bn train_always``.

    Trainable: the connectors (``connectors``). The margins are buffers (constant, saved with the method).
    """

    student_features = teacher_features = PRE
    defaults = {"gamma": 1.0, "alpha": 0.0, "beta": 1e-3, "teacher_bn": "train_always"}

    def __init__(self, ctx):
        super().__init__(ctx)
        s_maps, t_maps = list(ctx.feat_s[1:-1]), list(ctx.feat_t[1:-1])
        for who, maps in (("student", s_maps), ("teacher", t_maps)):
            if not maps or any(f.dim() != 4 for f in maps):
                raise ValueError(f"--distill ofd compares stage feature maps, and the {who}'s features "
                                 f"{[tuple(f.shape[1:]) for f in maps]} are not maps")
        # the teacher's BNs limit the stages too: mdistiller's ImageNet ResNets name those of layer2..4 only, so
        # OFD distills their three deepest stages
        bns, offsets = stage_bns(ctx.teacher)
        if not bns:
            raise ValueError(f"--distill ofd: the teacher ({type(ctx.teacher).__name__}) names no BN before its "
                             "stage ReLUs")
        n = min(len(s_maps), len(t_maps), len(bns))
        s_maps, t_maps = s_maps[-n:], t_maps[-n:]
        self.stages = n
        self.connectors = nn.ModuleList(connector(int(s.shape[1]), int(t.shape[1])) for s, t in zip(s_maps, t_maps))
        for i, margin in enumerate(stage_margins(type(ctx.teacher).__name__, bns[-n:], offsets[-n:], t_maps)):
            self.register_buffer(f"margin{i}", margin.to(ctx.device))
        self.stage_weights = [1.0 / 2 ** (n - 1 - i) for i in range(n)]

    @property
    def margins(self) -> List[torch.Tensor]:
        return [getattr(self, f"margin{i}") for i in range(self.stages)]

    def method_loss(self, out_s: Outputs, out_t: Outputs, batch: Batch, epoch: int) -> torch.Tensor:
        s_maps, t_maps = out_s.feats[1:-1][-self.stages:], out_t.feats[1:-1][-self.stages:]
        total = None
        for w, conn, margin, s, t in zip(self.stage_weights, self.connectors, self.margins, s_maps, t_maps):
            source = conn(s)
            target = F.adaptive_avg_pool2d(t.detach(), source.shape[-2:])
            term = w * ofd_stage_loss(source, target, margin.to(source.dtype))
            total = term if total is None else total + term
        return total

    def trainable_modules(self):
        return [self.connectors]
