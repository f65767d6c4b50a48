"""Wide ResNets (Zagoruyko & Komodakis 2016), pre-activation blocks, depth 6n+4.

Names and construction order follow RepDistiller's ``wrn.py`` (``block{1,2,3}.layer.{i}``,
``convShortcut`` on width changes, final ``bn1``/``fc``) for checkpoint compatibility.
"""
from __future__ import annotations

from typing import List

import torch
import torch.nn as nn
import torch.nn.functional as F

from .features import FeatureMaps, ZooModel
from .init import init_fan_out_normal
from .registry import register_model

__all__ = ["WideResNet", "BasicBlock", "NetworkBlock", "wrn_16_1", "wrn_16_2", "wrn_40_1",
           "wrn_40_2"]


class BasicBlock(nn.Module):
    """BN-ReLU-conv twice. When the width changes, the 1x1 projection shortcut reads the
    *activated* input rather than the raw one; that is the original WRN wiring and checkpoints
    trained with it depend on it."""

    def __init__(self, in_planes: int, out_planes: int, stride: int, dropRate: float = 0.0):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, stride=1, padding=1, bias=False)
        self.droprate = dropRate
        self.equalInOut = in_planes == out_planes
        self.convShortcut = None if self.equalInOut else nn.Conv2d(
            in_planes, out_planes, 1, stride=stride, padding=0, bias=False)

    def forward(self, x):
        a = self.relu1(self.bn1(x))
        h = self.relu2(self.bn2(self.conv1(a)))
        if self.droprate > 0:
            h = F.dropout(h, p=self.droprate, training=self.training)
        h = self.conv2(h)
        skip = x if self.equalInOut else self.convShortcut(a)
        return skip + h


class NetworkBlock(nn.Module):
    """One stage; the extra ``layer`` level exists only because checkpoint keys contain it."""

    def __init__(self, nb_layers: int, in_planes: int, out_planes: int, block, stride: int,
                 dropRate: float = 0.0):
        super().__init__()
        self.layer = nn.Sequential(*[
            block(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1, dropRate)
            for i in range(nb_layers)
        ])

    def forward(self, x):
        return self.layer(x)


def blocks_per_stage(depth: int) -> int:
    if (depth - 4) % 6:
        raise ValueError(f"WRN depth must be 6n+4, got {depth}")
    return (depth - 4) // 6


class WideResNet(ZooModel, nn.Module):
    def __init__(self, depth: int, num_classes: int, widen_factor: int = 1, dropRate: float = 0.0,
                 stage_blocks=None):
        super().__init__()
        n = blocks_per_stage(depth)
        # EMKD's students (models/mywrn.py) give a block count per stage instead of n everywhere
        blocks = list(stage_blocks) if stage_blocks is not None else [n, n, n]
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv1 = nn.Conv2d(3, widths[0], 3, stride=1, padding=1, bias=False)
        self.block1 = NetworkBlock(blocks[0], widths[0], widths[1], BasicBlock, 1, dropRate)
        self.block2 = NetworkBlock(blocks[1], widths[1], widths[2], BasicBlock, 2, dropRate)
        self.block3 = NetworkBlock(blocks[2], widths[2], widths[3], BasicBlock, 2, dropRate)
        # Blocks are pre-activation, so the trunk needs one more BN-ReLU before pooling.
        self.bn1 = nn.BatchNorm2d(widths[3])
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(widths[3], num_classes)
        self.nChannels = widths[3]
        self.stage_widths = tuple(widths[1:])

        init_fan_out_normal(self, linear_std=None)

    def get_feat_modules(self) -> nn.ModuleList:
        return nn.ModuleList([self.conv1, self.block1, self.block2, self.block3])

    def get_bn_before_relu(self) -> List[nn.BatchNorm2d]:
        # Stage outputs are first touched by the BN that opens the next stage (or the head BN).
        return [self.block2.layer[0].bn1, self.block3.layer[0].bn1, self.bn1]

    def pooled_map(self, last_stage_map: torch.Tensor) -> torch.Tensor:
        # the head's BN-ReLU (functional: ICKD's hook on self.relu sees only the forward's own call)
        return F.relu(self.bn1(last_stage_map))

    def penultimate_map_module(self) -> nn.Module:
        # feat[-2] is the raw block3 output; the map that is pooled is this ReLU's output, used nowhere else.
        return self.relu

    def pooled_map_module(self) -> nn.Module:
        return self.relu

    def _run(self, x: torch.Tensor, with_pre: bool):
        f0 = self.conv1(x)
        f1 = self.block1(f0)
        f2 = self.block2(f1)
        f3 = self.block3(f2)
        h = self.relu(self.bn1(f3))
        # RepDistiller's 8x8 window is the whole map for 32x32 inputs; sizing it from the map
        # gives identical results there and works for other sizes.
        v = torch.flatten(F.avg_pool2d(h, h.shape[2:]), 1)
        logits = self.fc(v)
        post = [f0, f1, f2, f3, v]
        if not with_pre:
            return logits, post, None
        # RepDistiller defines the pre-activation features as the stage outputs passed through those BNs
        # again. In train mode this is a second running-stat update on the same batch; kept so that
        # training with preact features matches it, and done only when they are asked for.
        pre = [f0, self.block2.layer[0].bn1(f1), self.block3.layer[0].bn1(f2), self.bn1(f3), v]
        return logits, post, pre

    def features(self, x: torch.Tensor) -> FeatureMaps:
        logits, post, pre = self._run(x, with_pre=True)
        return FeatureMaps(logits, post, pre)

    def forward(self, x: torch.Tensor, is_feat: bool = False, preact: bool = False):
        logits, post, pre = self._run(x, with_pre=is_feat and preact)
        if not is_feat:
            return logits
        return (pre if preact else post), logits


@register_model("wrn_16_1")
def wrn_16_1(num_classes: int = 100, **kwargs) -> WideResNet:
    return WideResNet(depth=16, num_classes=num_classes, widen_factor=1, **kwargs)


@register_model("wrn_16_2")
def wrn_16_2(num_classes: int = 100, **kwargs) -> WideResNet:
    return WideResNet(depth=16, num_classes=num_classes, widen_factor=2, **kwargs)


@register_model("wrn_40_1")
def wrn_40_1(num_classes: int = 100, **kwargs) -> WideResNet:
    return WideResNet(depth=40, num_classes=num_classes, widen_factor=1, **kwargs)


@register_model("wrn_40_2")
def wrn_40_2(num_classes: int = 100, **kwargs) -> WideResNet:
    return WideResNet(depth=40, num_classes=num_classes, widen_factor=2, **kwargs)
