"""Curriculum temperature (CTKD, Li et al., AAAI 2023; ``--ctkd``): a learnable temperature, trained adversarially.

An add-on to the methods that soften logits with a temperature (kd, checkpointkd, dkd). One scalar parameter theta
(initialised to 1.0) gives ``tau = t_start + t_end * sigmoid(GRL(theta, lambda))``; the gradient-reversal layer is the
identity forward and multiplies the gradient by ``lambda`` (<= 0, no extra minus) backward, so SGD moves theta to
*increase* the distillation loss. ``lambda`` follows a per-epoch curriculum (epoch 1-indexed), cosine by default:
``((cos(pi * min(e, L) / L) + 1) / 2) * (decay_max - decay_min) + decay_min``, 0 -> -1 over L = 10 epochs.

tau replaces ``--kd_T`` in every softening term of the method (``Distiller.T``): both softmaxes and the tau^2 factor, so
gradients reach theta through all three. theta trains with the student in the same SGD (momentum and weight decay
included, as in CTKD's ``trainable_list``) and is saved in the distiller's state dict (``global_temperature.theta``), so
``--resume`` continues it. With dkd, CTKD's reference has no DKD warm-up: ``--ctkd`` makes ``--dkd_warmup`` default to
0 (a flag still wins). The last batch's tau is logged per epoch as ``ctkd_tau``.

Fixed against the reference (spec 1.6): the schedule's defaults are the scripts' values (``--decay_min -1
--decay_loops 10``; the argparse defaults 0 / 0 divide by zero), and the linear schedule (``--cosine_decay 0``)
reaches ``decay_min`` at epoch L, starting from ``decay_max``. The instance-wise temperature is not in the reference
repository and is not offered.
"""
from __future__ import annotations

import math
from typing import Dict, Optional

import torch
import torch.nn as nn

from helper.option import Option, str2bool

from .base import Batch, DistillContext, Distiller, MethodWrapper, Outputs, register_addon, softening_refusal

GROUP = "curriculum temperature (--ctkd)"


class GradientReversal(torch.autograd.Function):
    """Identity forward; backward multiplies the gradient by ``lam`` (CTKD passes lam <= 0, so it reverses)."""

    @staticmethod
    def forward(ctx, x, lam):
        ctx.save_for_backward(torch.as_tensor(lam, dtype=x.dtype, device=x.device))
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        (lam,) = ctx.saved_tensors
        return grad * lam, None


def gradient_reversal(x: torch.Tensor, lam) -> torch.Tensor:
    return GradientReversal.apply(x, lam)


def cosine_lambda(epoch, loops: int, lam_max: float, lam_min: float):
    """CTKD's ``CosineDecay`` at a 1-indexed epoch: ``lam_max`` at 0, ``lam_min`` from epoch ``loops`` on.

    ``epoch``: an int, or the compiled step's 0-d float tensor (then the result is a tensor on its device)."""
    if isinstance(epoch, torch.Tensor):
        e = torch.clamp(epoch, max=float(loops))
        return (torch.cos(math.pi * e / loops) + 1.0) / 2.0 * (lam_max - lam_min) + lam_min
    e = min(float(epoch), float(loops))
    return (math.cos(math.pi * e / loops) + 1.0) / 2.0 * (lam_max - lam_min) + lam_min


def linear_lambda(epoch, loops: int, lam_max: float, lam_min: float):
    """``lam_max + (lam_min - lam_max) * min(e, L) / L``: CTKD's ``LinearDecay`` with its offset and end fixed
    (it ignored ``lam_max`` and clamped at ``L - 1``, never reaching ``lam_min``)."""
    if isinstance(epoch, torch.Tensor):
        e = torch.clamp(epoch, max=float(loops))
    else:
        e = min(float(epoch), float(loops))
    return lam_max + (lam_min - lam_max) * e / loops


class GlobalTemperature(nn.Module):
    """CTKD's ``Global_T``: one scalar theta (0-d, so the loss terms stay 0-d) and the tau it gives."""

    def __init__(self, t_start: float = 1.0, t_end: float = 20.0):
        super().__init__()
        self.theta = nn.Parameter(torch.tensor(1.0))
        self.t_start = float(t_start)
        self.t_end = float(t_end)

    def forward(self, lam) -> torch.Tensor:
        return self.t_start + self.t_end * torch.sigmoid(gradient_reversal(self.theta, lam))


@register_addon
class CurriculumTemperature(MethodWrapper):
    """Wraps a built kd/checkpointkd/dkd and makes its ``T`` the learnable tau (see the module docstring).

    The wrapped method's modules, init stage and state stay its own (``inner.`` in the state dict); theta is
    ``global_temperature.theta``.
    """

    name = "ctkd"
    attach_order = 5  # after LS (which sets the logit map tau then softens), before milestone checking wraps it
    run_suffix = "_ctkd"
    flag = "--ctkd"
    options = Distiller.options + (
        Option("ctkd", str2bool, False, "replace the fixed --kd_T by CTKD's learnable global temperature, trained "
               "adversarially through gradient reversal (AAAI 2023; kd, checkpointkd, dkd)", group=GROUP),
        Option("t_start", float, 1.0, "CTKD: the lowest temperature, tau = t_start + t_end * sigmoid(theta)",
               group=GROUP),
        Option("t_end", float, 20.0, "CTKD: the temperature range above t_start", group=GROUP),
        Option("cosine_decay", int, 1, "CTKD's gradient-reversal strength lambda per epoch: 1 cosine, 0 linear, "
               "from decay_max to decay_min over decay_loops epochs", choices=[0, 1], group=GROUP),
        Option("decay_max", float, 0.0, "CTKD: lambda at epoch 0 (the start of the curriculum)", group=GROUP),
        Option("decay_min", float, -1.0, "CTKD: lambda from epoch decay_loops on (<= 0: the temperature ascends "
               "the distillation loss)", group=GROUP),
        Option("decay_loops", int, 10, "CTKD: epochs over which lambda goes from decay_max to decay_min",
               group=GROUP),
    )

    def __init__(self, inner: Distiller, ctx: DistillContext):
        """``ctx.options``: this add-on's typed options (``CurriculumTemperature.select_options``)."""
        opt = ctx.options
        if int(opt.decay_loops) <= 0:
            raise ValueError(f"--ctkd: --decay_loops must be a positive number of epochs, got {opt.decay_loops}")
        if float(opt.t_start) <= 0 or float(opt.t_end) < 0:
            raise ValueError(f"--ctkd: the temperature needs --t_start > 0 and --t_end >= 0, got {opt.t_start} "
                             f"and {opt.t_end}")
        super().__init__(inner, ctx)
        # still the method it wraps, only its temperature is learnt (as LS leaves it the method)
        self.name = inner.name
        self.global_temperature = GlobalTemperature(opt.t_start, opt.t_end)
        self.schedule = cosine_lambda if int(opt.cosine_decay) else linear_lambda
        self.decay = (int(opt.decay_loops), float(opt.decay_max), float(opt.decay_min))
        self.current_tau: Optional[torch.Tensor] = None
        self.last_tau: Optional[torch.Tensor] = None
        # the wrapped method reads this step's tau wherever it reads T
        inner.temperature = self.step_tau

    def step_tau(self) -> torch.Tensor:
        if self.current_tau is None:
            raise RuntimeError("--ctkd: the temperature is set per step by CurriculumTemperature.loss")
        return self.current_tau

    @property
    def T(self):
        return self.inner.T

    def grl_lambda(self, epoch):
        return self.schedule(epoch, *self.decay)

    @classmethod
    def enabled(cls, values) -> bool:
        return bool(values.ctkd)

    @classmethod
    def refusal(cls, method_cls) -> Optional[str]:
        return softening_refusal(cls.flag, "learns the temperature a method softens its logits with", method_cls,
                                 "one_temperature", "has no such term" if not method_cls.softens_logits
                                 else "softens at several fixed temperatures, not one")

    @classmethod
    def defaults_for(cls, method_cls, teacher: Optional[str], student: str) -> dict:
        # CTKD's DKD runs without mdistiller's 20-epoch warm-up
        return {"dkd_warmup": 0} if method_cls.name == "dkd" else {}

    @classmethod
    def attach(cls, distiller: Distiller, ctx: DistillContext) -> Distiller:
        return cls(distiller, ctx)

    def loss(self, out_s: Outputs, out_t: Optional[Outputs], batch: Batch, epoch) -> Dict[str, torch.Tensor]:
        # one tau per step, from the epoch's lambda; every softening term of the method reads this one
        self.current_tau = self.global_temperature(self.grl_lambda(epoch))
        try:
            terms = self.inner.loss(out_s, out_t, batch, epoch)
        finally:
            tau, self.current_tau = self.current_tau, None
        self.last_tau = tau.detach()
        return terms

    def trainable_modules(self):
        return list(self.inner.trainable_modules()) + [self.global_temperature]

    def epoch_metrics(self):
        metrics = dict(self.inner.epoch_metrics())
        if self.last_tau is not None:
            metrics["ctkd_tau"] = float(self.last_tau)
        return metrics
