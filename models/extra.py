"""Constructors for the KDrefine re-parameterisable students and the EMKD
variable-depth students, keyed by their command-line names.

Kept separate from ``models/__init__`` so the package-level ``model_dict`` can
merge it without this module depending on anything defined there.
"""
from .myresnet import (myresnet8, myresnet14, myresnet20, myresnet32, myresnet44, myresnet56,
                       myresnet110, myresnet8x4, myresnet32x4)
from .mywrn import mywrn_10_2, mywrn_16_1, mywrn_16_2, mywrn_40_1, mywrn_40_2
from .repmobilenetv2 import repmobilenetv2
from .represnet import represnet8x4, represnet20, represnet32
from .repvgg import repvgg8

__all__ = ['EXTRA_MODELS', 'REP_MODELS', 'MY_MODELS']

# Signature: (num_classes=100, block_type='AMBB', deploy=False)
REP_MODELS = {
    'represnet20': represnet20,
    'represnet32': represnet32,
    'represnet8x4': represnet8x4,
    'repvgg8': repvgg8,
    'repmobilenetv2': repmobilenetv2,
}

# Signature: (block_depth=None, num_classes=100)
MY_MODELS = {
    'myresnet8': myresnet8,
    'myresnet14': myresnet14,
    'myresnet20': myresnet20,
    'myresnet32': myresnet32,
    'myresnet44': myresnet44,
    'myresnet56': myresnet56,
    'myresnet110': myresnet110,
    'myresnet8x4': myresnet8x4,
    'myresnet32x4': myresnet32x4,
    'mywrn_10_2': mywrn_10_2,
    'mywrn_16_1': mywrn_16_1,
    'mywrn_16_2': mywrn_16_2,
    'mywrn_40_1': mywrn_40_1,
    'mywrn_40_2': mywrn_40_2,
}

EXTRA_MODELS = {**REP_MODELS, **MY_MODELS}
