"""Passalis & Tefas 2018, "Learning Deep Representations with Probabilistic Knowledge Transfer"."""
import torch
import torch.nn as nn

from helper.util import at_least_float32

from .base import Distiller, POST, register


class PKT(nn.Module):
    """KL between cosine-similarity distributions of the batch (teacher || student).

    Vectors are divided by ``norm + eps``; cosine similarities are mapped to [0, 1] by
    ``(c + 1) / 2`` and each row is normalised to sum to 1. The KL terms (with ``eps`` inside the
    log ratio) are *averaged* over all B^2 entries, which is why RepDistiller weights it 30000.
    """

    def forward(self, f_s, f_t):
        return self.cosine_similarity_loss(f_s, f_t)

    @staticmethod
    def _conditional(x, eps):
        unit = x / (x.norm(p=2, dim=1, keepdim=True) + eps)
        unit = torch.where(torch.isnan(unit), torch.zeros_like(unit), unit)
        sim = (unit @ unit.t() + 1.0) / 2.0
        return sim / sim.sum(dim=1, keepdim=True)

    @staticmethod
    def cosine_similarity_loss(output_net, target_net, eps=0.0000001):
        output_net, target_net = at_least_float32(output_net), at_least_float32(target_net)
        p_s = PKT._conditional(output_net, eps)
        p_t = PKT._conditional(target_net, eps)
        return torch.mean(p_t * torch.log((p_t + eps) / (p_s + eps)))


@register("pkt")
class PKTDistiller(Distiller):
    """PKT on the pooled features ``feat[-1]``."""

    student_features = teacher_features = POST
    defaults = {"gamma": 1.0, "alpha": 0.0, "beta": 30000.0}

    def __init__(self, ctx):
        super().__init__(ctx)
        self.criterion = PKT()

    def method_loss(self, out_s, out_t, batch, epoch):
        return self.criterion(out_s.feats[-1], out_t.feats[-1].detach())
