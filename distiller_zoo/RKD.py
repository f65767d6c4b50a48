"""Park et al. 2019, "Relational Knowledge Distillation" (distance + angle terms)."""
import torch
import torch.nn as nn
import torch.nn.functional as F

from helper.util import at_least_float32

from .base import Distiller, POST, register


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

    @staticmethod
    def _off_diagonal(d):
        """The off-diagonal entries of a square matrix, row by row, as one contiguous vector."""
        n = d.shape[0]
        return d.reshape(-1)[1:].reshape(n - 1, n + 1)[:, :n].reshape(-1)

    def _normalised_distances(self, e):
        d = self.pdist(e, squared=False)
        # RepDistiller divides by d[d > 0].mean(). The off-diagonal distances are at least sqrt(eps) > 0 and
        # the diagonal is 0, so that selection is exactly the off-diagonal entries in row order: taken here
        # without a boolean index (whose result size would be read back to the host, a sync per step), and
        # averaged in the same order, so the value is bit for bit the reference's.
        return d / self._off_diagonal(d).mean()

    @staticmethod
    def _angles(e):
        diff = F.normalize(e[None, :, :] - e[:, None, :], p=2, dim=2)  # [j, i] = e_i - e_j
        return torch.bmm(diff, diff.transpose(1, 2)).reshape(-1)

    def forward(self, f_s, f_t):
        s = at_least_float32(f_s).reshape(f_s.shape[0], -1)
        t = at_least_float32(f_t).reshape(f_t.shape[0], -1)
        with torch.no_grad():
            t_dist = self._normalised_distances(t)
            t_angle = self._angles(t)
        loss_d = F.smooth_l1_loss(self._normalised_distances(s), t_dist)
        loss_a = F.smooth_l1_loss(self._angles(s), t_angle)
        return self.w_d * loss_d + self.w_a * loss_a


@register("rkd")
class RKD(Distiller):
    """RKD on the pooled features ``feat[-1]``."""

    student_features = teacher_features = POST
    defaults = {"gamma": 1.0, "alpha": 0.0, "beta": 1.0}

    def __init__(self, ctx):
        super().__init__(ctx)
        self.criterion = RKDLoss(w_d=25, w_a=50)

    def method_loss(self, out_s, out_t, batch, epoch):
        return self.criterion(out_s.feats[-1], out_t.feats[-1].detach())
