"""Peng et al. 2019, "Correlation Congruence for Knowledge Distillation", as shipped by RepDistiller."""
import torch.nn as nn

from helper.util import at_least_float32
from models.util import LinearEmbed

from .base import FEAT_DIM, Distiller, POST, register


class Correlation(nn.Module):
    """RepDistiller's CC loss (code the CC authors sent to RepDistiller), reproduced as is.

    It is *not* the paper's correlation-congruence matrix: with ``d_i = |e_s,i - e_t,i|`` it
    returns ``mean_i <d_i, d_{i+1}>`` over consecutive samples of the batch (an MMD-like
    first-order surrogate, RepDistiller issues #15/#18). It needs a batch of at least 2.
    """

    def forward(self, f_s, f_t):
        d = (at_least_float32(f_s) - at_least_float32(f_t)).abs()
        return (d[1:] * d[:-1]).sum(dim=1).mean()


@register("correlation")
class CC(Distiller):
    """CC on the pooled features ``feat[-1]``, each side through its own trainable LinearEmbed.

    As in RepDistiller both embeddings (the teacher's included) are optimised with the student.
    """

    student_features = teacher_features = POST
    defaults = {"gamma": 1.0, "alpha": 0.0, "beta": 0.02}
    options = Distiller.options + (FEAT_DIM,)

    def __init__(self, ctx):
        super().__init__(ctx)
        feat_dim = int(ctx.options.feat_dim)
        self.embed_s = LinearEmbed(ctx.feat_s[-1].shape[1], feat_dim).to(ctx.device)
        self.embed_t = LinearEmbed(ctx.feat_t[-1].shape[1], feat_dim).to(ctx.device)
        self.criterion = Correlation()

    def method_loss(self, out_s, out_t, batch, epoch):
        return self.criterion(self.embed_s(out_s.feats[-1]), self.embed_t(out_t.feats[-1].detach()))
