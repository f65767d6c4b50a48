"""Hinton et al. 2015, "Distilling the Knowledge in a Neural Network"."""
import torch.nn as nn

from .base import Distiller, kd_kl, register


class DistillKL(nn.Module):
    """KL(student || teacher) at temperature T, RepDistiller's reduction (sum / batch * T^2)."""

    def __init__(self, T):
        super().__init__()
        self.T = T

    def forward(self, y_s, y_t):
        return kd_kl(y_s, y_t, self.T)


@register("kd")
class KD(Distiller):
    """Vanilla KD. As in RepDistiller the KL term is weighted by ``-a`` and the method term is 0."""

    softens_logits = True
    one_temperature = True

    defaults = {"gamma": 0.1, "alpha": 0.9, "beta": 0.0}
