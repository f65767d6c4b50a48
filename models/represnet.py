"""CIFAR ResNet (RepDistiller layout) whose 3x3 conv+BN pairs are re-parameterisable.

After ``convert_to_deploy`` the topology is the vanilla CIFAR ResNet except that
the 3x3 convs carry a bias and have no BN.  The 1x1 downsample shortcut is a
plain Conv2d+BN, left unfused, so its keys match the vanilla ResNet's.
"""
import torch.nn as nn
import torch.nn.functional as F

from .ambb import bn_or_block, conv_bn
from .features import FeatureMaps, ZooModel, classify, run_stages
from .init import init_kaiming_fan_out
from .registry import register_model

__all__ = ['RepResNet', 'represnet20', 'represnet32', 'represnet8x4']


class RepBasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None, is_last=False,
                 block_type='AMBB', deploy=False):
        super().__init__()
        self.is_last = is_last
        self.conv1 = conv_bn(inplanes, planes, 3, stride, 1, block_type=block_type, deploy=deploy)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv_bn(planes, planes, 3, 1, 1, block_type=block_type, deploy=deploy)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x):
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.conv1(x))
        out = self.conv2(out) + residual
        preact = out
        out = F.relu(out)
        # The last block of a stage also hands out its pre-ReLU sum, which
        # RepDistiller's preact feature list needs.
        if self.is_last:
            return out, preact
        return out


class RepResNet(ZooModel, nn.Module):

    def __init__(self, depth, num_filters, num_classes=100, block_type='AMBB', deploy=False):
        super().__init__()
        if (depth - 2) % 6 != 0:
            raise ValueError('basic-block CIFAR ResNet depth must be 6n+2, got {}'.format(depth))
        n = (depth - 2) // 6
        self.block_type = block_type
        self.deploy = deploy
        self.inplanes = num_filters[0]
        self.conv1 = conv_bn(3, num_filters[0], 3, 1, 1, block_type=block_type, deploy=deploy)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(num_filters[1], n, 1)
        self.layer2 = self._make_layer(num_filters[2], n, 2)
        self.layer3 = self._make_layer(num_filters[3], n, 2)
        self.avgpool = nn.AvgPool2d(8)
        self.fc = nn.Linear(num_filters[3] * RepBasicBlock.expansion, num_classes)
        self.stage_widths = tuple(w * RepBasicBlock.expansion for w in num_filters[1:4])

        # Includes the 1x3 / 3x1 branch convs: their fan_out is smaller, so each branch starts with a
        # proportionally larger std.
        init_kaiming_fan_out(self, zero_conv_bias=True)

    def _make_layer(self, planes, blocks, stride):
        out_planes = planes * RepBasicBlock.expansion
        downsample = None
        if stride != 1 or self.inplanes != out_planes:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, out_planes, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out_planes),
            )
        kw = dict(block_type=self.block_type, deploy=self.deploy)
        layers = [RepBasicBlock(self.inplanes, planes, stride, downsample,
                                is_last=(blocks == 1), **kw)]
        self.inplanes = out_planes
        for i in range(1, blocks):
            layers.append(RepBasicBlock(self.inplanes, planes, is_last=(i == blocks - 1), **kw))
        return nn.Sequential(*layers)

    def get_feat_modules(self):
        return nn.ModuleList([self.conv1, self.relu, self.layer1, self.layer2, self.layer3])

    def get_bn_before_relu(self):
        # The stage-final conv_bn block: its BN for a plain ConvBN (--blocktype base); an AMBB's output is a sum
        # of BN outputs, so the block itself plays that role.
        return [bn_or_block(stage[-1].conv2) for stage in (self.layer1, self.layer2, self.layer3)]

    def features(self, x) -> FeatureMaps:
        x, post, pre = run_stages(self.relu(self.conv1(x)), (self.layer1, self.layer2, self.layer3))
        return classify(self.avgpool(x).view(x.size(0), -1), post, pre, self.fc)


@register_model("represnet20", arch_options=("block_type", "deploy"))
def represnet20(num_classes=100, block_type='AMBB', deploy=False):
    return RepResNet(20, [16, 16, 32, 64], num_classes, block_type, deploy)


@register_model("represnet32", arch_options=("block_type", "deploy"))
def represnet32(num_classes=100, block_type='AMBB', deploy=False):
    return RepResNet(32, [16, 16, 32, 64], num_classes, block_type, deploy)


@register_model("represnet8x4", arch_options=("block_type", "deploy"))
def represnet8x4(num_classes=100, block_type='AMBB', deploy=False):
    return RepResNet(8, [32, 64, 128, 256], num_classes, block_type, deploy)
