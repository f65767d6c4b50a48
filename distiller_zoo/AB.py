"""Heo et al. 2019, "Knowledge Transfer via Distillation of Activation Boundaries Formed by Hidden Neurons".

As in RepDistiller the transfer happens only in the init stage (``--init_epochs``): the connector and the
student's feature layers learn the teacher's activation boundaries; the main stage is plain CE (+ ``-a`` KD).
"""
from typing import List

import torch
import torch.nn as nn

from helper.util import at_least_float32
from models.connectors import Connector

from .base import Batch, Distiller, Outputs, PRE, register


class ABLoss(nn.Module):
    """Alternative (margin) L2 loss on pre-activation features, one term per stage.

    Stage i of n gets weight 2^(i-n+1) (the deepest stage weight 1); each term is summed over all elements,
    divided by the batch size and scaled by 3/1000 (RepDistiller's constants). Returns the list of terms.
    """

    def __init__(self, feat_num: int, margin: float = 1.0):
        super().__init__()
        self.w = [2.0 ** (i - feat_num + 1) for i in range(feat_num)]
        self.margin = margin

    def forward(self, g_s, g_t) -> List[torch.Tensor]:
        bsz = g_s[0].shape[0]
        g_s, g_t = [at_least_float32(s) for s in g_s], [at_least_float32(t) for t in g_t]
        return [w * self.boundary_l2(s, t) / bsz / 1000 * 3 for w, s, t in zip(self.w, g_s, g_t)]

    def boundary_l2(self, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        m = self.margin
        # teacher neuron off: push the student below -m; teacher neuron on: push it above +m
        off = ((source > -m) & (target <= 0)).to(source.dtype)
        on = ((source <= m) & (target > 0)).to(source.dtype)
        return ((source + m).pow(2) * off + (source - m).pow(2) * on).sum()


@register("abound")
class AB(Distiller):
    """``--distill abound`` on ``feat[1:-1]`` (pre-activation)."""

    student_features = teacher_features = PRE
    defaults = {"gamma": 1.0, "alpha": 0.0, "beta": 1.0}

    def __init__(self, ctx):
        super().__init__(ctx)
        s_shapes = [f.shape for f in ctx.feat_s[1:-1]]
        t_shapes = [f.shape for f in ctx.feat_t[1:-1]]
        self.connector = Connector(s_shapes, t_shapes)
        self.criterion = ABLoss(len(s_shapes))

    def init_modules(self, student: nn.Module):
        return [self.connector, student.get_feat_modules()]

    def init_loss(self, out_s: Outputs, out_t: Outputs, batch: Batch) -> torch.Tensor:
        g_s = self.connector(out_s.feats[1:-1])
        g_t = [f.detach() for f in out_t.feats[1:-1]]
        return sum(self.criterion(g_s, g_t))

    def trainable_modules(self):
        # RepDistiller freezes the connector after the init stage and the main-stage loss is 0.
        return []
