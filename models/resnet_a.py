"""CheckpointKD's CIFAR ResNets (He et al. 2016, "option A"), as ``resnet14_a`` ... ``resnet1202_a``.

CheckpointKD (LeapLabTHU/CheckpointKD, ``models/resnet.py``) trains its ``resnet32``/``resnet110`` from Yerlan
Idelbayev's CIFAR ResNets, which are not RepDistiller's ``resnet32``/``resnet110``:

* the shortcut of a block that halves the resolution and doubles the width has no parameters ("option A" of
  the ResNet paper): the input subsampled with stride 2, ``x[:, :, ::2, ::2]``, and zero channels added on
  both sides (``planes // 4`` each); RepDistiller uses a 1x1 conv + BN there;
* conv and linear weights are Kaiming-normal with fan_in (``kaiming_normal_``'s defaults); RepDistiller's
  ResNets use fan_out for the convs and keep PyTorch's default linear init. BN keeps PyTorch's 1/0, the linear
  bias its default;
* the classifier is called ``linear`` (RepDistiller: ``fc``).

Depths 6n+2 with n blocks per stage, stages of 16/32/64 channels at 32/16/8 pixels, a global average pool and
``Linear(64, num_classes)``. Module names and construction order are the reference's, so its state dicts
(without DataParallel's ``module.`` prefix) load with ``strict=True`` and a seeded build draws the same
initial weights.

The reference's forward returns ``(logits, feature)`` with ``feature`` the pooled 64-d vector. Here the models
follow the zoo's contract instead (``models/features.py``): ``model(x)`` returns the logits and
``model(x, is_feat=True)`` returns ``(feats, logits)`` with ``feats = [stem, stage1, stage2, stage3, pooled]``,
so the reference's ``feature`` is ``feats[-1]``; ``preact=True`` gives the stage maps before the last block's
ReLU, and ``get_bn_before_relu()`` the last block's ``bn2`` of each stage, so every ``--distill`` method runs
on them.
"""
from __future__ import annotations

from typing import List

import torch
import torch.nn as nn
import torch.nn.functional as F

from .features import FeatureMaps, ZooModel, classify, run_stages
from .registry import models_defined_in, register_model

__all__ = ["ResNetA", "BasicBlockA", "ShortcutA", "resnet14_a", "resnet20_a", "resnet32_a", "resnet44_a",
           "resnet56_a", "resnet110_a", "resnet1202_a", "RESNET_A_MODELS"]


class ShortcutA(nn.Module):
    """The parameter-free shortcut: every second row and column, ``pad`` zero channels before and after."""

    def __init__(self, pad: int):
        super().__init__()
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad), "constant", 0.0)

    def extra_repr(self) -> str:
        return f"pad={self.pad}"


class BasicBlockA(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus the shortcut, then ReLU; the last block of a stage also hands back the
    sum before that ReLU (the ``preact`` feature)."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1, is_last: bool = False):
        super().__init__()
        self.is_last = is_last
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            # the reference subsamples and pads whenever the shape changes; in this family that is always
            # stride 2 with the width doubled, which is the only case where its padding fits
            if stride != 2 or in_planes + 2 * (planes // 4) != planes:
                raise ValueError(f"option-A shortcut needs stride 2 and planes = 2 x in_planes, got stride {stride}, "
                                 f"{in_planes} -> {planes}")
            self.shortcut = ShortcutA(planes // 4)

    def forward(self, x):
        h = F.relu(self.bn1(self.conv1(x)))
        pre = self.bn2(self.conv2(h)) + self.shortcut(x)
        out = F.relu(pre)  # not in place: ``pre`` must survive for the preact features
        return (out, pre) if self.is_last else out


class ResNetA(ZooModel, nn.Module):
    """CIFAR ResNet with option-A shortcuts; ``num_blocks`` per stage (n, n, n for depth 6n+2)."""

    stage_widths = (16, 32, 64)
    classifier_attr = "linear"  # the reference's name

    def __init__(self, num_blocks: List[int], num_classes: int = 100):
        super().__init__()
        self.in_planes = 16
        self.conv1 = nn.Conv2d(3, 16, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = self._make_layer(16, num_blocks[0], stride=1)
        self.layer2 = self._make_layer(32, num_blocks[1], stride=2)
        self.layer3 = self._make_layer(64, num_blocks[2], stride=2)
        self.linear = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                # kaiming_normal_'s defaults: fan_in, gain sqrt(2) (the reference's _weights_init)
                nn.init.kaiming_normal_(m.weight)

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        layers = []
        for i in range(blocks):
            layers.append(BasicBlockA(self.in_planes, planes, stride if i == 0 else 1, is_last=(i == blocks - 1)))
            self.in_planes = planes
        return nn.Sequential(*layers)

    def get_feat_modules(self) -> nn.ModuleList:
        return nn.ModuleList([self.conv1, self.bn1, self.layer1, self.layer2, self.layer3])

    def get_bn_before_relu(self) -> List[nn.BatchNorm2d]:
        return [stage[-1].bn2 for stage in (self.layer1, self.layer2, self.layer3)]

    def features(self, x: torch.Tensor) -> FeatureMaps:
        x, post, pre = run_stages(F.relu(self.bn1(self.conv1(x))), (self.layer1, self.layer2, self.layer3))
        # the reference pools with a window the size of the map (8x8 for 32x32 inputs)
        return classify(torch.flatten(F.avg_pool2d(x, x.shape[2:]), 1), post, pre, self.linear)


def _resnet_a(n: int, num_classes: int) -> ResNetA:
    return ResNetA([n, n, n], num_classes=num_classes)


@register_model("resnet14_a")
def resnet14_a(num_classes: int = 100) -> ResNetA:
    return _resnet_a(2, num_classes)


@register_model("resnet20_a")
def resnet20_a(num_classes: int = 100) -> ResNetA:
    return _resnet_a(3, num_classes)


@register_model("resnet32_a")
def resnet32_a(num_classes: int = 100) -> ResNetA:
    return _resnet_a(5, num_classes)


@register_model("resnet44_a")
def resnet44_a(num_classes: int = 100) -> ResNetA:
    return _resnet_a(7, num_classes)


@register_model("resnet56_a")
def resnet56_a(num_classes: int = 100) -> ResNetA:
    return _resnet_a(9, num_classes)


@register_model("resnet110_a")
def resnet110_a(num_classes: int = 100) -> ResNetA:
    return _resnet_a(18, num_classes)


@register_model("resnet1202_a")
def resnet1202_a(num_classes: int = 100) -> ResNetA:
    return _resnet_a(200, num_classes)


# A view of the registry (registration happens in the decorators above).
RESNET_A_MODELS = models_defined_in(__name__)
