"""VGG-8 (RepDistiller ``vgg8_bn`` layout) built from re-parameterisable conv+BN blocks.

Each stage is ``Sequential(conv_bn, ...)`` with no ReLU inside, so that the
pre-activation stage output is available for ``preact`` features; the forward
applies the ReLU.
"""

import torch.nn as nn

from .ambb import bn_or_block, conv_bn
from .init import init_fan_out_normal
from .registry import register_model
from .vgg import VGGTrunk

__all__ = ['RepVGG', 'repvgg8']


class RepVGG(VGGTrunk):
    """Features and forward are VGG's (``VGGTrunk``); in ``get_bn_before_relu`` the conv_bn block stands in for
    the BN that precedes each ReLU."""

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
        self.stage_widths = tuple(stage[-1] for stage in cfg[1:])
        self._initialize_weights()

    def get_bn_before_relu(self):
        # each stage's last conv_bn: its BN for a plain ConvBN (--blocktype base), else the AMBB itself
        return [bn_or_block(block[-1]) for block in (self.block1, self.block2, self.block3, self.block4)]

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


@register_model("repvgg8", arch_options=("block_type", "deploy"))
def repvgg8(num_classes=100, block_type='AMBB', deploy=False):
    return RepVGG([[64], [128], [256], [512], [512]], num_classes, block_type, deploy)
