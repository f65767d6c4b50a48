"""MobileNetV2 for 32x32 inputs as used in RepDistiller (from the RCO paper's code).

Differences from torchvision's MobileNetV2 that checkpoints depend on: the t=1 block keeps its
(16->16) expansion conv, the stages live in ``blocks`` (one Sequential per row of the setting
table), and every conv/BN/ReLU sits at a fixed Sequential index (``conv.0`` .. ``conv.7``).
``MobileNetV2`` in the model registry is ``mobile_half`` (T=6, width 0.5).
"""
from __future__ import annotations

from typing import List

import torch
import torch.nn as nn
import torch.nn.functional as F

from .features import FeatureMaps, ZooModel
from .init import init_fan_out_normal
from .registry import register_model

__all__ = ["MobileNetV2", "InvertedResidual", "mobilenetv2_T_w", "mobile_half"]


def _conv_bn_relu(cin: int, cout: int, kernel: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class InvertedResidual(nn.Module):
    """Expand (1x1) -> depthwise 3x3 -> linear projection (1x1, BN, no ReLU)."""

    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        self.stride = stride
        self.use_res_connect = stride == 1 and inp == oup
        hidden = inp * expand_ratio
        self.conv = nn.Sequential(
            nn.Conv2d(inp, hidden, 1, 1, 0, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, oup, 1, 1, 0, bias=False),
            nn.BatchNorm2d(oup),
        )

    def forward(self, x):
        y = self.conv(x)
        return x + y if self.use_res_connect else y


class MobileNetV2(ZooModel, nn.Module):
    # (expansion, channels, repeats, first stride); ``None`` expansion means "use T".
    SETTING = [
        (1, 16, 1, 1),
        (None, 24, 2, 1),
        (None, 32, 3, 2),
        (None, 64, 4, 2),
        (None, 96, 3, 1),
        (None, 160, 3, 2),
        (None, 320, 1, 1),
    ]
    # Indices into ``blocks`` whose outputs are the stage features f1..f4.
    FEAT_BLOCKS = (1, 2, 4, 6)

    def __init__(self, T: int, num_classes: int = 100, width_mult: float = 1.0,
                 remove_avg: bool = False):
        super().__init__()
        self.remove_avg = remove_avg
        cin = int(32 * width_mult)
        self.conv1 = _conv_bn_relu(3, cin, 3, 2)

        self.blocks = nn.ModuleList()
        for t, c, n, s in self.SETTING:
            cout = int(c * width_mult)
            stage = []
            for i in range(n):
                stage.append(InvertedResidual(cin, cout, s if i == 0 else 1, T if t is None else t))
                cin = cout
            self.blocks.append(nn.Sequential(*stage))

        # The head is only widened, never narrowed (the "half" model keeps 1280).
        self.last_channel = int(1280 * width_mult) if width_mult > 1.0 else 1280
        self.conv2 = _conv_bn_relu(cin, self.last_channel, 1, 1)
        self.classifier = nn.Sequential(nn.Linear(self.last_channel, num_classes))
        self.stage_widths = tuple(int(self.SETTING[i][1] * width_mult) for i in self.FEAT_BLOCKS)
        self._initialize_weights()

    def get_bn_before_relu(self) -> List[nn.BatchNorm2d]:
        return [self.blocks[i][-1].conv[-1] for i in self.FEAT_BLOCKS]

    def get_feat_modules(self) -> nn.ModuleList:
        return nn.ModuleList([self.conv1, self.blocks])

    def pooled_map_module(self) -> nn.Module:
        # feat[-2] is the last block's 160-channel output; the 1x1 conv head (1280, with BN-ReLU) is pooled
        return self.conv2


    classifier_attr = "classifier"

    def pooled_map(self, last_stage_map: torch.Tensor) -> torch.Tensor:
        # feat[-2] is the last block's output; the 1x1 head conv (1280 channels) follows it
        return self.conv2(last_stage_map)

    def features(self, x: torch.Tensor) -> FeatureMaps:
        # Every block already ends on a BN without ReLU, so there is no separate
        # pre-activation version: both lists hold the same tensors, as in RepDistiller.
        x = self.conv1(x)
        feats = [x]
        for i, stage in enumerate(self.blocks):
            x = stage(x)
            if i in self.FEAT_BLOCKS:
                feats.append(x)
        x = self.conv2(x)
        if not self.remove_avg:
            # RepDistiller fixes the window from the expected input size (2x2 for 32x32), i.e.
            # it is the whole map; taking it from the map itself is the same op there.
            x = F.avg_pool2d(x, x.shape[2:])
        x = torch.flatten(x, 1)
        feats.append(x)
        return FeatureMaps(self.classifier(x), feats, list(feats))

    def _initialize_weights(self):
        init_fan_out_normal(self)


def mobilenetv2_T_w(T: int, W: float, num_classes: int = 100, **kwargs) -> MobileNetV2:
    return MobileNetV2(T=T, num_classes=num_classes, width_mult=W, **kwargs)


@register_model("MobileNetV2")
def mobile_half(num_classes: int = 100, **kwargs) -> MobileNetV2:
    return mobilenetv2_T_w(6, 0.5, num_classes, **kwargs)
