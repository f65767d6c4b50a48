"""EMKD self-defined CIFAR ResNet students with a free per-stage block count.

Same layout and state-dict keys as RepDistiller's CIFAR ResNet (conv1, bn1,
layer1..3, fc), so ``myresnet20(block_depth=[3, 3, 3])`` is interchangeable
with ``resnet20``; block-composition search only changes ``block_depth``.
"""
import torch.nn as nn
import torch.nn.functional as F

__all__ = ['MyResNet', 'parse_block_depth', 'myresnet8', 'myresnet14', 'myresnet20',
           'myresnet32', 'myresnet44', 'myresnet56', 'myresnet110', 'myresnet8x4',
           'myresnet32x4']


def parse_block_depth(block_depth, nominal, num_stages=3):
    """Normalise ``block_depth`` (None, "3,7,2" or a sequence) to a list of ints."""
    if block_depth is None:
        return list(nominal)
    if isinstance(block_depth, str):
        block_depth = [p for p in block_depth.replace(' ', '').split(',') if p]
    try:
        depth = [int(b) for b in block_depth]
    except (TypeError, ValueError):
        raise ValueError('block_depth must be a sequence of ints, got {!r}'.format(block_depth))
    if len(depth) != num_stages or any(b < 1 for b in depth):
        raise ValueError('block_depth needs {} positive block counts, got {!r}'.format(
            num_stages, block_depth))
    return depth


def _conv3x3(in_planes, out_planes, stride=1):
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None, is_last=False):
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
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out)) + residual
        preact = out
        out = F.relu(out)
        # Stage-final blocks also return the pre-ReLU sum for preact features.
        if self.is_last:
            return out, preact
        return out


class MyResNet(nn.Module):
    """CIFAR basic-block ResNet; ``depth`` only fixes the nominal per-stage count."""

    def __init__(self, depth, num_filters, num_classes=100, block_depth=None):
        super().__init__()
        if (depth - 2) % 6 != 0:
            raise ValueError('basic-block CIFAR ResNet depth must be 6n+2, got {}'.format(depth))
        n = (depth - 2) // 6
        self.nominal_depth = [n, n, n]
        self.block_depth = parse_block_depth(block_depth, self.nominal_depth)

        self.inplanes = num_filters[0]
        self.conv1 = nn.Conv2d(3, num_filters[0], kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(num_filters[0])
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(num_filters[1], self.block_depth[0], 1)
        self.layer2 = self._make_layer(num_filters[2], self.block_depth[1], 2)
        self.layer3 = self._make_layer(num_filters[3], self.block_depth[2], 2)
        self.avgpool = nn.AvgPool2d(8)
        self.fc = nn.Linear(num_filters[3] * BasicBlock.expansion, num_classes)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(self, planes, blocks, stride):
        out_planes = planes * BasicBlock.expansion
        downsample = None
        if stride != 1 or self.inplanes != out_planes:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, out_planes, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out_planes),
            )
        layers = [BasicBlock(self.inplanes, planes, stride, downsample, is_last=(blocks == 1))]
        self.inplanes = out_planes
        for i in range(1, blocks):
            layers.append(BasicBlock(self.inplanes, planes, is_last=(i == blocks - 1)))
        return nn.Sequential(*layers)

    def get_feat_modules(self):
        return nn.ModuleList([self.conv1, self.bn1, self.relu, self.layer1, self.layer2,
                              self.layer3])

    def get_bn_before_relu(self):
        return [self.layer1[-1].bn2, self.layer2[-1].bn2, self.layer3[-1].bn2]

    def forward(self, x, is_feat=False, preact=False):
        x = self.relu(self.bn1(self.conv1(x)))
        f0 = x
        x, f1_pre = self.layer1(x)
        f1 = x
        x, f2_pre = self.layer2(x)
        f2 = x
        x, f3_pre = self.layer3(x)
        f3 = x
        x = self.avgpool(x)
        x = x.view(x.size(0), -1)
        f4 = x
        x = self.fc(x)
        if not is_feat:
            return x
        if preact:
            return [f0, f1_pre, f2_pre, f3_pre, f4], x
        return [f0, f1, f2, f3, f4], x


_THIN = [16, 16, 32, 64]
_WIDE = [32, 64, 128, 256]


def myresnet8(block_depth=None, num_classes=100):
    return MyResNet(8, _THIN, num_classes, block_depth)


def myresnet14(block_depth=None, num_classes=100):
    return MyResNet(14, _THIN, num_classes, block_depth)


def myresnet20(block_depth=None, num_classes=100):
    return MyResNet(20, _THIN, num_classes, block_depth)


def myresnet32(block_depth=None, num_classes=100):
    return MyResNet(32, _THIN, num_classes, block_depth)


def myresnet44(block_depth=None, num_classes=100):
    return MyResNet(44, _THIN, num_classes, block_depth)


def myresnet56(block_depth=None, num_classes=100):
    return MyResNet(56, _THIN, num_classes, block_depth)


def myresnet110(block_depth=None, num_classes=100):
    return MyResNet(110, _THIN, num_classes, block_depth)


def myresnet8x4(block_depth=None, num_classes=100):
    return MyResNet(8, _WIDE, num_classes, block_depth)


def myresnet32x4(block_depth=None, num_classes=100):
    return MyResNet(32, _WIDE, num_classes, block_depth)
