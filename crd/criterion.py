"""Tian et al. 2020, "Contrastive Representation Distillation": the loss and its embedding heads."""
from __future__ import annotations

import torch
import torch.nn as nn

from helper.util import at_least_float32
from models.util import Embed  # Linear + L2 normalisation; RepDistiller defines the same module twice

from .memory import ContrastMemory

EPS = 1e-7  # RepDistiller's constant in the NCE posterior


class ContrastLoss(nn.Module):
    """NCE loss (CRD eq. 18) on memory scores x of shape (B, K+1[, 1]), column 0 the positive.

    With m = K negatives and noise Pn = 1/n_data, the posterior of "data" is P / (P + m*Pn + eps):
    loss = -(sum_b log h(pos_b) + sum_{b,j} log(1 - h(neg_bj))) / B.
    Deviation: returns a 0-dim tensor where RepDistiller returns shape (1,).
    """

    def __init__(self, n_data: int):
        super().__init__()
        self.n_data = n_data

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], -1)
        bsz, m = x.shape[0], x.shape[1] - 1
        noise = m / float(self.n_data)
        log_d1 = torch.log(x[:, 0] / (x[:, 0] + noise + EPS))
        log_d0 = torch.log(noise / (x[:, 1:] + noise + EPS))
        return -(log_d1.sum() + log_d0.sum()) / bsz


class CRDLoss(nn.Module):
    """Symmetric CRD loss: student anchor against the teacher bank plus teacher anchor against the student bank.

    Reads ``opt.s_dim, opt.t_dim, opt.feat_dim, opt.n_data, opt.nce_k, opt.nce_t, opt.nce_m`` (and the
    ``score_path`` and ``bank_dtype`` of :class:`ContrastMemory`). ``forward(f_s, f_t, idx, contrast_idx)``: ``idx``
    are the batch's dataset indices (the memory rows to update), ``contrast_idx`` (B, K+1) the rows to score.
    """

    def __init__(self, opt, score_path: str = "matmul", bank_dtype: torch.dtype = torch.float32):
        super().__init__()
        self.embed_s = Embed(opt.s_dim, opt.feat_dim)
        self.embed_t = Embed(opt.t_dim, opt.feat_dim)
        self.contrast = ContrastMemory(opt.feat_dim, opt.n_data, opt.nce_k, opt.nce_t, opt.nce_m,
                                       score_path=score_path, bank_dtype=bank_dtype)
        self.criterion_t = ContrastLoss(opt.n_data)
        self.criterion_s = ContrastLoss(opt.n_data)

    def forward(self, f_s, f_t, idx, contrast_idx=None, shard_counts=None):
        """``shard_counts``: every process's rows under torchrun, when known (see ``ContrastMemory.forward``)."""
        # the embeddings and the banks are float32; bf16 features (autocast networks) are upcast first
        f_s, f_t = at_least_float32(f_s), at_least_float32(f_t)
        out_s, out_t = self.contrast(self.embed_s(f_s), self.embed_t(f_t), idx, contrast_idx, shard_counts)
        return self.criterion_s(out_s) + self.criterion_t(out_t)
