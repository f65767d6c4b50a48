"""Yim et al. 2017, "A Gift from Knowledge Distillation: Fast Optimization, Network Minimization and
Transfer Learning" (flow of solution procedure matrices)."""
from typing import List, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from helper.util import at_least_float32

from .base import Batch, Distiller, Outputs, POST, register


def _hw(shape) -> str:
    return f"{shape[2]}x{shape[3]}"


def _check_alignable(shapes: Sequence, who: str) -> None:
    """Each consecutive pair must be 4-D and reachable by average-pooling the larger map down (no upsampling)."""
    for i, s in enumerate(shapes):
        if len(s) != 4:
            raise ValueError(f"FSP needs 4-D feature maps (N, C, H, W), but {who} feature {i} has shape "
                             f"{tuple(s)}; FSP cannot be used with this model, choose another method "
                             f"(e.g. --distill attention or kd)")
    for i in range(len(shapes) - 1):
        a, b = shapes[i], shapes[i + 1]
        if (a[2] - b[2]) * (a[3] - b[3]) < 0:
            raise ValueError(f"FSP cannot align {who} features {i} ({_hw(a)}) and {i + 1} ({_hw(b)}): one is "
                             f"taller and the other wider, so neither can be average-pooled to the other's "
                             f"grid; choose another student/teacher pair or another method")


class FSP(nn.Module):
    """FSP matrices between consecutive feature maps, compared with a mean squared error.

    G[i] = mean over positions of ``bot_c * top_c'`` (B x C_i x C_{i+1}), after pooling the larger map of a pair
    to the smaller one. ``forward`` returns one loss per pair.

    Raises ``ValueError`` at construction when the student's and teacher's channel counts differ (the FSP
    matrices would have different shapes; RepDistiller's check) or when a pair of maps cannot be aligned.
    A student/teacher difference in resolution alone is fine: the matrices' shapes only depend on channels.

    Deviation: RepDistiller pools to (H, H), which silently assumes square maps; this pools to (H, W) of the
    smaller map, identical for square maps.
    """

    def __init__(self, s_shapes, t_shapes):
        super().__init__()
        if len(s_shapes) != len(t_shapes):
            raise ValueError(f"FSP pairs student and teacher features stage by stage, but the student has "
                             f"{len(s_shapes)} feature maps and the teacher {len(t_shapes)}; choose a pair of the "
                             f"same family (e.g. resnet110 -> resnet20, wrn_40_2 -> wrn_16_2) or another method")
        s_c = [int(s[1]) for s in s_shapes]
        t_c = [int(t[1]) for t in t_shapes]
        if s_c != t_c:
            raise ValueError(f"num of channels not equal (error in FSP): student channels {s_c}, teacher channels "
                             f"{t_c}. FSP compares C_i x C_(i+1) matrices, so every stage needs the same width; "
                             f"choose a pair with equal stage widths (e.g. resnet110 -> resnet20, "
                             f"resnet32x4 -> resnet8x4, vgg13 -> vgg8) or another method")
        _check_alignable(s_shapes, "student")
        _check_alignable(t_shapes, "teacher")

    def forward(self, g_s, g_t) -> List[torch.Tensor]:
        g_s, g_t = [at_least_float32(f) for f in g_s], [at_least_float32(f) for f in g_t]
        return [(s - t).pow(2).mean() for s, t in zip(self.fsp_matrices(g_s), self.fsp_matrices(g_t))]

    @staticmethod
    def fsp_matrices(g) -> List[torch.Tensor]:
        out = []
        for bot, top in zip(g[:-1], g[1:]):
            h = min(bot.shape[2], top.shape[2])
            w = min(bot.shape[3], top.shape[3])
            if bot.shape[2:] != (h, w):
                bot = F.adaptive_avg_pool2d(bot, (h, w))
            if top.shape[2:] != (h, w):
                top = F.adaptive_avg_pool2d(top, (h, w))
            out.append(torch.einsum("bip,bjp->bij", bot.flatten(2), top.flatten(2)) / (h * w))
        return out


@register("fsp")
class FSPDistiller(Distiller):
    """``--distill fsp`` on ``feat[:-1]``. As in RepDistiller the transfer happens only in the init stage
    (student feature layers trained on the FSP loss); the main-stage method term is 0."""

    student_features = teacher_features = POST
    defaults = {"gamma": 1.0, "alpha": 0.0, "beta": 50.0}

    def __init__(self, ctx):
        super().__init__(ctx)
        self.criterion = FSP([f.shape for f in ctx.feat_s[:-1]], [f.shape for f in ctx.feat_t[:-1]])

    def init_modules(self, student: nn.Module):
        return [student.get_feat_modules()]

    def init_loss(self, out_s: Outputs, out_t: Outputs, batch: Batch) -> torch.Tensor:
        return sum(self.criterion(out_s.feats[:-1], [f.detach() for f in out_t.feats[:-1]]))

    def trainable_modules(self):
        return []
