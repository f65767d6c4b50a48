"""Tung & Mori 2019, "Similarity-Preserving Knowledge Distillation"."""
import torch
import torch.nn as nn
import torch.nn.functional as F

from helper.util import at_least_float32

from .base import Distiller, POST, register


class Similarity(nn.Module):
    """Similarity-preserving loss on a list of feature pairs; returns one loss per pair.

    Each sample's feature is flattened, the B x B Gram matrix is row-wise L2-normalised, and the
    loss is the squared Frobenius distance between the two matrices divided by B^2. As in
    RepDistiller each per-pair loss has shape ``(1,)``, not ``()``.
    """

    def forward(self, g_s, g_t):
        return [self.similarity_loss(at_least_float32(f_s), at_least_float32(f_t)) for f_s, f_t in zip(g_s, g_t)]

    @staticmethod
    def _gram(f):
        flat = f.reshape(f.shape[0], -1)
        return F.normalize(flat @ flat.t(), p=2, dim=1)

    def similarity_loss(self, f_s, f_t):
        bsz = f_s.shape[0]
        diff = self._gram(f_t) - self._gram(f_s)
        return (diff ** 2).sum().reshape(1) / (bsz * bsz)


@register("similarity")
class SP(Distiller):
    """SP on the last convolutional map ``feat[-2]``."""

    student_features = teacher_features = POST
    defaults = {"gamma": 1.0, "alpha": 0.0, "beta": 3000.0}

    def __init__(self, ctx):
        super().__init__(ctx)
        self.criterion = Similarity()

    def method_loss(self, out_s, out_t, batch, epoch):
        losses = self.criterion([out_s.feats[-2]], [out_t.feats[-2].detach()])
        return torch.stack(losses).sum()
