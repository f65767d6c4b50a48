"""The method contract: one `Distiller` subclass per ``--distill`` value, registered by name.

The training loop (``helper/loops.py``) only talks to this interface:

* ``Distiller(ctx)`` builds the method's extra modules from a :class:`DistillContext`
  (options, student/teacher and the features of one dummy forward). Invalid combinations
  raise ``ValueError`` here, i.e. before any training step.
* ``needs_feats`` / ``needs_preact`` tell the loop how to call the models.
* ``loss(out_s, out_t, batch, epoch)`` returns named terms; the loop weights ``ce`` with
  ``-r``, ``kl`` with ``-a`` and ``kd`` with ``-b`` (RepDistiller's composition).
* ``trainable_modules()`` go into the optimizer next to the student.
* two-stage methods (AB, FT, FSP) override ``init_modules`` / ``init_loss``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

REGISTRY: Dict[str, type] = {}


def register(name: str):
    """Class decorator: make a Distiller selectable as ``--distill name``."""

    def wrap(cls):
        if name in REGISTRY and REGISTRY[name] is not cls:
            raise ValueError(f"distiller '{name}' registered twice")
        cls.name = name
        REGISTRY[name] = cls
        return cls

    return wrap


def available() -> List[str]:
    return sorted(REGISTRY)


@dataclass
class Batch:
    """One training batch: images, labels and their indices in the training set."""

    x: torch.Tensor
    y: torch.Tensor
    index: torch.Tensor


@dataclass
class Outputs:
    """What one model forward produced. ``feats`` is None when the method needs no features."""

    logits: torch.Tensor
    feats: Optional[List[torch.Tensor]] = None


@dataclass
class DistillContext:
    """Everything a method may look at while building its extra modules."""

    opt: Any
    student: nn.Module
    teacher: Optional[nn.Module]
    feat_s: Optional[List[torch.Tensor]] = None  # features of a dummy forward (eval mode)
    feat_t: Optional[List[torch.Tensor]] = None
    train_targets: Optional[torch.Tensor] = None  # labels of the training set, on the device
    num_classes: int = 100
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def n_data(self) -> int:
        return 0 if self.train_targets is None else int(self.train_targets.numel())


def kd_kl(logit_s: torch.Tensor, logit_t: torch.Tensor, T: float) -> torch.Tensor:
    """RepDistiller's KL: summed over classes and batch, divided by the batch size, times T^2."""
    p_s = F.log_softmax(logit_s / T, dim=1)
    p_t = F.softmax(logit_t / T, dim=1)
    return F.kl_div(p_s, p_t, reduction="sum") * (T ** 2) / logit_s.shape[0]


class Distiller(nn.Module):
    """Base class. Subclasses set ``needs_feats``/``needs_preact`` and override ``method_loss``."""

    name: str = ""
    needs_feats: bool = False
    needs_preact: bool = False
    # (gamma, alpha, beta) used for any of -r/-a/-b the user did not give (see helper.options)
    default_weights = (1.0, 0.0, 0.0)

    def __init__(self, ctx: DistillContext):
        super().__init__()
        self.T = float(getattr(ctx.opt, "kd_T", 4))

    # --- main stage -------------------------------------------------------------------
    def method_loss(self, out_s: Outputs, out_t: Outputs, batch: Batch, epoch: int) -> torch.Tensor:
        return out_s.logits.new_zeros(())

    def loss(self, out_s: Outputs, out_t: Optional[Outputs], batch: Batch, epoch: int) -> Dict[str, torch.Tensor]:
        terms = {"ce": F.cross_entropy(out_s.logits, batch.y)}
        if out_t is not None:
            terms["kl"] = kd_kl(out_s.logits, out_t.logits, self.T)
            terms["kd"] = self.method_loss(out_s, out_t, batch, epoch)
        return terms

    def trainable_modules(self) -> List[nn.Module]:
        """Extra modules whose parameters the main-stage optimizer updates (default: all children)."""
        return list(self.children())

    # --- optional init stage (AB, FT, FSP) ---------------------------------------------
    def init_modules(self, student: nn.Module) -> Optional[List[nn.Module]]:
        """Modules trained during ``--init_epochs`` before distillation; None: no init stage."""
        return None

    def init_loss(self, out_s: Outputs, out_t: Outputs, batch: Batch) -> torch.Tensor:
        raise NotImplementedError

    def init_lr(self, opt) -> float:
        return float(opt.learning_rate)


@register("ce")
class CrossEntropyOnly(Distiller):
    """Plain supervised training (teachers, students from scratch): only the ``ce`` term."""

    def loss(self, out_s, out_t, batch, epoch):
        return {"ce": F.cross_entropy(out_s.logits, batch.y)}


def build_distiller(name: str, ctx: DistillContext) -> Distiller:
    if name not in REGISTRY:
        raise ValueError(f"unknown --distill '{name}'; choose one of: {', '.join(available())}")
    return REGISTRY[name](ctx)
