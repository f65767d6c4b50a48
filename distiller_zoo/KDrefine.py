"""KDrefine (Zheng et al.): KD on normalised logits, for re-parameterisable students (``--distill kdrefine``).

Both logit vectors are standardised per sample before any loss: z -> m * (z - mean(z)) / (std(z) + eps),
with the unbiased std over the classes, eps outside the square root, m = ``--logit_multiplier`` (2) and
eps = ``--logit_eps`` (1e-7). The cross-entropy also sees the normalised student logits (as the reference),
so it trains on logits whose per-sample std is fixed at m. The map keeps the argmax, so evaluation uses the
raw outputs. The method adds no trainable module; the students it is meant for (represnet*, repvgg8,
repmobilenetv2 with ``--blocktype AMBB``) are fused with ``convert.py`` after training.

Recipe defaults: ``-r 0.1 -a 0.9 -b 0`` and a base learning rate of 0.01 when ``--learning_rate`` is not
given (KDrefine's train_student default, for every student).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from helper.option import Option

from .base import Distiller, kd_kl, register


def normalize_logits(z: torch.Tensor, multiplier: float = 2.0, eps: float = 1e-7) -> torch.Tensor:
    """``multiplier * (z - mean) / (unbiased std + eps)`` over dim 1, differentiable in ``z``."""
    if z.dtype in (torch.float16, torch.bfloat16):
        z = z.float()  # half-precision logits (autocast) would make the std too coarse
    mean = z.mean(dim=1, keepdim=True)
    std = z.std(dim=1, keepdim=True)  # unbiased (n - 1), torch's default, as KDrefine
    return multiplier * (z - mean) / (std + eps)


@register("kdrefine")
class KDrefine(Distiller):

    # KDrefine's train_student trains every student at lr 0.01
    defaults = {"gamma": 0.1, "alpha": 0.9, "beta": 0.0, "learning_rate": 0.01}
    options = Distiller.options + (
        Option("logit_multiplier", float, 2.0, "normalised logits are m*(z-mean)/(std+eps); KDrefine uses m=2",
               group="KDrefine (--distill kdrefine)"),
        Option("logit_eps", float, 1e-7, "eps added to the unbiased std", group="KDrefine (--distill kdrefine)"),
    )

    def __init__(self, ctx):
        super().__init__(ctx)
        self.multiplier = float(ctx.options.logit_multiplier)
        self.eps = float(ctx.options.logit_eps)

    def normalize(self, z: torch.Tensor) -> torch.Tensor:
        return normalize_logits(z, self.multiplier, self.eps)

    def loss(self, out_s, out_t, batch, epoch):
        z_s = self.normalize(out_s.logits)
        terms = {"ce": F.cross_entropy(z_s, batch.y)}
        if out_t is not None:
            terms["kl"] = kd_kl(z_s, self.normalize(out_t.logits), self.T)
            terms["kd"] = z_s.new_zeros(())
        return terms
