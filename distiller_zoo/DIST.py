"""Huang et al. 2022, "Knowledge Distillation from a Stronger Teacher" (NeurIPS), as in hunto/image_classification_sota."""
import torch
import torch.nn as nn
import torch.nn.functional as F

from helper.option import Option
from helper.util import at_least_float32

from .base import Distiller, register

# the reference adds this to the product of the two norms (not to each norm, as F.cosine_similarity does)
PEARSON_EPS = 1e-8


def pearson_correlation(a: torch.Tensor, b: torch.Tensor, dim: int) -> torch.Tensor:
    """Pearson correlation of ``a`` and ``b`` along ``dim``: the cosine similarity of the centred vectors."""
    a_centred = a - a.mean(dim=dim, keepdim=True)
    b_centred = b - b.mean(dim=dim, keepdim=True)
    inner = (a_centred * b_centred).sum(dim=dim)
    return inner / (a_centred.norm(dim=dim) * b_centred.norm(dim=dim) + PEARSON_EPS)


def inter_class_relation(y_s: torch.Tensor, y_t: torch.Tensor) -> torch.Tensor:
    """``1 - mean_b rho(Y_s[b, :], Y_t[b, :])``: one correlation per sample, over the classes."""
    return 1.0 - pearson_correlation(y_s, y_t, dim=1).mean()


def intra_class_relation(y_s: torch.Tensor, y_t: torch.Tensor) -> torch.Tensor:
    """``1 - mean_c rho(Y_s[:, c], Y_t[:, c])``: one correlation per class, over the batch (the transposed
    probability matrices)."""
    return 1.0 - pearson_correlation(y_s, y_t, dim=0).mean()


class DISTLoss(nn.Module):
    """``beta * tau^2 * L_inter + gamma * tau^2 * L_intra`` on ``softmax(z / tau)`` of both sides.

    Reproduced from the reference: tau^2 multiplies both terms (tau 4 on CIFAR gives a factor 16), and the 1e-8
    is added to the product of the norms. The intra term depends on which samples share the batch: with two
    samples any two columns correlate +-1, and with one sample every centred column is zero, so rho is 0 and
    the term is tau^2.
    """

    def __init__(self, beta=1.0, gamma=1.0, tau=1.0):
        super().__init__()
        self.beta = beta
        self.gamma = gamma
        self.tau = tau

    def terms(self, z_s: torch.Tensor, z_t: torch.Tensor):
        """(tau^2 * L_inter, tau^2 * L_intra), unweighted."""
        z_s, z_t = at_least_float32(z_s), at_least_float32(z_t)
        tau = self.tau
        y_s = F.softmax(z_s / tau, dim=1)
        y_t = F.softmax(z_t / tau, dim=1)
        return tau * tau * inter_class_relation(y_s, y_t), tau * tau * intra_class_relation(y_s, y_t)

    def forward(self, z_s: torch.Tensor, z_t: torch.Tensor) -> torch.Tensor:
        inter, intra = self.terms(z_s, z_t)
        return self.beta * inter + self.gamma * intra


DIST_GROUP = "DIST (--distill dist)"


@register("dist")
class DIST(Distiller):
    """DIST on the logits; the loss is the ``kd`` term. The CIFAR recipe (dist_cifar.yaml) is CE + 2 * DIST at
    tau 4, i.e. ``-r 1 -a 0 -b 2``; the ImageNet one uses tau 1."""

    defaults = {"gamma": 1.0, "alpha": 0.0, "beta": 2.0}
    options = Distiller.options + (
        Option("dist_beta", float, 1.0, "DIST weight of the inter-class (per-sample) relation term", group=DIST_GROUP),
        Option("dist_gamma", float, 1.0, "DIST weight of the intra-class (per-class, over the batch) relation term",
               group=DIST_GROUP),
        Option("dist_tau", float, 4.0, "DIST temperature of both softmaxes (its square scales both terms)",
               group=DIST_GROUP),
    )

    def __init__(self, ctx):
        super().__init__(ctx)
        opt = ctx.options
        self.criterion = DISTLoss(beta=float(opt.dist_beta), gamma=float(opt.dist_gamma), tau=float(opt.dist_tau))

    def method_loss(self, out_s, out_t, batch, epoch):
        return self.criterion(out_s.logits, out_t.logits.detach())
