"""Zhao et al. 2022, "Decoupled Knowledge Distillation" (CVPR), as in mdistiller."""
import torch
import torch.nn as nn
import torch.nn.functional as F

from helper.util import at_least_float32

from helper.option import Option

from .base import Distiller, register


def one_hot(target: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``F.one_hot(target, C)`` as ``like``'s dtype; F.one_hot reads the labels' min and max back to the host
    to check them (two syncs per call on a CPU), a scatter checks its indices in the kernel."""
    return torch.zeros_like(like).scatter_(1, target.reshape(-1, 1), 1.0)


class DKDLoss(nn.Module):
    """``alpha * TCKD + beta * NCKD``, optionally scaled by a linear warm-up.

    * TCKD: KL between the binary (target, non-target) distributions at temperature T.
    * NCKD: KL between the distributions over the non-target classes, obtained by subtracting
      1000 from the target logit (after dividing by T) before the softmax.
    Both use RepDistiller's KD reduction: summed, divided by the batch size, times T^2.

    Reproduced from mdistiller: the binary student probabilities are summed from a softmax and
    then logged (no epsilon), and the target class is removed with the -1000 offset rather
    than exactly. ``forward(..., epoch)`` multiplies by ``min(epoch / warmup, 1)``; epochs count
    from 1, so the first epoch uses 1/warmup.
    """

    def __init__(self, alpha=1.0, beta=8.0, T=4.0, warmup=20):
        super().__init__()
        self.alpha = alpha
        self.beta = beta
        self.T = T
        self.warmup = warmup

    def warmup_factor(self, epoch):
        if epoch is None or self.warmup <= 0:
            return 1.0
        if isinstance(epoch, torch.Tensor):
            # the compiled training step passes the epoch as a device scalar (one graph for every epoch)
            return torch.clamp(epoch / float(self.warmup), max=1.0)
        return min(float(epoch) / float(self.warmup), 1.0)

    def tckd(self, y_s, y_t, target, T=None):
        T = self.T if T is None else T
        is_gt = one_hot(target, y_s)

        def binary(logits):
            p = F.softmax(logits / T, dim=1)
            p_gt = (p * is_gt).sum(dim=1, keepdim=True)
            p_rest = (p * (1.0 - is_gt)).sum(dim=1, keepdim=True)
            return torch.cat([p_gt, p_rest], dim=1)

        b_s, b_t = binary(y_s), binary(y_t)
        return F.kl_div(torch.log(b_s), b_t, reduction="sum") * T * T / y_s.shape[0]

    def nckd(self, y_s, y_t, target, T=None):
        T = self.T if T is None else T
        offset = 1000.0 * one_hot(target, y_s)
        log_q_s = F.log_softmax(y_s / T - offset, dim=1)
        q_t = F.softmax(y_t / T - offset, dim=1)
        if isinstance(T, torch.Tensor):
            # --ctkd's tau takes gradients through the teacher side too, and F.kl_div's gradient with respect to
            # its target is NaN where that is exactly 0 (the target class, pushed down by 1000); F.kl_div's
            # terms with the log clamped at the smallest normal number have the limit's gradient there, 0
            log_q_t = q_t.clamp_min(torch.finfo(q_t.dtype).tiny).log()
            kl = (q_t * log_q_t - q_t * log_q_s).sum()
            return kl * T * T / y_s.shape[0]
        return F.kl_div(log_q_s, q_t, reduction="sum") * T * T / y_s.shape[0]

    def forward(self, y_s, y_t, target, epoch=None, T=None):
        """``T``: this call's temperature (a float, or --ctkd's learnable 0-d tensor); None: the one built with."""
        y_s, y_t = at_least_float32(y_s), at_least_float32(y_t)
        loss = self.alpha * self.tckd(y_s, y_t, target, T) + self.beta * self.nckd(y_s, y_t, target, T)
        return self.warmup_factor(epoch) * loss


# (teacher, student) -> beta of mdistiller's configs/cifar100/dkd/*.yaml where it is not the default 8.0
BETA_PAIRS = {("resnet56", "resnet20"): 2.0, ("resnet110", "resnet32"): 2.0, ("vgg13", "vgg8"): 6.0,
              ("vgg13", "MobileNetV2"): 6.0, ("wrn_40_2", "wrn_16_2"): 6.0, ("wrn_40_2", "wrn_40_1"): 6.0}


@register("dkd")
class DKD(Distiller):
    """DKD on the logits; the warmed-up loss is the ``kd`` term (weights 1, 0, 1).

    Options (read with defaults): ``dkd_alpha`` 1.0, ``dkd_beta`` 8.0 (mdistiller's default; its configs use 2.0
    or 6.0 for the pairs of ``BETA_PAIRS``, which are presets for those pairs), ``dkd_warmup`` 20 epochs, and
    the temperature ``kd_T``.
    """

    defaults = {"gamma": 1.0, "alpha": 0.0, "beta": 1.0}
    softens_logits = True
    one_temperature = True
    options = Distiller.options + (
        Option("dkd_alpha", float, 1.0, "DKD target-class weight", group="DKD (--distill dkd)"),
        Option("dkd_beta", float, 8.0, "DKD non-target-class weight", group="DKD (--distill dkd)"),
        Option("dkd_warmup", int, 20, "DKD linear warm-up epochs", group="DKD (--distill dkd)"),
    )

    @classmethod
    def defaults_for(cls, teacher, student):
        beta = BETA_PAIRS.get((teacher, student))
        return {} if beta is None else {"dkd_beta": beta}

    def __init__(self, ctx):
        super().__init__(ctx)
        opt = ctx.options
        self.criterion = DKDLoss(alpha=float(opt.dkd_alpha), beta=float(opt.dkd_beta), T=self.T,
                                 warmup=float(opt.dkd_warmup))

    def method_loss(self, out_s, out_t, batch, epoch):
        logit_s, logit_t = self.distill_logits(out_s.logits, out_t.logits.detach())
        # the temperature at call time: --kd_T, or the learnable one of --ctkd
        return self.criterion(logit_s, logit_t, batch.y, epoch, T=self.T)
