"""EMKD self-defined Wide-ResNet students with a free per-stage block count.

RepDistiller's ``wrn.WideResNet`` with ``stage_blocks``: the same keys and layout (conv1,
block{1,2,3}.layer.N, bn1, fc), so the nominal ``block_depth`` reproduces ``wrn_*`` exactly.
"""

from .myresnet import parse_block_depth
from .registry import register_model
from .wrn import WideResNet, blocks_per_stage

__all__ = ['MyWideResNet', 'mywrn_10_2', 'mywrn_16_1', 'mywrn_16_2', 'mywrn_40_1',
           'mywrn_40_2']


class MyWideResNet(WideResNet):

    def __init__(self, depth, num_classes=100, widen_factor=1, dropRate=0.0, block_depth=None):
        n = blocks_per_stage(depth)
        nominal = [n, n, n]
        depth_per_stage = parse_block_depth(block_depth, nominal)
        super().__init__(depth, num_classes, widen_factor=widen_factor, dropRate=dropRate,
                         stage_blocks=depth_per_stage)
        self.nominal_depth = nominal
        self.block_depth = depth_per_stage

    @property
    def num_stages(self):
        return len(self.block_depth)


@register_model("mywrn_10_2", arch_options=("block_depth",))
def mywrn_10_2(block_depth=None, num_classes=100):
    return MyWideResNet(10, num_classes, widen_factor=2, block_depth=block_depth)


@register_model("mywrn_16_1", arch_options=("block_depth",))
def mywrn_16_1(block_depth=None, num_classes=100):
    return MyWideResNet(16, num_classes, widen_factor=1, block_depth=block_depth)


@register_model("mywrn_16_2", arch_options=("block_depth",))
def mywrn_16_2(block_depth=None, num_classes=100):
    return MyWideResNet(16, num_classes, widen_factor=2, block_depth=block_depth)


@register_model("mywrn_40_1", arch_options=("block_depth",))
def mywrn_40_1(block_depth=None, num_classes=100):
    return MyWideResNet(40, num_classes, widen_factor=1, block_depth=block_depth)


@register_model("mywrn_40_2", arch_options=("block_depth",))
def mywrn_40_2(block_depth=None, num_classes=100):
    return MyWideResNet(40, num_classes, widen_factor=2, block_depth=block_depth)
