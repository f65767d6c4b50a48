"""CIFAR architectures of RepDistiller, weight-compatible with its checkpoints.

``model_dict`` maps the names used on the command line (and in checkpoint file names) to
constructors ``f(num_classes=100, **kwargs)``. Each constructor registers itself where it is defined
(``models.registry.register_model``); importing this package imports every model file, so the dict is
complete. It is a plain dict on purpose: other packages may still add architectures with
``model_dict.update(...)`` and ``build_model`` sees them (declaring no arch options).

Every model's ``forward(x, is_feat=False, preact=False)`` returns logits, or
``(feats, logits)`` with ``is_feat=True`` where ``feats[-1]`` is the pooled (B, C) vector;
``features(x)`` returns both lists from one forward (``models.features.FeatureMaps``).
"""
from __future__ import annotations

# Imported for their registrations, in the order model_dict has always listed the families.
from . import resnet, resnetv2, wrn, vgg, mobilenetv2, ShuffleNetv1, ShuffleNetv2  # noqa: F401
from . import represnet, repvgg, repmobilenetv2, myresnet, mywrn  # noqa: F401
from . import multi_resnet, mobilenetv2_widths, resnet_a  # noqa: F401
from . import imagenet  # noqa: F401  (the ImageNet family, models.registry.imagenet_model_dict)
from .extra import EXTRA_MODELS  # noqa: F401
from .features import FeatureMaps
from .mobilenetv2_widths import MOBILENETV2_WIDTH_MODELS  # noqa: F401
from .multi_resnet import BYOT_MODELS  # noqa: F401
from .resnet_a import RESNET_A_MODELS  # noqa: F401
from .registry import ARCH_OPTIONS, CIFAR, IMAGENET, accepts, arch_options, build_model, family_of, \
    imagenet_model_dict, model_dict, models_of, register_model

# The name this package exported before the registry declared the options.
OPTIONAL_ARCH_KWARGS = ARCH_OPTIONS

__all__ = ["model_dict", "imagenet_model_dict", "models_of", "family_of", "CIFAR", "IMAGENET", "build_model",
           "register_model", "arch_options", "accepts", "ARCH_OPTIONS", "OPTIONAL_ARCH_KWARGS", "FeatureMaps"]
