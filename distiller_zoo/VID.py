"""Ahn et al. 2019, "Variational Information Distillation for Knowledge Transfer"."""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from helper.util import at_least_float32

from .base import Distiller, POST, register


class VIDLoss(nn.Module):
    """Gaussian negative log-likelihood of the teacher map under a regressed student mean.

    The mean comes from a bias-free 1x1 conv regressor (in -> mid -> out, ReLU between); the
    per-channel variance is ``softplus(log_scale) + eps``, with ``log_scale`` a learned parameter
    initialised so that the variance starts at ``init_pred_var``. The taller map is
    average-pooled to the other's height first (square output, as in RepDistiller).
    The loss is the mean over all elements of ``0.5 * ((mu - t)^2 / var + log var)``.
    """

    def __init__(self, num_input_channels, num_mid_channel, num_target_channels,
                 init_pred_var=5.0, eps=1e-5):
        super().__init__()
        self.regressor = nn.Sequential(
            nn.Conv2d(num_input_channels, num_mid_channel, kernel_size=1, bias=False),
            nn.ReLU(),
            nn.Conv2d(num_mid_channel, num_mid_channel, kernel_size=1, bias=False),
            nn.ReLU(),
            nn.Conv2d(num_mid_channel, num_target_channels, kernel_size=1, bias=False),
        )
        # inverse softplus, so that softplus(log_scale) + eps == init_pred_var at the start
        init = math.log(math.expm1(init_pred_var - eps))
        self.log_scale = nn.Parameter(torch.full((num_target_channels,), init))
        self.eps = eps

    def forward(self, input, target):
        input, target = at_least_float32(input), at_least_float32(target)
        h_s, h_t = input.shape[2], target.shape[2]
        if h_s > h_t:
            input = F.adaptive_avg_pool2d(input, (h_t, h_t))
        elif h_t > h_s:
            target = F.adaptive_avg_pool2d(target, (h_s, h_s))
        mean = self.regressor(input)
        var = (F.softplus(self.log_scale) + self.eps).reshape(1, -1, 1, 1)
        nll = 0.5 * ((mean - target) ** 2 / var + torch.log(var))
        return nll.mean()


@register("vid")
class VID(Distiller):
    """One VIDLoss per intermediate pair ``feat[1:-1]``, built as VIDLoss(C_s, C_t, C_t), summed."""

    student_features = teacher_features = POST
    defaults = {"gamma": 1.0, "alpha": 0.0, "beta": 1.0}

    def __init__(self, ctx):
        super().__init__(ctx)
        pairs = zip(ctx.feat_s[1:-1], ctx.feat_t[1:-1])
        self.vid_losses = nn.ModuleList(
            [VIDLoss(s.shape[1], t.shape[1], t.shape[1]) for s, t in pairs]).to(ctx.device)

    def method_loss(self, out_s, out_t, batch, epoch):
        pairs = zip(out_s.feats[1:-1], out_t.feats[1:-1], self.vid_losses)
        return sum(crit(f_s, f_t.detach()) for f_s, f_t, crit in pairs)
