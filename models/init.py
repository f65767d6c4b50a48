"""The weight initialisations the models share: RepDistiller's VGG/MobileNetV2/WRN one and the ResNets' one."""
import math

import torch.nn as nn


def init_fan_out_normal(model: nn.Module, linear_std=0.01) -> None:
    """Conv weights N(0, sqrt(2 / (kh*kw*out))) and zero bias, BN weight 1 / bias 0, Linear bias 0.

    Linear weights are drawn from N(0, ``linear_std``); WRN passes None and keeps PyTorch's default
    Linear weight, as upstream. Modules are visited in ``model.modules()`` order, so the RNG is consumed
    exactly as by the per-model loops this replaces.
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            if linear_std is not None:
                nn.init.normal_(m.weight, 0.0, linear_std)
            nn.init.zeros_(m.bias)


def init_kaiming_fan_out(model: nn.Module, zero_conv_bias: bool = False) -> None:
    """The ResNets' initialisation: conv weights Kaiming-normal (fan_out, ReLU), BN/GroupNorm weight 1 and bias 0.

    ``zero_conv_bias`` also zeroes conv biases (KDrefine's branch convs have them); the others keep PyTorch's.
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if zero_conv_bias and m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
