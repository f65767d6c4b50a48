"""MobileNetV2 (RepDistiller CIFAR variant) with re-parameterisable conv+BN.

Only the 3x3 convs (stem and depthwise) become AMBB; the 1x1 point-wise convs
are ConvBN because a 1x1 kernel has no row/column branch to add.
"""

import torch.nn as nn

from .ambb import bn_or_block, conv_bn
from .features import FeatureMaps, ZooModel
from .init import init_fan_out_normal
from .registry import register_model

__all__ = ['RepMobileNetV2', 'rep_mobilenetv2_T_w', 'repmobilenetv2']


class RepInvertedResidual(nn.Module):

    def __init__(self, inp, oup, stride, expand_ratio, block_type='AMBB', deploy=False):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError('stride must be 1 or 2, got {}'.format(stride))
        self.stride = stride
        self.use_res_connect = stride == 1 and inp == oup
        hidden = inp * expand_ratio
        kw = dict(block_type=block_type, deploy=deploy)
        self.conv = nn.Sequential(
            conv_bn(inp, hidden, 1, 1, 0, **kw),
            nn.ReLU(inplace=True),
            conv_bn(hidden, hidden, 3, stride, 1, groups=hidden, **kw),
            nn.ReLU(inplace=True),
            conv_bn(hidden, oup, 1, 1, 0, **kw),
        )

    def forward(self, x):
        if self.use_res_connect:
            return x + self.conv(x)
        return self.conv(x)


class RepMobileNetV2(ZooModel, nn.Module):

    def __init__(self, T, num_classes=100, input_size=32, width_mult=1.0, remove_avg=False,
                 block_type='AMBB', deploy=False):
        super().__init__()
        if input_size % 32 != 0:
            raise ValueError('input_size must be a multiple of 32, got {}'.format(input_size))
        self.remove_avg = remove_avg
        self.interverted_residual_setting = [
            # expansion t, channels c, repeats n, first stride s
            [1, 16, 1, 1],
            [T, 24, 2, 1],
            [T, 32, 3, 2],
            [T, 64, 4, 2],
            [T, 96, 3, 1],
            [T, 160, 3, 2],
            [T, 320, 1, 1],
        ]
        kw = dict(block_type=block_type, deploy=deploy)
        input_channel = int(32 * width_mult)
        self.conv1 = nn.Sequential(conv_bn(3, input_channel, 3, 2, 1, **kw), nn.ReLU(inplace=True))

        self.blocks = nn.ModuleList([])
        for t, c, n, s in self.interverted_residual_setting:
            output_channel = int(c * width_mult)
            layers = []
            for i in range(n):
                layers.append(RepInvertedResidual(input_channel, output_channel,
                                                  s if i == 0 else 1, t, **kw))
                input_channel = output_channel
            self.blocks.append(nn.Sequential(*layers))

        # Narrow models keep the full 1280-d head, as in RepDistiller.
        self.last_channel = int(1280 * width_mult) if width_mult > 1.0 else 1280
        self.conv2 = nn.Sequential(conv_bn(input_channel, self.last_channel, 1, 1, 0, **kw),
                                   nn.ReLU(inplace=True))
        self.classifier = nn.Sequential(nn.Linear(self.last_channel, num_classes))
        self.stage_widths = tuple(int(self.interverted_residual_setting[i][1] * width_mult) for i in (1, 2, 4, 6))
        self.avgpool = nn.AvgPool2d(input_size // 16, ceil_mode=True)
        self._initialize_weights()

    def _initialize_weights(self):
        init_fan_out_normal(self)

    def get_bn_before_relu(self):
        # each block ends in a 1x1 conv_bn, a ConvBN whatever the block type (its BN unless fused)
        return [bn_or_block(self.blocks[i][-1].conv[-1]) for i in (1, 2, 4, 6)]

    def get_feat_modules(self):
        return nn.ModuleList([self.conv1, self.blocks])

    def pooled_map_module(self):
        # feat[-2] is the last block's output; the 1x1 conv head (with its ReLU) is pooled
        return self.conv2


    classifier_attr = "classifier"

    def pooled_map(self, last_stage_map):
        return self.conv2(last_stage_map)

    def features(self, x) -> FeatureMaps:
        out = self.conv1(x)
        f0 = out
        out = self.blocks[0](out)
        out = self.blocks[1](out)
        f1 = out
        out = self.blocks[2](out)
        f2 = out
        out = self.blocks[3](out)
        out = self.blocks[4](out)
        f3 = out
        out = self.blocks[5](out)
        out = self.blocks[6](out)
        f4 = out
        out = self.conv2(out)
        if not self.remove_avg:
            out = self.avgpool(out)
        out = out.view(out.size(0), -1)
        f5 = out
        out = self.classifier(out)
        # The block outputs are already linear (no ReLU after the
        # projection), so preact features are the same tensors.
        return FeatureMaps(out, [f0, f1, f2, f3, f4, f5], [f0, f1, f2, f3, f4, f5])


def rep_mobilenetv2_T_w(T, W, num_classes=100, block_type='AMBB', deploy=False):
    return RepMobileNetV2(T=T, num_classes=num_classes, width_mult=W,
                          block_type=block_type, deploy=deploy)


@register_model("repmobilenetv2", arch_options=("block_type", "deploy"))
def repmobilenetv2(num_classes=100, block_type='AMBB', deploy=False):
    return rep_mobilenetv2_T_w(6, 0.5, num_classes, block_type, deploy)
