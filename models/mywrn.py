"""EMKD self-defined Wide-ResNet students with a free per-stage block count.

Keys and layout follow RepDistiller's ``wrn.py`` (conv1, block{1,2,3}.layer.N,
bn1, fc), so the nominal ``block_depth`` reproduces ``wrn_*`` exactly.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from .myresnet import parse_block_depth
from .init import init_fan_out_normal

__all__ = ['MyWideResNet', 'mywrn_10_2', 'mywrn_16_1', 'mywrn_16_2', 'mywrn_40_1',
           'mywrn_40_2']


class BasicBlock(nn.Module):
    """Pre-activation block.

    When the width changes, the shortcut 1x1 conv sees the *activated* input,
    as in RepDistiller; with equal widths the identity path takes the raw input.
    """

    def __init__(self, in_planes, out_planes, stride, dropRate=0.0):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1,
                               bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_planes, out_planes, kernel_size=3, stride=1, padding=1,
                               bias=False)
        self.droprate = dropRate
        self.equalInOut = in_planes == out_planes
        self.convShortcut = None
        if not self.equalInOut:
            self.convShortcut = nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride,
                                          padding=0, bias=False)

    def forward(self, x):
        act = self.relu1(self.bn1(x))
        out = self.relu2(self.bn2(self.conv1(act)))
        if self.droprate > 0:
            out = F.dropout(out, p=self.droprate, training=self.training)
        out = self.conv2(out)
        shortcut = x if self.equalInOut else self.convShortcut(act)
        return torch.add(shortcut, out)


class NetworkBlock(nn.Module):

    def __init__(self, nb_layers, in_planes, out_planes, stride, dropRate=0.0):
        super().__init__()
        self.layer = nn.Sequential(*[
            BasicBlock(in_planes if i == 0 else out_planes, out_planes,
                       stride if i == 0 else 1, dropRate)
            for i in range(nb_layers)
        ])

    def forward(self, x):
        return self.layer(x)


class MyWideResNet(nn.Module):

    def __init__(self, depth, num_classes=100, widen_factor=1, dropRate=0.0, block_depth=None):
        super().__init__()
        if (depth - 4) % 6 != 0:
            raise ValueError('WRN depth must be 6n+4, got {}'.format(depth))
        n = (depth - 4) // 6
        self.nominal_depth = [n, n, n]
        self.block_depth = parse_block_depth(block_depth, self.nominal_depth)
        ch = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]

        self.conv1 = nn.Conv2d(3, ch[0], kernel_size=3, stride=1, padding=1, bias=False)
        self.block1 = NetworkBlock(self.block_depth[0], ch[0], ch[1], 1, dropRate)
        self.block2 = NetworkBlock(self.block_depth[1], ch[1], ch[2], 2, dropRate)
        self.block3 = NetworkBlock(self.block_depth[2], ch[2], ch[3], 2, dropRate)
        self.bn1 = nn.BatchNorm2d(ch[3])
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(ch[3], num_classes)
        self.nChannels = ch[3]

        init_fan_out_normal(self, linear_std=None)

    def get_feat_modules(self):
        return nn.ModuleList([self.conv1, self.block1, self.block2, self.block3])

    def get_bn_before_relu(self):
        return [self.block2.layer[0].bn1, self.block3.layer[0].bn1, self.bn1]

    def forward(self, x, is_feat=False, preact=False):
        out = self.conv1(x)
        f0 = out
        out = self.block1(out)
        f1 = out
        out = self.block2(out)
        f2 = out
        out = self.block3(out)
        f3 = out
        out = self.relu(self.bn1(out))
        out = F.avg_pool2d(out, 8)
        out = out.view(-1, self.nChannels)
        f4 = out
        out = self.fc(out)
        if not is_feat:
            return out
        if preact:
            # WRN is pre-activation: the "pre-ReLU" view of a stage output is
            # the BN that the next stage (or the head) applies to it.
            f1 = self.block2.layer[0].bn1(f1)
            f2 = self.block3.layer[0].bn1(f2)
            f3 = self.bn1(f3)
        return [f0, f1, f2, f3, f4], out


def mywrn_10_2(block_depth=None, num_classes=100):
    return MyWideResNet(10, num_classes, widen_factor=2, block_depth=block_depth)


def mywrn_16_1(block_depth=None, num_classes=100):
    return MyWideResNet(16, num_classes, widen_factor=1, block_depth=block_depth)


def mywrn_16_2(block_depth=None, num_classes=100):
    return MyWideResNet(16, num_classes, widen_factor=2, block_depth=block_depth)


def mywrn_40_1(block_depth=None, num_classes=100):
    return MyWideResNet(40, num_classes, widen_factor=1, block_depth=block_depth)


def mywrn_40_2(block_depth=None, num_classes=100):
    return MyWideResNet(40, num_classes, widen_factor=2, block_depth=block_depth)
