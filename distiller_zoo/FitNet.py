"""Romero et al. 2015, "FitNets: Hints for Thin Deep Nets" (single-stage variant, as in RepDistiller)."""
import torch.nn as nn
import torch.nn.functional as F

from helper.util import at_least_float32
from models.util import ConvReg

from helper.option import Option

from .base import Distiller, POST, register


class HintLoss(nn.Module):
    """Mean squared error between the regressed student hint and the teacher feature."""

    def forward(self, f_s, f_t):
        return F.mse_loss(at_least_float32(f_s), at_least_float32(f_t))


@register("hint")
class FitNet(Distiller):
    """Hint on ``feat[--hint_layer]`` (default 2) through a trainable :class:`ConvReg`.

    RepDistiller trains the hint jointly with the task (no separate hint-pretraining stage).
    Reproduced quirk: the regressor ends in a ReLU, while WRN features are taken before their
    BN-ReLU and can be negative, so for WRN teachers the hint can never be matched exactly.
    """

    student_features = teacher_features = POST
    defaults = {"gamma": 1.0, "alpha": 0.0, "beta": 100.0}
    options = Distiller.options + (
        Option("hint_layer", int, 2, "which feature of the student and the teacher the hint matches",
               choices=[0, 1, 2, 3, 4]),)

    def __init__(self, ctx):
        super().__init__(ctx)
        self.hint_layer = int(ctx.options.hint_layer)
        n = min(len(ctx.feat_s), len(ctx.feat_t))
        # a hint is regressed by a conv, so only feature maps qualify (the last feature is the pooled vector)
        maps = [i for i in range(n) if ctx.feat_s[i].dim() == 4 and ctx.feat_t[i].dim() == 4]
        if not -n <= self.hint_layer < n or self.hint_layer % n not in maps:
            what = (f"is out of range ({n} features)" if not -n <= self.hint_layer < n
                    else "is the pooled feature vector, not a feature map")
            raise ValueError(f"--hint_layer {self.hint_layer} {what}; this student's feature maps are "
                             f"--hint_layer {maps[0]} to {maps[-1]}")
        s_shape = ctx.feat_s[self.hint_layer].shape
        t_shape = ctx.feat_t[self.hint_layer].shape
        self.regressor = ConvReg(s_shape, t_shape).to(ctx.device)
        self.criterion = HintLoss()

    def method_loss(self, out_s, out_t, batch, epoch):
        h = self.hint_layer
        return self.criterion(self.regressor(out_s.feats[h]), out_t.feats[h].detach())
