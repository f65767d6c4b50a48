"""Yang et al. 2023, "From Knowledge Distillation to Self-Knowledge Distillation: A Unified Approach with Normalized
Loss and Customized Soft Labels" (NKD, ICCV), as in yzd-v/cls_KD."""
import torch
import torch.nn as nn
import torch.nn.functional as F

from helper.option import Option
from helper.util import at_least_float32

from .base import Distiller, register


def non_target_columns(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``logits`` without each row's target column (B x (C-1), the other classes in their order).

    A gather rather than boolean-mask indexing: the mask's size would be read back to the host on every call.
    """
    num_others = logits.shape[1] - 1
    columns = torch.arange(num_others, device=logits.device).unsqueeze(0)
    # columns at or after the target shift right by one to skip it
    index = columns + (columns >= target.unsqueeze(1)).long()
    return logits.gather(1, index)


class NKDLoss(nn.Module):
    """``L_t + L_nt``: the normalized target and non-target parts.

    * ``L_t = -mean_b sg(softmax(z_t)_y) * log softmax(z_s)_y``; at temperature 1 whatever ``T`` is (as in the
      reference).
    * ``L_nt = -gamma * T^2 * mean_b sum_{c != y} softmax(z_t^{-y} / T)_c * log softmax(z_s^{-y} / T)_c`` with
      the target column removed before the softmax, i.e. renormalised over the C-1 other classes. It is a
      cross-entropy, so its minimum is the teacher's non-target entropy, not 0.

    The reference takes the log of a softmax; ``log_softmax`` is the same value without the underflow to -inf.
    """

    def __init__(self, T=1.0, gamma=1.5):
        super().__init__()
        self.T = T
        self.gamma = gamma

    def target_term(self, z_s, z_t, target):
        log_p_s = F.log_softmax(z_s, dim=1).gather(1, target.unsqueeze(1))
        p_t = F.softmax(z_t, dim=1).gather(1, target.unsqueeze(1)).detach()
        return -(p_t * log_p_s).sum() / z_s.shape[0]

    def non_target_term(self, z_s, z_t, target):
        T = self.T
        log_q_s = F.log_softmax(non_target_columns(z_s, target) / T, dim=1)
        q_t = F.softmax(non_target_columns(z_t, target) / T, dim=1)
        return -self.gamma * T * T * (q_t * log_q_s).sum() / z_s.shape[0]

    def forward(self, z_s, z_t, target):
        z_s, z_t = at_least_float32(z_s), at_least_float32(z_t)
        if target.dim() > 1:
            # a score or one-hot label: the reference takes its argmax
            target = target.argmax(dim=1)
        return self.target_term(z_s, z_t, target) + self.non_target_term(z_s, z_t, target)


NKD_GROUP = "NKD (--distill nkd)"


@register("nkd")
class NKD(Distiller):
    """NKD on the logits and labels; the loss is the ``kd`` term (CE + NKD: ``-r 1 -a 0 -b 1``).

    The reference has ImageNet configs only (T 1, gamma 1.5, the defaults here); CIFAR-100 settings are not in
    it.
    """

    defaults = {"gamma": 1.0, "alpha": 0.0, "beta": 1.0}
    options = Distiller.options + (
        Option("nkd_T", float, 1.0, "NKD temperature of the non-target part (the target part always uses 1)",
               group=NKD_GROUP),
        Option("nkd_gamma", float, 1.5, "NKD weight of the non-target part", group=NKD_GROUP),
    )

    def __init__(self, ctx):
        super().__init__(ctx)
        opt = ctx.options
        self.criterion = NKDLoss(T=float(opt.nkd_T), gamma=float(opt.nkd_gamma))

    def method_loss(self, out_s, out_t, batch, epoch):
        return self.criterion(out_s.logits, out_t.logits.detach(), batch.y)
