"""Zhang et al. 2020, "Prime-Aware Adaptive Distillation" (PAD-L2, ECCV; ``--distill pad``), as torchdistill's
``PADL2Loss`` and ``VarianceBranch4PAD`` define it.

Two stages, both on the pooled features ``feat[-1]`` of the student (s) and the teacher (t):

1. "L2" (the init stage, ``--init_epochs``): the whole student trained with ``CE + w * MSE_mean(s, t)``,
   w = ``--pad_l2_weight`` 15.
2. PAD-L2 (the main stage, from the stage-1 student): ``-r 1 -a 0 -b 1`` with
   ``L_PAD = mean_b mean_d [ (t - s)^2 / (1e-6 + exp(v)) + v ]``, where v, read as a log-variance, is the output of
   the variance branch ``Linear(D, D) -> BatchNorm1d(D)`` on the student's feature: features the student cannot
   match get a large variance and so a small weight (the "prime" samples a large one).

The variance branch is trained with the student and is saved and resumed with the run's checkpoints (torchdistill
keeps it in a side file that is re-loaded at start if present, so a stale file was silently picked up; not here).
The two features are compared directly, so the pooled widths must be equal (e.g. resnet32x4 -> resnet8x4, 256).

Recipe: torchdistill's official run is ImageNet only (stage 1: 90 epochs, lr 0.2, decay at 30/60; stage 2: 30
epochs at a constant lr 0.002, wd 1e-4); no CIFAR-100 settings were found, so here the stages take RepDistiller's
two-stage layout: ``--init_epochs`` (30) at ``--learning_rate``, then the usual 240-epoch schedule.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from helper.option import Option
from helper.util import at_least_float32

from .base import Batch, Distiller, Outputs, POST, register

PAD_GROUP = "PAD-L2 (--distill pad)"
VARIANCE_EPS = 1e-6  # the reference's, added to exp(v)


def pad_l2_loss(s: torch.Tensor, t: torch.Tensor, log_variance: torch.Tensor) -> torch.Tensor:
    """``mean_b mean_d [(t - s)^2 / (1e-6 + exp(v)) + v]``."""
    s, t, v = at_least_float32(s), at_least_float32(t), at_least_float32(log_variance)
    return ((t - s).pow(2) / (VARIANCE_EPS + torch.exp(v)) + v).mean(dim=1).mean()


def pooled(out: Outputs) -> torch.Tensor:
    return out.feats[-1].flatten(1)


@register("pad")
class PAD(Distiller):
    """PAD-L2 (see the module docstring). Trainable in the main stage: the variance branch; in the init stage:
    the student."""

    student_features = teacher_features = POST
    defaults = {"gamma": 1.0, "alpha": 0.0, "beta": 1.0}
    options = Distiller.options + (
        Option("pad_l2_weight", float, 15.0, "PAD-L2: weight of the MSE between the pooled features in its first "
               "stage (the init stage, next to the CE term)", group=PAD_GROUP),
    )

    def __init__(self, ctx):
        super().__init__(ctx)
        self.l2_weight = float(ctx.options.pad_l2_weight)
        d_s = int(ctx.feat_s[-1].reshape(ctx.feat_s[-1].shape[0], -1).shape[1])
        d_t = int(ctx.feat_t[-1].reshape(ctx.feat_t[-1].shape[0], -1).shape[1])
        if d_s != d_t:
            raise ValueError(f"--distill pad compares the pooled features directly, but the student's has {d_s} "
                             f"dimensions and the teacher's {d_t}; pick a pair of equal widths (e.g. resnet32x4 -> "
                             f"resnet8x4, wrn_40_2 -> wrn_16_2, vgg13 -> vgg8)")
        self.variance_branch = nn.Sequential(nn.Linear(d_s, d_s), nn.BatchNorm1d(d_s))

    # --- stage 1: the init stage -------------------------------------------------------------
    def init_modules(self, student: nn.Module):
        return [student]

    def init_loss(self, out_s: Outputs, out_t: Outputs, batch: Batch) -> torch.Tensor:
        mse = F.mse_loss(at_least_float32(pooled(out_s)), at_least_float32(pooled(out_t).detach()))
        return F.cross_entropy(out_s.logits, batch.y) + self.l2_weight * mse

    # --- stage 2 -----------------------------------------------------------------------------
    def method_loss(self, out_s: Outputs, out_t: Outputs, batch: Batch, epoch: int) -> torch.Tensor:
        s = pooled(out_s)
        if s.shape[0] < 2:
            # BatchNorm has no batch statistics for one sample: no PAD term for this step; the branch stays in the
            # graph with a zero gradient, as DDP expects of every parameter
            return sum(p.sum() for p in self.variance_branch.parameters()) * 0.0
        return pad_l2_loss(s, pooled(out_t).detach(), self.variance_branch(s))

    def trainable_modules(self):
        return [self.variance_branch]
