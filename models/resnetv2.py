"""ImageNet-shaped ResNets (four stages, 64..512 base widths) with a CIFAR stem.

The stem is a stride-1 3x3 conv without max-pool, so a 32x32 input keeps full resolution in
stage 1. Names and construction order follow RepDistiller's ``resnetv2.py`` (shortcut branches
are called ``shortcut``, the classifier ``linear``) for checkpoint compatibility.
"""
from __future__ import annotations

from typing import List, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .features import FeatureMaps, ZooModel, classify, run_stages
from .init import init_kaiming_fan_out
from .registry import register_model

__all__ = ["ResNet", "BasicBlock", "Bottleneck", "ResNet18", "ResNet34", "ResNet50"]


def _projection(cin: int, cout: int, stride: int) -> nn.Sequential:
    """1x1 conv + BN when the shape changes; an empty Sequential (identity) otherwise, which
    keeps the attribute present without adding state_dict entries."""
    if stride == 1 and cin == cout:
        return nn.Sequential()
    return nn.Sequential(nn.Conv2d(cin, cout, kernel_size=1, stride=stride, bias=False),
                         nn.BatchNorm2d(cout))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1, is_last: bool = False):
        super().__init__()
        self.is_last = is_last
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = _projection(in_planes, planes * self.expansion, stride)

    def forward(self, x):
        h = F.relu(self.bn1(self.conv1(x)))
        pre = self.bn2(self.conv2(h)) + self.shortcut(x)
        out = F.relu(pre)
        return (out, pre) if self.is_last else out


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1, is_last: bool = False):
        super().__init__()
        self.is_last = is_last
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.shortcut = _projection(in_planes, planes * self.expansion, stride)

    def forward(self, x):
        h = F.relu(self.bn1(self.conv1(x)))
        h = F.relu(self.bn2(self.conv2(h)))
        pre = self.bn3(self.conv3(h)) + self.shortcut(x)
        out = F.relu(pre)
        return (out, pre) if self.is_last else out


class ResNet(ZooModel, nn.Module):
    # four stage maps (64..512 base widths), all compared by milestone checking
    num_stages = 4

    def __init__(self, block, num_blocks: Sequence[int], num_classes: int = 10,
                 zero_init_residual: bool = False):
        super().__init__()
        self.in_planes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.layer1 = self._make_layer(block, 64, num_blocks[0], stride=1)
        self.layer2 = self._make_layer(block, 128, num_blocks[1], stride=2)
        self.layer3 = self._make_layer(block, 256, num_blocks[2], stride=2)
        self.layer4 = self._make_layer(block, 512, num_blocks[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.linear = nn.Linear(512 * block.expansion, num_classes)
        self.stage_widths = tuple(w * block.expansion for w in (64, 128, 256, 512))

        init_kaiming_fan_out(self)
        if zero_init_residual:
            # Residual branches start at zero so every block is initially the identity
            # (Goyal et al. 2017); off by default as in RepDistiller.
            for m in self.modules():
                if isinstance(m, Bottleneck):
                    nn.init.constant_(m.bn3.weight, 0)
                elif isinstance(m, BasicBlock):
                    nn.init.constant_(m.bn2.weight, 0)

    def _make_layer(self, block, planes: int, num_blocks: int, stride: int) -> nn.Sequential:
        layers = []
        for i in range(num_blocks):
            layers.append(block(self.in_planes, planes, stride if i == 0 else 1,
                                i == num_blocks - 1))
            self.in_planes = planes * block.expansion
        return nn.Sequential(*layers)

    classifier_attr = "linear"

    def _stages(self):
        return (self.layer1, self.layer2, self.layer3, self.layer4)

    def get_feat_modules(self) -> nn.ModuleList:
        return nn.ModuleList([self.conv1, self.bn1, *self._stages()])

    def get_bn_before_relu(self) -> List[nn.BatchNorm2d]:
        first = self.layer1[0]
        if isinstance(first, Bottleneck):
            return [stage[-1].bn3 for stage in self._stages()]
        if isinstance(first, BasicBlock):
            return [stage[-1].bn2 for stage in self._stages()]
        raise NotImplementedError(f"unknown ResNet block {type(first).__name__}")

    def features(self, x: torch.Tensor) -> FeatureMaps:
        x, post, pre = run_stages(F.relu(self.bn1(self.conv1(x))), self._stages())
        return classify(torch.flatten(self.avgpool(x), 1), post, pre, self.linear)


def ResNet18(num_classes: int = 100, **kwargs) -> ResNet:
    return ResNet(BasicBlock, [2, 2, 2, 2], num_classes=num_classes, **kwargs)


def ResNet34(num_classes: int = 100, **kwargs) -> ResNet:
    return ResNet(BasicBlock, [3, 4, 6, 3], num_classes=num_classes, **kwargs)


@register_model("ResNet50")
def ResNet50(num_classes: int = 100, **kwargs) -> ResNet:
    return ResNet(Bottleneck, [3, 4, 6, 3], num_classes=num_classes, **kwargs)
