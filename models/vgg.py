"""CIFAR VGGs with BatchNorm and a single linear classifier (no 4096-wide FC head).

Matches RepDistiller's ``vggN_bn``: five conv stages ``block0..block4``, each a Sequential of
conv(+bias)/BN/ReLU triples whose final ReLU is left out so the stage ends on a BN. That BN
output is the "pre-activation" feature and the module ``get_bn_before_relu`` returns.
"""
from __future__ import annotations

from typing import Dict, List, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .features import FeatureMaps, ZooModel, classify
from .init import init_fan_out_normal
from .registry import register_model

__all__ = ["VGG", "VGGTrunk", "vgg8", "vgg11", "vgg13", "vgg16", "vgg19"]

# Output widths of the convs in each of the five stages (VGG configs S, A, B, D, E).
STAGE_WIDTHS: Dict[int, List[List[int]]] = {
    8: [[64], [128], [256], [512], [512]],
    11: [[64], [128], [256, 256], [512, 512], [512, 512]],
    13: [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]],
    16: [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]],
    19: [[64, 64], [128, 128], [256] * 4, [512] * 4, [512] * 4],
}


def _stage(widths: Sequence[int], cin: int, batch_norm: bool) -> nn.Sequential:
    layers: List[nn.Module] = []
    for w in widths:
        layers.append(nn.Conv2d(cin, w, kernel_size=3, padding=1))
        if batch_norm:
            layers.append(nn.BatchNorm2d(w))
        layers.append(nn.ReLU(inplace=True))
        cin = w
    return nn.Sequential(*layers[:-1])


class VGGTrunk(ZooModel, nn.Module):
    """The five-stage VGG trunk's feature contract, for every model with ``block0..4``, ``pool0..4`` and a
    ``classifier`` whose stages end before their last ReLU (VGG here, RepVGG in repvgg.py).

    The feature lists hold four stage maps (block1..4), but milestone checking compares the first three,
    as it always has for VGG (``num_stages`` = 3).
    """

    classifier_attr = "classifier"

    def _blocks(self):
        return (self.block0, self.block1, self.block2, self.block3, self.block4)

    def _pools(self):
        return (self.pool0, self.pool1, self.pool2, self.pool3, self.pool4)

    def get_feat_modules(self) -> nn.ModuleList:
        interleaved = [m for pair in zip(self._blocks(), self._pools()) for m in pair]
        return nn.ModuleList(interleaved)

    def get_bn_before_relu(self) -> List[nn.Module]:
        return [self.block1[-1], self.block2[-1], self.block3[-1], self.block4[-1]]

    def features(self, x: torch.Tensor) -> FeatureMaps:
        height = x.shape[2]
        x = F.relu(self.block0(x))
        post, pre = [x], [x]
        for i in range(1, 5):
            if i < 4 or height == 64:
                x = self._pools()[i - 1](x)
            x_pre = self._blocks()[i](x)
            x = F.relu(x_pre)
            post.append(x)
            pre.append(x_pre)
        return classify(torch.flatten(self.pool4(x), 1), post, pre, self.classifier)


class VGG(VGGTrunk):
    def __init__(self, cfg: Sequence[Sequence[int]], batch_norm: bool = True,
                 num_classes: int = 100):
        super().__init__()
        cins = [3] + [stage[-1] for stage in cfg[:-1]]
        self.block0 = _stage(cfg[0], cins[0], batch_norm)
        self.block1 = _stage(cfg[1], cins[1], batch_norm)
        self.block2 = _stage(cfg[2], cins[2], batch_norm)
        self.block3 = _stage(cfg[3], cins[3], batch_norm)
        self.block4 = _stage(cfg[4], cins[4], batch_norm)
        self.pool0 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool1 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool2 = nn.MaxPool2d(kernel_size=2, stride=2)
        # Used only for 64x64 inputs, so that block4 still runs at 4x4 there.
        self.pool3 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool4 = nn.AdaptiveAvgPool2d((1, 1))
        self.classifier = nn.Linear(cfg[4][-1], num_classes)
        self.stage_widths = tuple(stage[-1] for stage in cfg[1:])
        self._initialize_weights()

    def _initialize_weights(self):
        init_fan_out_normal(self)


def _vgg_bn(depth: int, num_classes: int, **kwargs) -> VGG:
    return VGG(STAGE_WIDTHS[depth], batch_norm=True, num_classes=num_classes, **kwargs)


@register_model("vgg8")
def vgg8(num_classes: int = 100, **kwargs) -> VGG:
    return _vgg_bn(8, num_classes, **kwargs)


@register_model("vgg11")
def vgg11(num_classes: int = 100, **kwargs) -> VGG:
    return _vgg_bn(11, num_classes, **kwargs)


@register_model("vgg13")
def vgg13(num_classes: int = 100, **kwargs) -> VGG:
    return _vgg_bn(13, num_classes, **kwargs)


@register_model("vgg16")
def vgg16(num_classes: int = 100, **kwargs) -> VGG:
    return _vgg_bn(16, num_classes, **kwargs)


@register_model("vgg19")
def vgg19(num_classes: int = 100, **kwargs) -> VGG:
    return _vgg_bn(19, num_classes, **kwargs)
