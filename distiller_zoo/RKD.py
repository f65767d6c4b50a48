"""Park et al. 2019, "Relational Knowledge Distillation" (distance + angle terms)."""
import torch
import torch.nn as nn
import torch.nn.functional as F

from .base import Distiller, register


class RKDLoss(nn.Module):
    """``w_d * smoothL1(distances) + w_a * smoothL1(angles)`` over the batch.

    Distances: pairwise Euclidean distances, each divided by the mean of the non-zero ones.
    Angles: for every triple (i, j, k) the cosine between ``e_i - e_j`` and ``e_k - e_j``
    (all B^3 entries, degenerate ones included as zeros). The teacher side carries no gradient.
    """

    def __init__(self, w_d=25, w_a=50):
        super().__init__()
        self.w_d = w_d
        self.w_a = w_a

    @staticmethod
    def pdist(e, squared=False, eps=1e-12):
        sq = (e * e).sum(dim=1)
        d2 = (sq[:, None] + sq[None, :] - 2.0 * (e @ e.t())).clamp(min=eps)
        d = d2 if squared else d2.sqrt()
        # zero the diagonal without an in-place write on a tensor autograd still needs
        return d * (1.0 - torch.eye(len(e), dtype=d.dtype, device=d.device))

    def _normalised_distances(self, e):
        d = self.pdist(e, squared=False)
        return d / d[d > 0].mean()

    @staticmethod
    def _angles(e):
        diff = F.normalize(e[None, :, :] - e[:, None, :], p=2, dim=2)  # [j, i] = e_i - e_j
        return torch.bmm(diff, diff.transpose(1, 2)).reshape(-1)

    def forward(self, f_s, f_t):
        s = f_s.reshape(f_s.shape[0], -1)
        t = f_t.reshape(f_t.shape[0], -1)
        with torch.no_grad():
            t_dist = self._normalised_distances(t)
            t_angle = self._angles(t)
        loss_d = F.smooth_l1_loss(self._normalised_distances(s), t_dist)
        loss_a = F.smooth_l1_loss(self._angles(s), t_angle)
        return self.w_d * loss_d + self.w_a * loss_a


@register("rkd")
class RKD(Distiller):
    """RKD on the pooled features ``feat[-1]``."""

    needs_feats = True
    default_weights = (1.0, 0.0, 1.0)

    def __init__(self, ctx):
        super().__init__(ctx)
        self.criterion = RKDLoss(w_d=25, w_a=50)

    def method_loss(self, out_s, out_t, batch, epoch):
        return self.criterion(out_s.feats[-1], out_t.feats[-1].detach())
