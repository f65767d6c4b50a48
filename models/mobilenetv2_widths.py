"""The MobileNetV2 width family of CheckpointKD (``mobilenetv2_035/05/075`` and ``mobilenetv2``).

The architecture is RepDistiller's 32x32 MobileNetV2 (``models.mobilenetv2``, expansion T = 6) at width
multipliers 0.35 / 0.5 / 0.75 / 1.0; CheckpointKD copies that file (from the RCO code) and only adds the
widths. Channels are ``int(c * W)``: ``mobilenetv2_075`` has a 24-channel stride-2 stem and stages of
12, 18, 24, 48, 72, 120, 240 channels; the 1x1 head stays at 1280 channels for W <= 1.

``mobilenetv2_05`` is the same network as RepDistiller's ``MobileNetV2`` (``mobile_half``); note the
lower-case ``mobilenetv2`` is the full-width (W = 1.0) model. CheckpointKD's forward returns
``(logits, pooled feature)``; here, as for every model of this toolkit, ``model(x)`` returns the logits and
``model(x, is_feat=True)`` the ``(feats, logits)`` pair whose ``feats[-1]`` is that pooled 1280-d vector.
"""
from __future__ import annotations

from .mobilenetv2 import MobileNetV2, mobilenetv2_T_w
from .registry import models_defined_in, register_model

__all__ = ["mobilenetv2_035", "mobilenetv2_05", "mobilenetv2_075", "mobilenetv2", "MOBILENETV2_WIDTH_MODELS"]


@register_model("mobilenetv2_035")
def mobilenetv2_035(num_classes: int = 100, T: int = 6) -> MobileNetV2:
    return mobilenetv2_T_w(T, 0.35, num_classes)


@register_model("mobilenetv2_05")
def mobilenetv2_05(num_classes: int = 100, T: int = 6) -> MobileNetV2:
    return mobilenetv2_T_w(T, 0.5, num_classes)


@register_model("mobilenetv2_075")
def mobilenetv2_075(num_classes: int = 100, T: int = 6) -> MobileNetV2:
    return mobilenetv2_T_w(T, 0.75, num_classes)


@register_model("mobilenetv2")
def mobilenetv2(num_classes: int = 100, T: int = 6) -> MobileNetV2:
    return mobilenetv2_T_w(T, 1.0, num_classes)


# A view of the registry (registration happens in the decorators above).
MOBILENETV2_WIDTH_MODELS = models_defined_in(__name__)
