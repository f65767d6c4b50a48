"""Logit standardization (Sun et al., CVPR 2024; ``--logit_stand``): z-scored logits inside the distillation terms.

An add-on to the methods that soften logits with a temperature (kd, checkpointkd, dkd, mlkd): each logit row becomes
``Z(z) = (z - mean(z)) / (std(z) + 1e-7)`` with the unbiased std over the classes, eps outside the square root and
no multiplier (KDrefine uses x2), for the student and the teacher, before the temperature; the cross-entropy term keeps
the raw student logits, and nothing changes at inference (Z keeps the argmax).

Defaults with ``--logit_stand`` (the LS repository's; a flag given still wins): kd ``-r 0.1 -a w -b 0 --kd_T T_b``,
dkd ``--kd_T T_b --dkd_alpha 1*w --dkd_beta BETA*w`` (``-r 1 -a 0 -b 1``, the 20-epoch warm-up unchanged), mlkd
``-r 0.1 -a 0 -b w --kd_T T_b`` on MLKD's long (480-epoch) recipe, with (T_b, w[, BETA]) the per-pair values its log
files name (spec 1.1), and (2, 9[, 8]) for other pairs. MLKD+LS standardises MLKD's KD terms only.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch

from helper.option import Option, str2bool

from .base import DistillContext, Distiller, options_type, register_addon, softening_refusal

EPS = 1e-7  # the LS repository's, added to the std


def standardize(z: torch.Tensor) -> torch.Tensor:
    """``(z - mean) / (unbiased std + 1e-7)`` over dim 1, differentiable in ``z``; half precision upcast first."""
    if z.dtype in (torch.float16, torch.bfloat16):
        z = z.float()
    return (z - z.mean(dim=1, keepdim=True)) / (z.std(dim=1, keepdim=True) + EPS)


# (teacher, student) -> (T_b, w): the LS log names for KD+LS (spec 1.1)
KD_PAIRS: Dict[Tuple[str, str], Tuple[float, float]] = {
    ("resnet32x4", "resnet8x4"): (2, 9), ("vgg13", "vgg8"): (3, 9), ("wrn_40_2", "wrn_40_1"): (2, 9),
    ("wrn_40_2", "wrn_16_2"): (2, 9), ("resnet56", "resnet20"): (2, 9), ("resnet110", "resnet32"): (2, 9),
    ("resnet110", "resnet20"): (4, 12), ("resnet32x4", "ShuffleV2"): (2, 9), ("resnet32x4", "wrn_16_2"): (3, 9),
    ("resnet32x4", "wrn_40_2"): (3, 9), ("wrn_40_2", "resnet8x4"): (2, 9), ("wrn_40_2", "MobileNetV2"): (3, 9),
    ("vgg13", "MobileNetV2"): (3, 9), ("ResNet50", "MobileNetV2"): (3, 1),
}
# (teacher, student) -> (T_b, w, DKD BETA before the x w): the LS log names for DKD+LS
DKD_PAIRS: Dict[Tuple[str, str], Tuple[float, float, float]] = {
    ("resnet32x4", "resnet8x4"): (2, 9, 8.0), ("vgg13", "vgg8"): (2, 15, 2.0), ("wrn_40_2", "wrn_40_1"): (2, 12, 2.0),
    ("wrn_40_2", "wrn_16_2"): (2, 12, 2.0), ("resnet56", "resnet20"): (3, 18, 2.0),
    ("resnet110", "resnet32"): (2, 15, 2.0), ("resnet110", "resnet20"): (2, 15, 2.0),
    ("resnet32x4", "ShuffleV2"): (2, 9, 8.0), ("resnet32x4", "wrn_16_2"): (2, 9, 2.0),
    ("resnet32x4", "wrn_40_2"): (2, 9, 8.0), ("wrn_40_2", "resnet8x4"): (2, 18, 2.0),
    ("wrn_40_2", "MobileNetV2"): (2, 15, 2.0), ("vgg13", "MobileNetV2"): (3, 9, 2.0),
    ("ResNet50", "MobileNetV2"): (2, 15, 2.0),
}
# (teacher, student) -> (T_b, w): the LS log names for MLKD+LS where they are not (2, 9)
MLKD_PAIRS: Dict[Tuple[str, str], Tuple[float, float]] = {
    ("vgg13", "vgg8"): (2, 6), ("resnet32x4", "ShuffleV2"): (2, 6), ("vgg13", "MobileNetV2"): (2, 6),
}
KD_DEFAULT = (2, 9)  # the LS repository's KD defaults (T 2, KD weight 9)
DKD_DEFAULT = (2, 9, 8.0)


@register_addon
class LogitStandardization:
    """``--logit_stand``: sets the method's logit map to :func:`standardize` (see the module docstring)."""

    name = "logit_stand"
    attach_order = 0  # changes the method's terms: before wrappers such as milestone checking
    run_suffix = "_ls"
    flag = "--logit_stand"
    defaults: dict = {}  # its defaults depend on the method and the pair: defaults_for
    student_features = teacher_features = None  # it changes logits only
    options = (Option("logit_stand", str2bool, False, "standardise (z-score) the student's and the teacher's logits "
                      "before the temperature in the distillation terms (LS, CVPR 2024; kd, checkpointkd, dkd, mlkd)",
                      group="logit standardization (--logit_stand)"),)

    @classmethod
    def options_type(cls) -> type:
        return options_type("LogitStandardizationOptions", cls.options)

    @classmethod
    def select_options(cls, values):
        return cls.options_type()(logit_stand=values.logit_stand)

    @classmethod
    def enabled(cls, values) -> bool:
        return bool(values.logit_stand)

    @classmethod
    def refusal(cls, method_cls) -> Optional[str]:
        return softening_refusal(cls.flag, "standardises the logits a method softens with a temperature", method_cls)

    @classmethod
    def defaults_for(cls, method_cls, teacher: Optional[str], student: str) -> dict:
        pair = (teacher, student)
        if method_cls.name == "dkd":
            t, w, beta = DKD_PAIRS.get(pair, DKD_DEFAULT)
            return {"kd_T": float(t), "dkd_alpha": 1.0 * w, "dkd_beta": beta * w}
        if method_cls.name == "kd":
            t, w = KD_PAIRS.get(pair, KD_DEFAULT)
            return {"kd_T": float(t), "gamma": 0.1, "alpha": float(w), "beta": 0.0}
        if method_cls.name == "mlkd":
            # MLKD+LS ran on the LS repository's MLKD configs: MLKD's long recipe (480 epochs)
            t, w = MLKD_PAIRS.get(pair, KD_DEFAULT)
            return {**method_cls.recipes["long"](teacher, student), "kd_T": float(t), "gamma": 0.1, "alpha": 0.0,
                    "beta": float(w)}
        return {}

    @classmethod
    def attach(cls, distiller: Distiller, ctx: DistillContext) -> Distiller:
        distiller.logit_transform = standardize
        return distiller
