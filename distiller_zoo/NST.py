"""Huang & Wang 2017, "Like What You Like: Knowledge Distill via Neuron Selectivity Transfer"."""
import torch.nn as nn
import torch.nn.functional as F

from helper.util import at_least_float32

from .base import Distiller, POST, register


class NSTLoss(nn.Module):
    """Squared MMD with the polynomial kernel ``k(a, b) = (a . b)^2`` between channel responses.

    Each channel's spatial response is flattened and L2-normalised; the taller map is first
    average-pooled to the other's height (square output, as in RepDistiller). Returns one loss
    per pair: ``mean K(t, t) + mean K(s, s) - 2 mean K(s, t)``, the teacher-only term detached.
    """

    def forward(self, g_s, g_t):
        return [self.nst_loss(at_least_float32(f_s), at_least_float32(f_t)) for f_s, f_t in zip(g_s, g_t)]

    @staticmethod
    def poly_kernel(a, b):
        """(B, Ca, N) x (B, Cb, N) -> (B, Cb, Ca) squared dot products."""
        return (b @ a.transpose(1, 2)) ** 2

    def nst_loss(self, f_s, f_t):
        h_s, h_t = f_s.shape[2], f_t.shape[2]
        if h_s > h_t:
            f_s = F.adaptive_avg_pool2d(f_s, (h_t, h_t))
        elif h_t > h_s:
            f_t = F.adaptive_avg_pool2d(f_t, (h_s, h_s))
        s = F.normalize(f_s.reshape(f_s.shape[0], f_s.shape[1], -1), dim=2)
        t = F.normalize(f_t.reshape(f_t.shape[0], f_t.shape[1], -1), dim=2)
        return (self.poly_kernel(t, t).mean().detach() + self.poly_kernel(s, s).mean()
                - 2.0 * self.poly_kernel(s, t).mean())


@register("nst")
class NST(Distiller):
    """NST on the intermediate maps ``feat[1:-1]``, losses summed over the stages."""

    student_features = teacher_features = POST
    defaults = {"gamma": 1.0, "alpha": 0.0, "beta": 50.0}

    def __init__(self, ctx):
        super().__init__(ctx)
        self.criterion = NSTLoss()

    def method_loss(self, out_s, out_t, batch, epoch):
        g_t = [f.detach() for f in out_t.feats[1:-1]]
        return sum(self.criterion(out_s.feats[1:-1], g_t))
