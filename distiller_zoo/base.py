"""The method contract: one `Distiller` subclass per ``--distill`` value, registered by name.

The training loop (``helper/loops.py``) only talks to this interface:

* ``Distiller(ctx)`` builds the method's extra modules from a :class:`DistillContext`
  (options, student/teacher and the features of one dummy forward). Invalid combinations
  raise ``ValueError`` here, i.e. before any training step.
* ``needs_feats`` / ``needs_preact`` tell the loop how to call the models.
* ``loss(out_s, out_t, batch, epoch)`` returns named terms; the loop weights ``ce`` with
  ``-r``, ``kl`` with ``-a`` and ``kd`` with ``-b`` (RepDistiller's composition). The loop calls it through
  ``float32_loss`` (``init_loss`` through ``float32_init_loss``): float32 outputs, autocast off, whatever
  precision the networks ran in.
* ``trainable_modules()`` go into the optimizer next to the student.
* two-stage methods (AB, FT, FSP) override ``init_modules`` / ``init_loss``.
* ``needs_teacher = False`` (self-distillation, e.g. BYOT): train_student.py builds no teacher and the
  loop passes ``out_t=None``.
* ``recipe``: option values the method's reference used (epochs, lr schedule, temperature, ...); they
  replace the toolkit defaults of options the user did not give (``helper.recipe``).
* ``epoch_metrics()``: extra per-epoch numbers (e.g. the accuracy of every exit of a multi-exit
  student) that the loop adds to the epoch's metrics row; called once at the end of each epoch.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from helper.util import at_least_float32

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
    """One training batch: images, labels and their indices in the training set.

    Under torchrun each process holds rows ``shard = (start, stop)`` of a global batch whose indices and
    labels are ``global_index``/``global_y``; methods that draw per-sample randomness (CRD's negatives) draw
    it for the global batch and keep their rows, so that K processes compute what one process would.
    """

    x: torch.Tensor
    y: torch.Tensor
    index: torch.Tensor
    global_index: Optional[torch.Tensor] = None
    global_y: Optional[torch.Tensor] = None
    shard: Optional[Tuple[int, int]] = None


@dataclass
class Outputs:
    """What one model forward produced. ``feats`` is None when the method needs no features."""

    logits: torch.Tensor
    feats: Optional[List[torch.Tensor]] = None


def float32_outputs(out: Optional[Outputs]) -> Optional[Outputs]:
    """``out`` with logits and features in float32 at least; float32 (and float64) tensors are passed through
    as the same objects, so the float32 path is unchanged."""
    if out is None:
        return None
    feats = None if out.feats is None else [at_least_float32(f) for f in out.feats]
    return replace(out, logits=at_least_float32(out.logits), feats=feats)


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
    logit_s, logit_t = at_least_float32(logit_s), at_least_float32(logit_t)
    p_s = F.log_softmax(logit_s / T, dim=1)
    p_t = F.softmax(logit_t / T, dim=1)
    return F.kl_div(p_s, p_t, reduction="sum") * (T ** 2) / logit_s.shape[0]


def kd_kl_teacher_scale(logit_s: torch.Tensor, logit_t: torch.Tensor, T: float) -> torch.Tensor:
    """CheckpointKD's ``teacher_scale`` variant: only the teacher is softened and the factor is T.

    ``T * KL(softmax(z_t / T) || softmax(z_s))`` summed over classes, averaged over the batch
    (``F.kl_div(..., reduction='batchmean') * T`` in the reference).
    """
    logit_s, logit_t = at_least_float32(logit_s), at_least_float32(logit_t)
    p_s = F.log_softmax(logit_s, dim=1)
    p_t = F.softmax(logit_t / T, dim=1)
    return F.kl_div(p_s, p_t, reduction="sum") * T / logit_s.shape[0]


class Distiller(nn.Module):
    """Base class. Subclasses set ``needs_feats``/``needs_preact`` and override ``method_loss``."""

    name: str = ""
    needs_feats: bool = False
    needs_preact: bool = False
    needs_teacher: bool = True
    # the method's reference runs cuDNN deterministically (ICKD); train_student.py applies it on CUDA
    deterministic_cudnn: bool = False
    # (gamma, alpha, beta) used for any of -r/-a/-b the user did not give (see helper.options)
    default_weights = (1.0, 0.0, 0.0)
    # option name -> value, for options not given on the command line (see helper.recipe)
    recipe: Dict[str, Any] = {}

    def __init__(self, ctx: DistillContext):
        super().__init__()
        self.T = float(getattr(ctx.opt, "kd_T", 4))
        self.teacher_scale = bool(getattr(ctx.opt, "teacher_scale", False))

    def kl_term(self, logit_s: torch.Tensor, logit_t: torch.Tensor) -> torch.Tensor:
        """The ``-a`` term: RepDistiller's KL, or CheckpointKD's ``--teacher_scale`` form."""
        if self.teacher_scale:
            return kd_kl_teacher_scale(logit_s, logit_t, self.T)
        return kd_kl(logit_s, logit_t, self.T)

    def epoch_metrics(self) -> Dict[str, float]:
        """Extra numbers for this epoch's metrics row; implementations reset their accumulators here."""
        return {}

    # --- main stage -------------------------------------------------------------------
    def method_loss(self, out_s: Outputs, out_t: Outputs, batch: Batch, epoch: int) -> torch.Tensor:
        return out_s.logits.new_zeros(())

    def loss(self, out_s: Outputs, out_t: Optional[Outputs], batch: Batch, epoch: int) -> Dict[str, torch.Tensor]:
        terms = {"ce": F.cross_entropy(out_s.logits, batch.y)}
        if out_t is not None:
            terms["kl"] = self.kl_term(out_s.logits, out_t.logits)
            terms["kd"] = self.method_loss(out_s, out_t, batch, epoch)
        return terms

    def float32_loss(self, out_s: Outputs, out_t: Optional[Outputs], batch: Batch,
                     epoch: int) -> Dict[str, torch.Tensor]:
        """``loss`` computed in float32 whatever precision the networks ran in (what the training loop calls).

        Under bf16 autocast the losses would otherwise run partly in bf16: CUDA autocast does not promote
        ``linalg_svd`` (KD-SVD raises) and casts ``bmm``/``matmul`` down (ICKD's Gram matrices, RKD's
        distances), so the outputs are upcast and autocast is off inside; the method's own modules
        (regressors, embeddings) run in float32 too. Without autocast and with float32 outputs this is the
        plain ``loss`` call.
        """
        with torch.autocast(out_s.logits.device.type, enabled=False):
            return self.loss(float32_outputs(out_s), float32_outputs(out_t), batch, epoch)

    def trainable_modules(self) -> List[nn.Module]:
        """Extra modules whose parameters the main-stage optimizer updates (default: all children)."""
        return list(self.children())

    # --- optional init stage (AB, FT, FSP) ---------------------------------------------
    def init_modules(self, student: nn.Module) -> Optional[List[nn.Module]]:
        """Modules trained during ``--init_epochs`` before distillation; None: no init stage."""
        return None

    def init_loss(self, out_s: Outputs, out_t: Outputs, batch: Batch) -> torch.Tensor:
        raise NotImplementedError

    def float32_init_loss(self, out_s: Outputs, out_t: Outputs, batch: Batch) -> torch.Tensor:
        """``init_loss`` in float32, autocast off (see :meth:`float32_loss`)."""
        with torch.autocast(out_s.logits.device.type, enabled=False):
            return self.init_loss(float32_outputs(out_s), float32_outputs(out_t), batch)

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
