"""Zheng and Yang 2024, "Knowledge Distillation Based on Transformed Teacher Matching" (TTM and WTTM, ICLR), as in
zkxufo/TTM."""
import torch
import torch.nn.functional as F

from helper.option import Option
from helper.util import at_least_float32

from .base import Distiller, register


def transformed_teacher_matching(z_s: torch.Tensor, z_t: torch.Tensor, power: float,
                                 weighted: bool = False) -> torch.Tensor:
    """``mean_b w_b * KL(q_b || softmax(z_s)_b)`` with ``q = softmax(z_t)^power`` renormalised.

    TTM: ``w_b = 1``. WTTM: ``w_b = U_b = sum_c softmax(z_t)_{b,c}^power``, the power sum of the teacher's
    untempered probabilities (a function of the teacher only, hence a constant weight). Reproduced from the
    reference: the student has no temperature and there is no T^2 factor.

    The renormalised power equals ``softmax(power * z_t)`` and ``log U_b = logsumexp(power * log softmax(z_t))``;
    both are computed in that form, so that a class whose probability underflows in float32 still counts.
    """
    z_s, z_t = at_least_float32(z_s), at_least_float32(z_t)
    powered_log_p_t = power * F.log_softmax(z_t.detach(), dim=1)
    q_t = F.softmax(powered_log_p_t, dim=1)
    kl = F.kl_div(F.log_softmax(z_s, dim=1), q_t, reduction="none").sum(dim=1)
    if weighted:
        kl = kl * torch.logsumexp(powered_log_p_t, dim=1).exp()
    return kl.sum() / z_s.shape[0]


TTM_GROUP = "TTM and WTTM (--distill ttm, wttm)"
# one declaration for both methods (the parser refuses two of one name)
TTM_POWER = Option("ttm_l", float, 1.0,
                   "TTM/WTTM exponent gamma of the teacher's probabilities (a teacher-only temperature 1/gamma; "
                   "1 is KD at T 1 without T^2)", group=TTM_GROUP)


@register("ttm")
class TTM(Distiller):
    """TTM on the logits; the loss is the ``kd`` term.

    The reference's ``-b`` weights its main loss as here, but its ``-a`` selects an additional logit loss
    (``--add``); the mapping onto this toolkit is ``-r 1 -a 0 -b beta``. Defaults: the reference README's
    vgg13 -> vgg8 example (``--ttm_l 0.1 -b 45``); per-pair values are not in the reference.
    """

    weighted = False
    defaults = {"gamma": 1.0, "alpha": 0.0, "beta": 45.0, "ttm_l": 0.1}
    options = Distiller.options + (TTM_POWER,)

    def __init__(self, ctx):
        super().__init__(ctx)
        self.power = float(ctx.options.ttm_l)

    def method_loss(self, out_s, out_t, batch, epoch):
        return transformed_teacher_matching(out_s.logits, out_t.logits.detach(), self.power, weighted=self.weighted)


@register("wttm")
class WTTM(TTM):
    """WTTM: TTM with each sample's KL weighted by its teacher power sum ``U_b`` (same options and defaults)."""

    weighted = True
