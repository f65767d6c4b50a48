"""ShuffleNet v1 (Zhang et al. 2018), g=3, for 32x32 inputs (1x1 stem, no stem downsampling).

Names, construction order and PyTorch-default initialisation follow RepDistiller's
``ShuffleNetv1.py`` so its checkpoints load with ``strict=True``.
"""
from __future__ import annotations

from typing import List

import torch
import torch.nn as nn
import torch.nn.functional as F

from .features import FeatureMaps, ZooModel, classify, run_stages
from .registry import register_model

__all__ = ["ShuffleNet", "Bottleneck", "ShuffleBlock", "ShuffleV1"]

STEM_WIDTH = 24


class ShuffleBlock(nn.Module):
    """Channel shuffle: interleave the channels of ``groups`` groups so the next grouped conv
    sees every group."""

    def __init__(self, groups: int):
        super().__init__()
        self.groups = groups

    def forward(self, x):
        n, c, h, w = x.shape
        g = self.groups
        return x.view(n, g, c // g, h, w).transpose(1, 2).reshape(n, c, h, w)


class Bottleneck(nn.Module):
    """Grouped 1x1 -> shuffle -> depthwise 3x3 -> grouped 1x1. Stride-2 units concatenate an
    average-pooled shortcut instead of adding it, so their branch produces
    ``out_planes`` = stage width minus input width."""

    def __init__(self, in_planes: int, out_planes: int, stride: int, groups: int,
                 is_last: bool = False):
        super().__init__()
        self.is_last = is_last
        self.stride = stride
        mid_planes = int(out_planes / 4)
        # The unit right after the stem sees only 24 channels: its first 1x1 is dense.
        g = 1 if in_planes == STEM_WIDTH else groups
        self.conv1 = nn.Conv2d(in_planes, mid_planes, 1, groups=g, bias=False)
        self.bn1 = nn.BatchNorm2d(mid_planes)
        self.shuffle1 = ShuffleBlock(groups=g)
        self.conv2 = nn.Conv2d(mid_planes, mid_planes, 3, stride=stride, padding=1,
                               groups=mid_planes, bias=False)
        self.bn2 = nn.BatchNorm2d(mid_planes)
        self.conv3 = nn.Conv2d(mid_planes, out_planes, 1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.shortcut = (nn.Sequential(nn.AvgPool2d(3, stride=2, padding=1)) if stride == 2
                         else nn.Sequential())

    def forward(self, x):
        h = F.relu(self.bn1(self.conv1(x)))
        h = self.shuffle1(h)
        h = F.relu(self.bn2(self.conv2(h)))
        h = self.bn3(self.conv3(h))
        skip = self.shortcut(x)
        pre = torch.cat([h, skip], 1) if self.stride == 2 else h + skip
        out = F.relu(pre)
        return (out, pre) if self.is_last else out


class ShuffleNet(ZooModel, nn.Module):
    def __init__(self, cfg: dict, num_classes: int = 10):
        super().__init__()
        out_planes = cfg["out_planes"]
        num_blocks = cfg["num_blocks"]
        groups = cfg["groups"]
        self.conv1 = nn.Conv2d(3, STEM_WIDTH, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(STEM_WIDTH)
        self.in_planes = STEM_WIDTH
        self.layer1 = self._make_layer(out_planes[0], num_blocks[0], groups)
        self.layer2 = self._make_layer(out_planes[1], num_blocks[1], groups)
        self.layer3 = self._make_layer(out_planes[2], num_blocks[2], groups)
        self.linear = nn.Linear(out_planes[2], num_classes)
        self.stage_widths = tuple(out_planes[:3])

    def _make_layer(self, out_planes: int, num_blocks: int, groups: int) -> nn.Sequential:
        layers = []
        for i in range(num_blocks):
            first = i == 0
            branch = out_planes - self.in_planes if first else out_planes
            layers.append(Bottleneck(self.in_planes, branch, stride=2 if first else 1,
                                     groups=groups, is_last=(i == num_blocks - 1)))
            self.in_planes = out_planes
        return nn.Sequential(*layers)

    def get_feat_modules(self) -> nn.ModuleList:
        return nn.ModuleList([self.conv1, self.bn1, self.layer1, self.layer2, self.layer3])

    classifier_attr = "linear"

    def get_bn_before_relu(self) -> List[nn.BatchNorm2d]:
        # A stage's last unit has stride 1: its pre-activation map is bn3's output plus the identity shortcut,
        # the same form as a ResNet block's (whose BN the Overhaul paper's margins model).
        return [stage[-1].bn3 for stage in (self.layer1, self.layer2, self.layer3)]

    def features(self, x: torch.Tensor) -> FeatureMaps:
        x, post, pre = run_stages(F.relu(self.bn1(self.conv1(x))), (self.layer1, self.layer2, self.layer3))
        # RepDistiller's fixed 4x4 window is the whole map for 32x32 inputs; sizing it from the
        # map gives identical results there and works for other sizes.
        return classify(torch.flatten(F.avg_pool2d(x, x.shape[2:]), 1), post, pre, self.linear)


@register_model("ShuffleV1")
def ShuffleV1(num_classes: int = 100, **kwargs) -> ShuffleNet:
    cfg = {"out_planes": [240, 480, 960], "num_blocks": [4, 8, 4], "groups": 3}
    return ShuffleNet(cfg, num_classes=num_classes, **kwargs)
