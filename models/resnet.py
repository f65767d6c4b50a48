"""CIFAR ResNets (He et al. 2016): three stages at 32/16/8 pixels, widths given per model.

The attribute names, construction order and initialisation follow RepDistiller's ``resnet.py``
so that its checkpoints load with ``strict=True`` and an optimizer state saved next to them
lines up with ``parameters()`` (which walks the modules in registration order).
"""
from __future__ import annotations

from typing import List, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .features import FeatureMaps, ZooModel, classify, run_stages
from .init import init_kaiming_fan_out
from .registry import register_model

__all__ = ["ResNet", "BasicBlock", "Bottleneck", "resnet8", "resnet14", "resnet20", "resnet32",
           "resnet44", "resnet56", "resnet110", "resnet8x4", "resnet32x4"]


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convs plus shortcut. The last block of a stage also hands back its sum before
    the final ReLU, which is what ``preact=True`` features are made of."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None, is_last: bool = False):
        super().__init__()
        self.is_last = is_last
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x):
        skip = x if self.downsample is None else self.downsample(x)
        h = self.relu(self.bn1(self.conv1(x)))
        pre = self.bn2(self.conv2(h)) + skip
        out = F.relu(pre)  # not in place: ``pre`` must survive for the preact features
        return (out, pre) if self.is_last else out


class Bottleneck(nn.Module):
    """1x1 -> 3x3 -> 1x1 (x4) variant; none of the registered CIFAR models use it, but
    ``ResNet(..., 'bottleneck')`` stays constructible as in RepDistiller."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None, is_last: bool = False):
        super().__init__()
        self.is_last = is_last
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x):
        skip = x if self.downsample is None else self.downsample(x)
        h = self.relu(self.bn1(self.conv1(x)))
        h = self.relu(self.bn2(self.conv2(h)))
        pre = self.bn3(self.conv3(h)) + skip
        out = F.relu(pre)
        return (out, pre) if self.is_last else out


class ResNet(ZooModel, nn.Module):
    """``depth`` = 6n+2 (basic) or 9n+2 (bottleneck); ``num_filters`` = [stem, stage1..3]."""

    def __init__(self, depth: int, num_filters: Sequence[int], block_name: str = "basicblock",
                 num_classes: int = 10, stage_blocks: Sequence[int] | None = None):
        super().__init__()
        kind = block_name.lower()
        if kind == "basicblock":
            if (depth - 2) % 6:
                raise ValueError(f"basic-block ResNet depth must be 6n+2, got {depth}")
            n, block = (depth - 2) // 6, BasicBlock
        elif kind == "bottleneck":
            if (depth - 2) % 9:
                raise ValueError(f"bottleneck ResNet depth must be 9n+2, got {depth}")
            n, block = (depth - 2) // 9, Bottleneck
        else:
            raise ValueError(f"block_name must be 'basicblock' or 'bottleneck', got {block_name!r}")

        self.inplanes = num_filters[0]
        self.conv1 = nn.Conv2d(3, num_filters[0], kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(num_filters[0])
        self.relu = nn.ReLU(inplace=True)
        # EMKD's students (models/myresnet.py) give a block count per stage instead of n everywhere
        blocks = list(stage_blocks) if stage_blocks is not None else [n, n, n]
        self.layer1 = self._make_layer(block, num_filters[1], blocks[0])
        self.layer2 = self._make_layer(block, num_filters[2], blocks[1], stride=2)
        self.layer3 = self._make_layer(block, num_filters[3], blocks[2], stride=2)
        self.fc = nn.Linear(num_filters[3] * block.expansion, num_classes)
        self.stage_widths = tuple(int(w) * block.expansion for w in num_filters[1:4])

        init_kaiming_fan_out(self)

    def _make_layer(self, block, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, kernel_size=1, stride=stride,
                          bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample, is_last=(blocks == 1))]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, is_last=(i == blocks - 1)) for i in range(1, blocks)]
        return nn.Sequential(*layers)

    def get_feat_modules(self) -> nn.ModuleList:
        return nn.ModuleList([self.conv1, self.bn1, self.relu, self.layer1, self.layer2, self.layer3])

    def get_bn_before_relu(self) -> List[nn.BatchNorm2d]:
        first = self.layer1[0]
        if isinstance(first, Bottleneck):
            return [stage[-1].bn3 for stage in (self.layer1, self.layer2, self.layer3)]
        if isinstance(first, BasicBlock):
            return [stage[-1].bn2 for stage in (self.layer1, self.layer2, self.layer3)]
        raise NotImplementedError(f"unknown ResNet block {type(first).__name__}")

    def features(self, x: torch.Tensor) -> FeatureMaps:
        x, post, pre = run_stages(self.relu(self.bn1(self.conv1(x))), (self.layer1, self.layer2, self.layer3))
        # RepDistiller pools with a fixed 8x8 window. A window the size of the map is the same
        # op (bit for bit) on 32x32 inputs and keeps other input sizes usable.
        return classify(torch.flatten(F.avg_pool2d(x, x.shape[2:]), 1), post, pre, self.fc)


def _cifar_resnet(depth: int, filters: Sequence[int], num_classes: int, **kwargs) -> ResNet:
    return ResNet(depth, filters, "basicblock", num_classes=num_classes, **kwargs)


_NARROW = (16, 16, 32, 64)
_WIDE = (32, 64, 128, 256)  # the "x4" teachers


@register_model("resnet8")
def resnet8(num_classes: int = 100, **kwargs) -> ResNet:
    return _cifar_resnet(8, _NARROW, num_classes, **kwargs)


@register_model("resnet14")
def resnet14(num_classes: int = 100, **kwargs) -> ResNet:
    return _cifar_resnet(14, _NARROW, num_classes, **kwargs)


@register_model("resnet20")
def resnet20(num_classes: int = 100, **kwargs) -> ResNet:
    return _cifar_resnet(20, _NARROW, num_classes, **kwargs)


@register_model("resnet32")
def resnet32(num_classes: int = 100, **kwargs) -> ResNet:
    return _cifar_resnet(32, _NARROW, num_classes, **kwargs)


@register_model("resnet44")
def resnet44(num_classes: int = 100, **kwargs) -> ResNet:
    return _cifar_resnet(44, _NARROW, num_classes, **kwargs)


@register_model("resnet56")
def resnet56(num_classes: int = 100, **kwargs) -> ResNet:
    return _cifar_resnet(56, _NARROW, num_classes, **kwargs)


@register_model("resnet110")
def resnet110(num_classes: int = 100, **kwargs) -> ResNet:
    return _cifar_resnet(110, _NARROW, num_classes, **kwargs)


@register_model("resnet8x4")
def resnet8x4(num_classes: int = 100, **kwargs) -> ResNet:
    return _cifar_resnet(8, _WIDE, num_classes, **kwargs)


@register_model("resnet32x4")
def resnet32x4(num_classes: int = 100, **kwargs) -> ResNet:
    return _cifar_resnet(32, _WIDE, num_classes, **kwargs)
