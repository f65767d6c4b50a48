"""Zagoruyko & Komodakis 2017, "Paying More Attention to Attention" (activation-based AT)."""
import torch
import torch.nn as nn
import torch.nn.functional as F

from helper.util import at_least_float32

from .base import Distiller, POST, register


def _pool_to_common_height(f_s, f_t):
    """Average-pool the taller map down to the other's height.

    RepDistiller pools to a square (H, H) output, i.e. it assumes square maps; kept as is.
    """
    h_s, h_t = f_s.shape[2], f_t.shape[2]
    if h_s > h_t:
        f_s = F.adaptive_avg_pool2d(f_s, (h_t, h_t))
    elif h_t > h_s:
        f_t = F.adaptive_avg_pool2d(f_t, (h_s, h_s))
    return f_s, f_t


class Attention(nn.Module):
    """Attention transfer on a list of feature-map pairs; returns one loss per pair.

    The attention map is the channel mean of ``f**p`` (p=2 in practice), flattened and
    L2-normalised per sample. The per-pair loss is the *mean* squared difference over batch and
    positions (hence RepDistiller's large weight ``-b 1000``).
    """

    def __init__(self, p=2):
        super().__init__()
        self.p = p

    def forward(self, g_s, g_t):
        return [self.at_loss(at_least_float32(f_s), at_least_float32(f_t)) for f_s, f_t in zip(g_s, g_t)]

    def at(self, f):
        amap = f.pow(self.p).mean(dim=1).reshape(f.shape[0], -1)
        return F.normalize(amap, p=2, dim=1)

    def at_loss(self, f_s, f_t):
        f_s, f_t = _pool_to_common_height(f_s, f_t)
        return torch.mean((self.at(f_s) - self.at(f_t)) ** 2)


@register("attention")
class AT(Distiller):
    """AT on the intermediate maps ``feat[1:-1]``, losses summed over the stages."""

    student_features = teacher_features = POST
    defaults = {"gamma": 1.0, "alpha": 0.0, "beta": 1000.0}

    def __init__(self, ctx):
        super().__init__(ctx)
        self.criterion = Attention(p=2)

    def method_loss(self, out_s, out_t, batch, epoch):
        g_t = [f.detach() for f in out_t.feats[1:-1]]
        return sum(self.criterion(out_s.feats[1:-1], g_t))
