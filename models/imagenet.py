"""ImageNet networks: torchvision's ResNet-18/34/50/101 (its state-dict keys, so its published weight files load
strictly) and mdistiller's MobileNetV1, each with the zoo's feature contract.

Registered in the ImageNet family (``models.registry``): with ``--dataset imagenet`` or ``tiny_imagenet`` the names
``ResNet18``, ``ResNet34``, ``ResNet50``, ``ResNet101`` and ``MobileNetV1`` build these.

ResNets (spec 3.1): torchvision's layout (7x7/2 stem, max-pool, four stages, Bottleneck stride on ``conv2``) and key
names (``conv1``, ``bn1``, ``layer{k}.{i}.conv{1,2,3}``, ``layer{k}.0.downsample.{0,1}``, ``fc``). The feature
lists are mdistiller's: ``[relu(stem) (before the max-pool), relu(l1), ..., relu(l4), pooled]`` and before the last
ReLU of each stage ``[stem, l1, ..., l4, pooled]`` (mdistiller's stem ReLU is in place, so its pre-activation stem
entry is post-ReLU; kept). Two deliberate differences from mdistiller: the pooling is adaptive (identical at 224
pixels, and smaller crops such as Tiny-ImageNet's 64 pixels work), and ``stage_channels`` are the true widths
(mdistiller returns [256, 512, 1024, 2048] for every depth, wrong for ResNet-18/34: FIX). ``get_bn_before_relu``
names the last BN of layer2..4 only, as mdistiller's (REPRODUCE: OFD's ImageNet connectors, 2,759,680 parameters for
MobileNetV1 -> ResNet-50, are sized from those three).

MobileNetV1 (spec 3.2): ``model`` = 14 conv blocks (``model.{0..13}.{0..5}``) and the pooling, ``fc``. Feature taps
at blocks 3, 5, 11 and 13 (128@56, 256@28, 512@14, 1024@7 for a 224 input), each without its last ReLU in the
pre-activation list. mdistiller's list has no stem entry; here ``feat[0]`` is block 1's output (64@112), so that
``feat[1:-1]`` are the four taps as for every zoo model. mdistiller's constructor ignores ``num_classes`` (always
1000); here it is honoured (FIX).
"""
from __future__ import annotations

from typing import List, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .features import FeatureMaps, ZooModel, classify
from .init import init_kaiming_fan_out
from .registry import register_model

__all__ = ["ImageNetResNet", "MobileNetV1", "TORCHVISION_FILES"]

# torchvision's published ImageNet weight files (the v1 weights mdistiller loads), by architecture name
TORCHVISION_FILES = {
    "ResNet18": "resnet18-5c106cde.pth", "ResNet34": "resnet34-333f7ec4.pth",
    "ResNet50": "resnet50-19c8e357.pth", "ResNet101": "resnet101-5d3b4d8f.pth",
}


def _downsample(cin: int, cout: int, stride: int):
    if stride == 1 and cin == cout:
        return None
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = _downsample(cin, planes, stride)

    def pre_activation(self, x: torch.Tensor) -> torch.Tensor:
        """The residual sum before the block's last ReLU."""
        h = F.relu(self.bn1(self.conv1(x)))
        h = self.bn2(self.conv2(h))
        return h + (x if self.downsample is None else self.downsample(x))

    def forward(self, x):
        return F.relu(self.pre_activation(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.downsample = _downsample(cin, planes * 4, stride)

    def pre_activation(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn1(self.conv1(x)))
        h = F.relu(self.bn2(self.conv2(h)))
        h = self.bn3(self.conv3(h))
        return h + (x if self.downsample is None else self.downsample(x))

    def forward(self, x):
        return F.relu(self.pre_activation(x))


class ImageNetResNet(ZooModel, nn.Module):
    num_stages = 4

    def __init__(self, block, layers: Sequence[int], num_classes: int = 1000):
        super().__init__()
        self.cin = 64
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0], 1)
        self.layer2 = self._make_layer(block, 128, layers[1], 2)
        self.layer3 = self._make_layer(block, 256, layers[2], 2)
        self.layer4 = self._make_layer(block, 512, layers[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512 * block.expansion, num_classes)
        self.stage_widths = tuple(w * block.expansion for w in (64, 128, 256, 512))
        # torchvision's and mdistiller's initialisation (conv N(0, sqrt(2 / fan_out)), BN 1/0, Linear PyTorch's)
        init_kaiming_fan_out(self)

    def _make_layer(self, block, planes: int, blocks: int, stride: int) -> nn.Sequential:
        layers = []
        for i in range(blocks):
            layers.append(block(self.cin, planes, stride if i == 0 else 1))
            self.cin = planes * block.expansion
        return nn.Sequential(*layers)

    def _stages(self):
        return (self.layer1, self.layer2, self.layer3, self.layer4)

    def get_feat_modules(self) -> nn.ModuleList:
        return nn.ModuleList([self.conv1, self.bn1, *self._stages()])

    def get_bn_before_relu(self) -> List[nn.BatchNorm2d]:
        last = [stage[-1] for stage in self._stages()[1:]]
        return [b.bn3 if isinstance(b, Bottleneck) else b.bn2 for b in last]

    def features(self, x: torch.Tensor) -> FeatureMaps:
        stem = F.relu(self.bn1(self.conv1(x)))
        post, pre = [stem], [stem]
        x = self.maxpool(stem)
        for stage in self._stages():
            for block in stage[:-1]:
                x = block(x)
            x_pre = stage[-1].pre_activation(x)
            x = F.relu(x_pre)
            post.append(x)
            pre.append(x_pre)
        return classify(torch.flatten(self.avgpool(x), 1), post, pre, self.fc)

    def forward(self, x: torch.Tensor, is_feat: bool = False, preact: bool = False):
        if is_feat:
            return self.features(x).as_forward(is_feat, preact)
        # the plain forward (teachers, evaluation) without keeping the feature lists
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        for stage in self._stages():
            x = stage(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))


@register_model("ResNet18", family="imagenet")
def resnet18_imagenet(num_classes: int = 1000, **kwargs) -> ImageNetResNet:
    return ImageNetResNet(BasicBlock, [2, 2, 2, 2], num_classes, **kwargs)


@register_model("ResNet34", family="imagenet")
def resnet34_imagenet(num_classes: int = 1000, **kwargs) -> ImageNetResNet:
    return ImageNetResNet(BasicBlock, [3, 4, 6, 3], num_classes, **kwargs)


@register_model("ResNet50", family="imagenet")
def resnet50_imagenet(num_classes: int = 1000, **kwargs) -> ImageNetResNet:
    return ImageNetResNet(Bottleneck, [3, 4, 6, 3], num_classes, **kwargs)


@register_model("ResNet101", family="imagenet")
def resnet101_imagenet(num_classes: int = 1000, **kwargs) -> ImageNetResNet:
    return ImageNetResNet(Bottleneck, [3, 4, 23, 3], num_classes, **kwargs)


def conv_bn(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def conv_dw(cin: int, cout: int, stride: int) -> nn.Sequential:
    """Depthwise 3x3 + BN + ReLU, pointwise 1x1 + BN + ReLU (indices 0..5, mdistiller's keys)."""
    return nn.Sequential(
        nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False), nn.BatchNorm2d(cin), nn.ReLU(inplace=True),
        nn.Conv2d(cin, cout, 1, 1, 0, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class MobileNetV1(ZooModel, nn.Module):
    # (output channels, stride) of blocks 0..13 (spec 3.2)
    BLOCKS = ((32, 2), (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1), (512, 1),
              (512, 1), (512, 1), (1024, 2), (1024, 1))
    # the blocks whose outputs are the feature taps f1..f4, and the block whose output is f0
    TAPS = (3, 5, 11, 13)
    STEM = 1
    num_stages = 4
    stage_widths = (128, 256, 512, 1024)

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        blocks, cin = [], 3
        for i, (cout, stride) in enumerate(self.BLOCKS):
            blocks.append(conv_bn(cin, cout, stride) if i == 0 else conv_dw(cin, cout, stride))
            cin = cout
        # no parameters at index 14, so the keys stay model.{0..13}.*; adaptive: 7x7 at 224 pixels as mdistiller's
        self.model = nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(1))
        self.fc = nn.Linear(1024, num_classes)

    def get_feat_modules(self) -> nn.ModuleList:
        return nn.ModuleList([self.model])

    def get_bn_before_relu(self) -> List[nn.BatchNorm2d]:
        return [self.model[i][4] for i in self.TAPS]

    def features(self, x: torch.Tensor) -> FeatureMaps:
        post, pre = [], []
        start = 0
        for tap in self.TAPS:
            for i in range(start, tap):
                x = self.model[i](x)
                if i == self.STEM:
                    post.append(x)
                    pre.append(x)
            x_pre = self.model[tap][:5](x)  # the tap block without its last ReLU
            x = F.relu(x_pre)
            post.append(x)
            pre.append(x_pre)
            start = tap + 1
        return classify(torch.flatten(self.model[14](x), 1), post, pre, self.fc)

    def forward(self, x: torch.Tensor, is_feat: bool = False, preact: bool = False):
        if is_feat:
            return self.features(x).as_forward(is_feat, preact)
        return self.fc(torch.flatten(self.model(x), 1))


@register_model("MobileNetV1", family="imagenet")
def mobilenetv1(num_classes: int = 1000, **kwargs) -> MobileNetV1:
    return MobileNetV1(num_classes, **kwargs)
