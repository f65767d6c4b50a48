"""Chen et al. 2021, "Cross-Layer Distillation with Semantic Calibration" (SemCKD, ``--distill semckd``), as in the
SimKD repository (its ``SelfA``, ``MLPEmbed``, ``Proj`` and ``SemCKDLoss``).

Every student stage map ``feat[1:-1]`` is regressed onto every teacher stage map by its own projection; the
per-sample MSEs are weighted by an attention over the teacher's layers computed per sample from the two networks'
batch Gram matrices: ``alpha = softmax_j(query_i(G_i^s) . key_j(G_j^t) / --soft)``, where ``G`` is the B x B matrix of
inner products of the samples' flattened maps and the query/key embeddings are two-layer MLPs followed by an L2
normalisation (without epsilon, as the reference). ``L = sum_{b,i,j} alpha * MSE_b(i, j) / (B * s_len)``; alpha is not
detached. The larger of two maps is average-pooled to the smaller one's size.

The embeddings read B x B Gram matrices, so their sizes depend on ``--batch_size`` (per process): the training loop
skips a last batch smaller than that for this method, as the reference does (``full_batches_only``). The reference
also builds an unused ``regressor`` in every embedding (15,648 parameters at B = 64 with 3 + 3 layers) that never
gets a gradient; it is not created here.
"""
from __future__ import annotations

from typing import List, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from helper.distributed import current_env
from helper.option import Option

from .base import POST, Batch, Distiller, Outputs, register

GROUP = "SemCKD (--distill semckd)"
# the reference's embedding width: batch size / 4
EMBED_FACTOR = 4


class GramEmbed(nn.Module):
    """The reference's ``MLPEmbed``: Linear(B, 2d) -> ReLU -> Linear(2d, d) -> division by the L2 norm."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.linear1 = nn.Linear(dim_in, 2 * dim_out)
        self.linear2 = nn.Linear(2 * dim_out, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.linear2(F.relu(self.linear1(x.reshape(x.shape[0], -1))))
        return x / x.pow(2).sum(dim=1, keepdim=True).sqrt()


def projection(s_channels: int, t_channels: int) -> nn.Sequential:
    """The reference's ``Proj``: 1x1 conv to 2*t, BN, ReLU, 3x3 conv, BN, ReLU, 1x1 conv to t (no biases)."""
    mid = 2 * t_channels
    return nn.Sequential(
        nn.Conv2d(s_channels, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
        nn.Conv2d(mid, mid, 3, padding=1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
        nn.Conv2d(mid, t_channels, 1, bias=False),
    )


def gram(feature: torch.Tensor) -> torch.Tensor:
    """The B x B inner products of the samples' flattened maps."""
    flat = feature.reshape(feature.shape[0], -1)
    return flat @ flat.t()


def semckd_loss(attention: torch.Tensor, per_sample_mse: torch.Tensor) -> torch.Tensor:
    """``sum(alpha * mse) / (B * s_len)`` for ``attention`` and ``per_sample_mse`` of shape (B, s_len, t_len)."""
    b, s_len, _ = attention.shape
    return (attention * per_sample_mse).sum() / (b * s_len)


@register("semckd")
class SemCKD(Distiller):
    """SemCKD on ``feat[1:-1]`` of both networks. Defaults ``-r 1 -a 1 -b 400`` (the SimKD repository's
    resnet32x4 -> resnet8x4 script, the only pair it gives) and ``-s/--soft 1``.

    Trainable: the query and key embeddings and one projection per student x teacher layer pair.
    """

    student_features = teacher_features = POST
    defaults = {"gamma": 1.0, "alpha": 1.0, "beta": 400.0}
    full_batches_only = True
    options = Distiller.options + (
        Option("soft", float, 1.0, "SemCKD's attention temperature (the logits are divided by it)",
               flags=("-s", "--soft"), group=GROUP),
    )

    def __init__(self, ctx):
        super().__init__(ctx)
        self.soft = float(ctx.options.soft)
        if not self.soft > 0:
            raise ValueError(f"-s/--soft must be positive, got {self.soft}")
        batch = int(ctx.batch_size)
        if batch // EMBED_FACTOR < 1:
            raise ValueError(f"--distill semckd embeds the batch's {batch} x {batch} Gram matrices into "
                             f"--batch_size/{EMBED_FACTOR} dimensions; use --batch_size {EMBED_FACTOR} or more")
        world = current_env().world_size
        if ctx.train_targets is not None and ctx.n_data < batch * world:
            raise ValueError(f"--distill semckd trains on full batches only (its attention is sized by "
                             f"--batch_size {batch}), and the training set has {ctx.n_data} samples for a global "
                             f"batch of {batch * world}; use a smaller --batch_size")
        s_maps, t_maps = list(ctx.feat_s[1:-1]), list(ctx.feat_t[1:-1])
        for who, maps in (("student", s_maps), ("teacher", t_maps)):
            if not maps or any(f.dim() != 4 for f in maps):
                raise ValueError(f"--distill semckd relates stage feature maps, and the {who}'s features "
                                 f"{[tuple(f.shape[1:]) for f in maps]} are not maps")
        self.batch_size = batch
        dim = batch // EMBED_FACTOR
        self.query = nn.ModuleList(GramEmbed(batch, dim) for _ in s_maps)
        self.key = nn.ModuleList(GramEmbed(batch, dim) for _ in t_maps)
        # regressors[i * t_len + j] maps student layer i onto teacher layer j
        self.regressors = nn.ModuleList(projection(int(s.shape[1]), int(t.shape[1])) for s in s_maps for t in t_maps)
        self.s_len, self.t_len = len(s_maps), len(t_maps)

    def attention(self, s_maps: Sequence[torch.Tensor], t_maps: Sequence[torch.Tensor]) -> torch.Tensor:
        """alpha, (B, s_len, t_len): per sample, each student layer's softmax over the teacher's layers."""
        query = torch.stack([emb(gram(f)) for emb, f in zip(self.query, s_maps)], dim=1)
        key = torch.stack([emb(gram(f)) for emb, f in zip(self.key, t_maps)], dim=2)
        return F.softmax(torch.bmm(query, key) / self.soft, dim=-1)

    def per_sample_mse(self, s_maps: Sequence[torch.Tensor], t_maps: Sequence[torch.Tensor]) -> torch.Tensor:
        """(B, s_len, t_len): each sample's MSE between projected student layer i and teacher layer j."""
        rows: List[torch.Tensor] = []
        for i, s in enumerate(s_maps):
            row = []
            for j, t in enumerate(t_maps):
                source, target = s, t
                if s.shape[2] > t.shape[2]:
                    source = F.adaptive_avg_pool2d(s, t.shape[-2:])
                else:
                    target = F.adaptive_avg_pool2d(t, s.shape[-2:])
                value = self.regressors[i * self.t_len + j](source)
                row.append((value - target).pow(2).reshape(value.shape[0], -1).mean(dim=1))
            rows.append(torch.stack(row, dim=1))
        return torch.stack(rows, dim=1)

    def method_loss(self, out_s: Outputs, out_t: Outputs, batch: Batch, epoch: int) -> torch.Tensor:
        s_maps = out_s.feats[1:-1]
        t_maps = [f.detach() for f in out_t.feats[1:-1]]
        if s_maps[0].shape[0] != self.batch_size:
            raise ValueError(f"--distill semckd's attention is sized for batches of {self.batch_size} (--batch_size), "
                             f"got {s_maps[0].shape[0]}")
        return semckd_loss(self.attention(s_maps, t_maps), self.per_sample_mse(s_maps, t_maps))
