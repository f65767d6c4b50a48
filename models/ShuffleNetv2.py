"""ShuffleNet v2 (Ma et al. 2018), 1x width, for 32x32 inputs (1x1 stem, no stem max-pool).

Names, construction order and PyTorch-default initialisation follow RepDistiller's
``ShuffleNetv2.py`` so its checkpoints load with ``strict=True``.
"""
from __future__ import annotations

from typing import List

import torch
import torch.nn as nn
import torch.nn.functional as F

from .features import FeatureMaps, ZooModel, classify, run_stages
from .registry import register_model

__all__ = ["ShuffleNetV2", "BasicBlock", "DownBlock", "ShuffleV2", "configs"]


class ShuffleBlock(nn.Module):
    """Channel shuffle across ``groups`` groups (mixes the two halves after a concat)."""

    def __init__(self, groups: int = 2):
        super().__init__()
        self.groups = groups

    def forward(self, x):
        n, c, h, w = x.shape
        g = self.groups
        if not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
            # Shuffle in the NHWC layout, so that the output stays channels-last (the NCHW reshape below
            # would copy it back to NCHW, and every following convolution would convert it again).
            nhwc = x.permute(0, 2, 3, 1)
            return nhwc.reshape(n, h, w, g, c // g).transpose(3, 4).reshape(n, h, w, c).permute(0, 3, 1, 2)
        return x.view(n, g, c // g, h, w).transpose(1, 2).reshape(n, c, h, w)


class SplitBlock(nn.Module):
    def __init__(self, ratio: float):
        super().__init__()
        self.ratio = ratio

    def forward(self, x):
        c = int(x.size(1) * self.ratio)
        return x[:, :c], x[:, c:]


class BasicBlock(nn.Module):
    """Stride-1 unit: the first half of the channels passes through, the second half goes
    through 1x1 -> depthwise 3x3 -> 1x1; concat, then shuffle.

    The pre-activation output (last unit of a stage) is the concat *before* the shuffle, so its
    channel order differs from the post-ReLU output. RepDistiller defines it this way."""

    def __init__(self, in_channels: int, split_ratio: float = 0.5, is_last: bool = False):
        super().__init__()
        self.is_last = is_last
        self.split = SplitBlock(split_ratio)
        c = int(in_channels * split_ratio)
        self.conv1 = nn.Conv2d(c, c, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, stride=1, padding=1, groups=c, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        self.conv3 = nn.Conv2d(c, c, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(c)
        self.shuffle = ShuffleBlock()

    def forward(self, x):
        keep, x2 = self.split(x)
        h = F.relu(self.bn1(self.conv1(x2)))
        h = self.bn2(self.conv2(h))
        h_pre = self.bn3(self.conv3(h))
        out = self.shuffle(torch.cat([keep, F.relu(h_pre)], 1))
        if self.is_last:
            return out, torch.cat([keep, h_pre], 1)
        return out


class DownBlock(nn.Module):
    """Stride-2 unit: both branches see the full input and each produces half the output."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        mid = out_channels // 2
        # left branch: depthwise 3x3 (s2) -> 1x1
        self.conv1 = nn.Conv2d(in_channels, in_channels, 3, stride=2, padding=1,
                               groups=in_channels, bias=False)
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv2 = nn.Conv2d(in_channels, mid, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        # right branch: 1x1 -> depthwise 3x3 (s2) -> 1x1
        self.conv3 = nn.Conv2d(in_channels, mid, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(mid)
        self.conv4 = nn.Conv2d(mid, mid, 3, stride=2, padding=1, groups=mid, bias=False)
        self.bn4 = nn.BatchNorm2d(mid)
        self.conv5 = nn.Conv2d(mid, mid, 1, bias=False)
        self.bn5 = nn.BatchNorm2d(mid)
        self.shuffle = ShuffleBlock()

    def forward(self, x):
        left = self.bn1(self.conv1(x))
        left = F.relu(self.bn2(self.conv2(left)))
        right = F.relu(self.bn3(self.conv3(x)))
        right = self.bn4(self.conv4(right))
        right = F.relu(self.bn5(self.conv5(right)))
        return self.shuffle(torch.cat([left, right], 1))


# stage widths (plus head width) and unit counts per width multiplier
configs = {
    0.5: {"out_channels": (48, 96, 192, 1024), "num_blocks": (3, 7, 3)},
    1: {"out_channels": (116, 232, 464, 1024), "num_blocks": (3, 7, 3)},
    1.5: {"out_channels": (176, 352, 704, 1024), "num_blocks": (3, 7, 3)},
    2: {"out_channels": (224, 488, 976, 2048), "num_blocks": (3, 7, 3)},
}


class ShuffleNetV2(ZooModel, nn.Module):
    def __init__(self, net_size: float, num_classes: int = 10):
        super().__init__()
        out_channels = configs[net_size]["out_channels"]
        num_blocks = configs[net_size]["num_blocks"]
        self.conv1 = nn.Conv2d(3, 24, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        self.in_channels = 24
        self.layer1 = self._make_layer(out_channels[0], num_blocks[0])
        self.layer2 = self._make_layer(out_channels[1], num_blocks[1])
        self.layer3 = self._make_layer(out_channels[2], num_blocks[2])
        self.conv2 = nn.Conv2d(out_channels[2], out_channels[3], 1, stride=1, padding=0, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels[3])
        # F.relu as a module, so that its output (the pooled map) can be asked for; it holds no state
        self.head_relu = nn.ReLU()
        self.linear = nn.Linear(out_channels[3], num_classes)
        self.stage_widths = tuple(out_channels[:3])

    def _make_layer(self, out_channels: int, num_blocks: int) -> nn.Sequential:
        # A stride-2 DownBlock precedes the ``num_blocks`` stride-1 units of each stage.
        layers = [DownBlock(self.in_channels, out_channels)]
        layers += [BasicBlock(out_channels, is_last=(i == num_blocks - 1)) for i in range(num_blocks)]
        self.in_channels = out_channels
        return nn.Sequential(*layers)

    def get_feat_modules(self) -> nn.ModuleList:
        return nn.ModuleList([self.conv1, self.bn1, self.layer1, self.layer2, self.layer3])

    classifier_attr = "linear"

    def _stages(self):
        return (self.layer1, self.layer2, self.layer3)

    def get_bn_before_relu(self) -> List[nn.BatchNorm2d]:
        # A stage's pre-activation map is concat(kept half, bn3 output of the branch) of its last unit: bn3
        # produces the second half; the kept half comes from earlier ReLUs (see bn_channel_offsets).
        return [stage[-1].bn3 for stage in self._stages()]

    def bn_channel_offsets(self) -> List[int]:
        return [int(width * stage[-1].split.ratio) for width, stage in zip(self.stage_widths, self._stages())]

    def pooled_map(self, last_stage_map: torch.Tensor) -> torch.Tensor:
        # the 1x1 head conv (1024 channels) between the last stage and the pooling
        return F.relu(self.bn2(self.conv2(last_stage_map)))

    def pooled_map_module(self) -> nn.Module:
        # feat[-2] is layer3's 464-channel output; the 1x1 conv head's 1024-channel map is pooled
        return self.head_relu

    def features(self, x: torch.Tensor) -> FeatureMaps:
        x, post, pre = run_stages(F.relu(self.bn1(self.conv1(x))), (self.layer1, self.layer2, self.layer3))
        x = self.head_relu(self.bn2(self.conv2(x)))
        # RepDistiller's fixed 4x4 window is the whole map for 32x32 inputs; sizing it from the
        # map gives identical results there and works for other sizes.
        return classify(torch.flatten(F.avg_pool2d(x, x.shape[2:]), 1), post, pre, self.linear)


@register_model("ShuffleV2")
def ShuffleV2(num_classes: int = 100, **kwargs) -> ShuffleNetV2:
    return ShuffleNetV2(net_size=1, num_classes=num_classes, **kwargs)
