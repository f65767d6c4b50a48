"""EMKD self-defined CIFAR ResNet students with a free per-stage block count.

Same layout and state-dict keys as RepDistiller's CIFAR ResNet (conv1, bn1,
layer1..3, fc), so ``myresnet20(block_depth=[3, 3, 3])`` is interchangeable
with ``resnet20``; block-composition search only changes ``block_depth``.
"""
from .registry import register_model
from .resnet import ResNet

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


class MyResNet(ResNet):
    """RepDistiller's CIFAR basic-block ResNet with a per-stage block count; ``depth`` fixes the nominal one."""

    def __init__(self, depth, num_filters, num_classes=100, block_depth=None):
        if (depth - 2) % 6 != 0:
            raise ValueError('basic-block CIFAR ResNet depth must be 6n+2, got {}'.format(depth))
        n = (depth - 2) // 6
        nominal = [n, n, n]
        depth_per_stage = parse_block_depth(block_depth, nominal)
        super().__init__(depth, num_filters, 'basicblock', num_classes=num_classes, stage_blocks=depth_per_stage)
        self.nominal_depth = nominal
        self.block_depth = depth_per_stage

    @property
    def num_stages(self):
        return len(self.block_depth)


_THIN = [16, 16, 32, 64]
_WIDE = [32, 64, 128, 256]


@register_model("myresnet8", arch_options=("block_depth",))
def myresnet8(block_depth=None, num_classes=100):
    return MyResNet(8, _THIN, num_classes, block_depth)


@register_model("myresnet14", arch_options=("block_depth",))
def myresnet14(block_depth=None, num_classes=100):
    return MyResNet(14, _THIN, num_classes, block_depth)


@register_model("myresnet20", arch_options=("block_depth",))
def myresnet20(block_depth=None, num_classes=100):
    return MyResNet(20, _THIN, num_classes, block_depth)


@register_model("myresnet32", arch_options=("block_depth",))
def myresnet32(block_depth=None, num_classes=100):
    return MyResNet(32, _THIN, num_classes, block_depth)


@register_model("myresnet44", arch_options=("block_depth",))
def myresnet44(block_depth=None, num_classes=100):
    return MyResNet(44, _THIN, num_classes, block_depth)


@register_model("myresnet56", arch_options=("block_depth",))
def myresnet56(block_depth=None, num_classes=100):
    return MyResNet(56, _THIN, num_classes, block_depth)


@register_model("myresnet110", arch_options=("block_depth",))
def myresnet110(block_depth=None, num_classes=100):
    return MyResNet(110, _THIN, num_classes, block_depth)


@register_model("myresnet8x4", arch_options=("block_depth",))
def myresnet8x4(block_depth=None, num_classes=100):
    return MyResNet(8, _WIDE, num_classes, block_depth)


@register_model("myresnet32x4", arch_options=("block_depth",))
def myresnet32x4(block_depth=None, num_classes=100):
    return MyResNet(32, _WIDE, num_classes, block_depth)
