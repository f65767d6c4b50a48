"""Kim et al. 2018, "Paraphrasing Complex Network: Network Compression via Factor Transfer"."""
import torch
import torch.nn as nn
import torch.nn.functional as F

from helper.util import at_least_float32
from models.connectors import Paraphraser, Translator

from .base import Batch, Distiller, Outputs, POST, register


class FactorTransfer(nn.Module):
    """Distance between L2-normalised factor maps.

    A factor map is ``mean_c(f^p1)`` flattened and L2-normalised per sample; the loss is the mean of
    ``|diff|`` (p2 == 1) or ``diff^p2`` over batch and positions. The larger map is first average-pooled
    to the smaller height (square maps, as in RepDistiller).
    """

    def __init__(self, p1: float = 2, p2: float = 1):
        super().__init__()
        self.p1 = p1
        self.p2 = p2

    def forward(self, f_s, f_t):
        f_s, f_t = at_least_float32(f_s), at_least_float32(f_t)
        h_s, h_t = f_s.shape[2], f_t.shape[2]
        if h_s > h_t:
            f_s = F.adaptive_avg_pool2d(f_s, (h_t, h_t))
        elif h_t > h_s:
            f_t = F.adaptive_avg_pool2d(f_t, (h_s, h_s))
        diff = self.factor(f_s) - self.factor(f_t)
        return diff.abs().mean() if self.p2 == 1 else diff.pow(self.p2).mean()

    def factor(self, f):
        return F.normalize(f.pow(self.p1).mean(1).reshape(f.shape[0], -1))


@register("factor")
class FT(Distiller):
    """``--distill factor`` on ``feat[-2]``.

    Init stage: only the paraphraser is trained, to reconstruct the teacher feature (MSE). Main stage: the
    translator's output is matched to the frozen paraphraser's encoding of the teacher feature.
    """

    student_features = teacher_features = POST
    defaults = {"gamma": 1.0, "alpha": 0.0, "beta": 200.0}

    def __init__(self, ctx):
        super().__init__(ctx)
        # RepDistiller (helper/pretrain.py) pre-trains the paraphraser at 0.01 for its resnet*/wrn* students.
        name = ctx.student_name
        self.init_learning_rate = 0.01 if name.startswith("resnet") or name.startswith("wrn") else None
        s_shape = ctx.feat_s[-2].shape
        t_shape = ctx.feat_t[-2].shape
        self.paraphraser = Paraphraser(t_shape)
        self.translator = Translator(s_shape, t_shape)
        self.criterion = FactorTransfer()

    def init_modules(self, student: nn.Module):
        return [self.paraphraser]

    def init_loss(self, out_s: Outputs, out_t: Outputs, batch: Batch) -> torch.Tensor:
        f_t = out_t.feats[-2].detach()
        _, rec = self.paraphraser(f_t)
        return F.mse_loss(rec, f_t)

    def init_lr(self, learning_rate: float) -> float:
        return float(learning_rate) if self.init_learning_rate is None else self.init_learning_rate

    def method_loss(self, out_s: Outputs, out_t: Outputs, batch: Batch, epoch: int) -> torch.Tensor:
        factor_s = self.translator(out_s.feats[-2])
        # The paraphraser is frozen in the main stage (eval mode, not optimised, as RepDistiller), so its
        # graph is not needed.
        if self.paraphraser.training:
            self.paraphraser.eval()
        with torch.no_grad():
            factor_t = self.paraphraser(out_t.feats[-2].detach(), is_factor=True)
        return self.criterion(factor_s, factor_t)

    def trainable_modules(self):
        return [self.translator]
