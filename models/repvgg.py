"""VGG-8 (RepDistiller ``vgg8_bn`` layout) built from re-parameterisable conv+BN blocks.

Each stage is ``Sequential(conv_bn, ...)`` with no ReLU inside, so that the
pre-activation stage output is available for ``preact`` features; the forward
applies the ReLU.
"""

import torch.nn as nn
import torch.nn.functional as F

from .ambb import conv_bn
from .init import init_fan_out_normal

__all__ = ['RepVGG', 'repvgg8']


class RepVGG(nn.Module):

    def __init__(self, cfg, num_classes=100, block_type='AMBB', deploy=False):
        super().__init__()
        self.block_type = block_type
        self.deploy = deploy
        in_ch = 3
        for i, stage in enumerate(cfg):
            setattr(self, 'block{}'.format(i), self._make_layers(stage, in_ch))
            in_ch = stage[-1]
        self.pool0 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool1 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool2 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool3 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool4 = nn.AdaptiveAvgPool2d((1, 1))
        self.classifier = nn.Linear(in_ch, num_classes)
        self._initialize_weights()

    def _make_layers(self, stage_cfg, in_channels):
        layers = []
        for v in stage_cfg:
            if v == 'M':
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers.append(conv_bn(in_channels, v, 3, 1, 1,
                                      block_type=self.block_type, deploy=self.deploy))
                in_channels = v
        return nn.Sequential(*layers)

    def _initialize_weights(self):
        init_fan_out_normal(self)

    def get_feat_modules(self):
        return nn.ModuleList([self.block0, self.pool0, self.block1, self.pool1, self.block2,
                              self.pool2, self.block3, self.pool3, self.block4, self.pool4])

    def get_bn_before_relu(self):
        # The conv_bn block itself stands in for the BN preceding each ReLU.
        return [self.block1[-1], self.block2[-1], self.block3[-1], self.block4[-1]]

    def forward(self, x, is_feat=False, preact=False):
        h = x.shape[2]
        x = F.relu(self.block0(x))
        f0 = x
        x = self.pool0(x)
        x = self.block1(x)
        f1_pre = x
        x = F.relu(x)
        f1 = x
        x = self.pool1(x)
        x = self.block2(x)
        f2_pre = x
        x = F.relu(x)
        f2 = x
        x = self.pool2(x)
        x = self.block3(x)
        f3_pre = x
        x = F.relu(x)
        f3 = x
        # Only 64x64 inputs are pooled a fourth time; 32x32 CIFAR keeps block4 at 4x4.
        if h == 64:
            x = self.pool3(x)
        x = self.block4(x)
        f4_pre = x
        x = F.relu(x)
        f4 = x
        x = self.pool4(x)
        x = x.view(x.size(0), -1)
        f5 = x
        x = self.classifier(x)
        if not is_feat:
            return x
        if preact:
            return [f0, f1_pre, f2_pre, f3_pre, f4_pre, f5], x
        return [f0, f1, f2, f3, f4, f5], x


def repvgg8(num_classes=100, block_type='AMBB', deploy=False):
    return RepVGG([[64], [128], [256], [512], [512]], num_classes, block_type, deploy)
