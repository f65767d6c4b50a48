"""Lee et al. 2018, "Self-supervised Knowledge Distillation Using Singular Value Decomposition"."""
import torch
import torch.nn as nn
import torch.nn.functional as F

from helper.util import at_least_float32

from .base import Distiller, POST, register


def _finite_or_zero(x):
    return torch.where(torch.isfinite(x), x, torch.zeros_like(x))


class KDSVD(nn.Module):
    """KD-SVD on a list of feature maps; returns one loss per *consecutive* pair of stages.

    For every stage the map is read as a (H*W) x C matrix per sample and decomposed; the top
    ``k`` right singular vectors of the teacher and the top ``k + 3`` of the student are kept,
    each student candidate is matched (with sign) to the teacher vector it is most aligned to,
    and both are scaled by the teacher's normalised singular values. Between stage i-1 and i an
    RBF ``exp(-(v_i - v_{i-1})^2 / 8)`` is formed over all channel pairs, and the loss is the
    squared student/teacher difference, non-finite entries zeroed, summed and divided by B.
    The first stage contributes no term, so n stages give n - 1 losses.

    Reproduced from RepDistiller (on purpose):

    * the map is reshaped as (B, C, H*H) and transposed, i.e. square maps are assumed; for a
      non-square map that read would be wrong, so this raises ``ValueError`` instead;
    * the kept singular values are L2-normalised over the first ``k`` entries, so with the
      default ``k=1`` the scale factor is identically 1;
    * student and teacher must have the same channel count at every stage (the alignment is a
      C_s x C_t product); :class:`KDSVDDistiller` checks this when it is built.

    mdistiller's port reshapes (B, C*H, W) instead, which gives a different decomposition.
    """

    def __init__(self, k=1):
        super().__init__()
        self.k = k

    def svd(self, feat, n=1):
        if feat.dim() != 4:
            raise ValueError(f"KDSVD needs 4-D feature maps, got shape {tuple(feat.shape)}")
        b, c, h, w = feat.shape
        if h != w:
            raise ValueError(f"KDSVD assumes square maps (RepDistiller reads H*H positions), "
                             f"got {h}x{w}")
        mat = feat.reshape(b, c, h * h).transpose(1, 2)
        u, s, vh = torch.linalg.svd(mat, full_matrices=False)
        u, s, v = _finite_or_zero(u), _finite_or_zero(s), _finite_or_zero(vh.transpose(1, 2))
        if n > 0:
            u = F.normalize(u[:, :, :n], dim=1)
            s = F.normalize(s[:, :n], dim=1)
            v = F.normalize(v[:, :, :n], dim=1)
        return u, s, v

    @staticmethod
    def align_rsv(a, b):
        """Replace each column of ``b`` by the signed column of ``a`` with the largest |cosine|."""
        cos = a.transpose(1, 2) @ b  # (B, n_a, n_b)
        best = cos.abs().amax(dim=1, keepdim=True)
        pick = torch.where(cos.abs() == best, torch.sign(cos), torch.zeros_like(cos))
        return a @ pick, b

    @staticmethod
    def _rbf(v_cur, v_prev):
        gap = v_cur[:, :, None, :] - v_prev[:, None, :, :]
        return torch.exp(-gap.pow(2) / 8.0)

    def forward(self, g_s, g_t):
        losses = []
        prev_s = prev_t = None
        for f_s, f_t in zip(g_s, g_t):
            # torch.linalg.svd has no bf16 kernel (and CUDA autocast does not promote it)
            f_s, f_t = at_least_float32(f_s), at_least_float32(f_t)
            _, sv_t, v_t = self.svd(f_t, self.k)
            _, _, v_s = self.svd(f_s, self.k + 3)
            v_s, v_t = self.align_rsv(v_s, v_t)
            scale = sv_t[:, None, :]
            v_s, v_t = v_s * scale, v_t * scale
            if prev_s is not None:
                sq = (self._rbf(v_s, prev_s) - self._rbf(v_t, prev_t).detach()).pow(2)
                losses.append(_finite_or_zero(sq).sum())
            prev_s, prev_t = v_s, v_t
        bsz = g_s[0].shape[0]
        return [loss / bsz for loss in losses]


@register("kdsvd")
class KDSVDDistiller(Distiller):
    """KD-SVD on the intermediate maps ``feat[1:-1]``, losses summed.

    Not in RepDistiller's scripts; the weights (1, 0, 1) are a neutral default.
    """

    student_features = teacher_features = POST
    defaults = {"gamma": 1.0, "alpha": 0.0, "beta": 1.0}

    def __init__(self, ctx):
        super().__init__(ctx)
        for i, (s, t) in enumerate(zip(ctx.feat_s[1:-1], ctx.feat_t[1:-1]), start=1):
            if s.dim() != 4 or t.dim() != 4:
                raise ValueError(f"kdsvd: feat[{i}] is not a feature map")
            if s.shape[1] != t.shape[1]:
                raise ValueError(f"kdsvd needs equal channel counts, feat[{i}] has "
                                 f"{s.shape[1]} (student) vs {t.shape[1]} (teacher)")
            for name, f in (("student", s), ("teacher", t)):
                if f.shape[2] != f.shape[3]:
                    raise ValueError(f"kdsvd needs square maps, {name} feat[{i}] is "
                                     f"{f.shape[2]}x{f.shape[3]}")
        self.criterion = KDSVD(k=1)

    def method_loss(self, out_s, out_t, batch, epoch):
        g_t = [f.detach() for f in out_t.feats[1:-1]]
        losses = self.criterion(out_s.feats[1:-1], g_t)
        return sum(losses) if losses else out_s.logits.new_zeros(())
