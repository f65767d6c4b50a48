"""Distillation methods: RepDistiller-compatible loss classes plus one registered Distiller per method.

Importing this package imports every module in it, so a method file dropped here registers itself (a new method
is one file: its class, options and defaults); ``build_distiller(name, ctx)`` builds one. The names below are
RepDistiller's loss classes and this toolkit's methods, re-exported for ``from distiller_zoo import ...``.
"""
import importlib
import pkgutil

from .base import (ADDONS, POST, PRE, REGISTRY, Batch, DistillContext, Distiller, Outputs, available,  # noqa: F401
                   build_distiller, kd_kl, register, register_addon)
from .KD import KD, DistillKL  # noqa: F401
from .FitNet import FitNet, HintLoss  # noqa: F401
from .AT import AT, Attention  # noqa: F401
from .SP import SP, Similarity  # noqa: F401
from .CC import CC, Correlation  # noqa: F401
from .VID import VID, VIDLoss  # noqa: F401
from .RKD import RKD, RKDLoss  # noqa: F401
from .PKT import PKT, PKTDistiller  # noqa: F401
from .NST import NST, NSTLoss  # noqa: F401
from .KDSVD import KDSVD, KDSVDDistiller  # noqa: F401
from .DKD import DKD, DKDLoss  # noqa: F401
from .AB import AB, ABLoss  # noqa: F401
from .FT import FT, FactorTransfer  # noqa: F401
from .FSP import FSP, FSPDistiller  # noqa: F401
from .CRD import CRD  # noqa: F401
from .ICKD import ICKD, ickd_loss  # noqa: F401
from .KDrefine import KDrefine, normalize_logits  # noqa: F401
from .milestone import MilestoneChecking, milestone_loss  # noqa: F401
from .BYOT import BYOT, byot_terms  # noqa: F401
from .CheckpointKD import CheckpointKD  # noqa: F401

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
