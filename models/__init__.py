"""CIFAR architectures of RepDistiller, weight-compatible with its checkpoints.

``model_dict`` maps the names used on the command line (and in checkpoint file names) to
constructors ``f(num_classes=100, **kwargs)``. It is a plain dict on purpose: other packages
register more architectures with ``model_dict.update(...)`` and ``build_model`` sees them.

Every model's ``forward(x, is_feat=False, preact=False)`` returns logits, or
``(feats, logits)`` with ``is_feat=True`` where ``feats[-1]`` is the pooled (B, C) vector.
"""
from __future__ import annotations

import inspect
from typing import Callable, Dict

import torch.nn as nn

from .mobilenetv2 import mobile_half
from .resnet import (resnet8, resnet8x4, resnet14, resnet20, resnet32, resnet32x4, resnet44,
                     resnet56, resnet110)
from .resnetv2 import ResNet50
from .extra import EXTRA_MODELS
from .mobilenetv2_widths import MOBILENETV2_WIDTH_MODELS
from .multi_resnet import BYOT_MODELS
from .ShuffleNetv1 import ShuffleV1
from .ShuffleNetv2 import ShuffleV2
from .vgg import vgg8, vgg11, vgg13, vgg16, vgg19
from .wrn import wrn_16_1, wrn_16_2, wrn_40_1, wrn_40_2

model_dict: Dict[str, Callable[..., nn.Module]] = {
    "resnet8": resnet8,
    "resnet14": resnet14,
    "resnet20": resnet20,
    "resnet32": resnet32,
    "resnet44": resnet44,
    "resnet56": resnet56,
    "resnet110": resnet110,
    "resnet8x4": resnet8x4,
    "resnet32x4": resnet32x4,
    "ResNet50": ResNet50,
    "wrn_16_1": wrn_16_1,
    "wrn_16_2": wrn_16_2,
    "wrn_40_1": wrn_40_1,
    "wrn_40_2": wrn_40_2,
    "vgg8": vgg8,
    "vgg11": vgg11,
    "vgg13": vgg13,
    "vgg16": vgg16,
    "vgg19": vgg19,
    "MobileNetV2": mobile_half,
    "ShuffleV1": ShuffleV1,
    "ShuffleV2": ShuffleV2,
}
# KDrefine re-parameterisable students (represnet*, repvgg8, repmobilenetv2) and EMKD's variable-depth
# students (myresnet*, mywrn_*).
model_dict.update(EXTRA_MODELS)
# BYOT's multi-exit ResNet18/50 and CheckpointKD's MobileNetV2 widths (mobilenetv2_035/05/075, mobilenetv2).
model_dict.update(BYOT_MODELS)
model_dict.update(MOBILENETV2_WIDTH_MODELS)

# Architecture options that only some families understand. The entry scripts pass them for every model
# (they come from command-line flags), so a constructor that does not name one simply does not get it.
OPTIONAL_ARCH_KWARGS = ("block_type", "deploy", "block_depth")


def accepts(ctor: Callable, name: str) -> bool:
    """Whether ``ctor`` names the keyword ``name`` explicitly (a bare ``**kwargs`` does not count)."""
    try:
        params = inspect.signature(ctor).parameters
    except (TypeError, ValueError):
        return False
    p = params.get(name)
    return p is not None and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)


def build_model(name: str, num_classes: int = 100, **kwargs) -> nn.Module:
    """Instantiate ``model_dict[name]``; an unknown name is a ``ValueError`` naming the options.

    ``block_type``, ``deploy`` and ``block_depth`` reach only constructors that declare them and are
    dropped when None; every other keyword is passed through unchanged.
    """
    try:
        ctor = model_dict[name]
    except KeyError:
        valid = ", ".join(sorted(model_dict))
        raise ValueError(f"unknown model {name!r}; valid names: {valid}") from None
    for key in OPTIONAL_ARCH_KWARGS:
        if key in kwargs and (kwargs[key] is None or not accepts(ctor, key)):
            del kwargs[key]
    return ctor(num_classes=num_classes, **kwargs)


__all__ = ["model_dict", "build_model", "accepts", "OPTIONAL_ARCH_KWARGS"]
