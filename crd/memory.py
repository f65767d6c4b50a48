"""CRD's memory bank: one stored embedding per training sample and view (student, teacher)."""
from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

import torch
import torch.nn as nn

from helper.distributed import all_gather_rows, all_reduce_sum, current_env

SCORE_PATHS = ("matmul", "gather")


class ContrastMemory(nn.Module):
    """Two memory banks (``memory_v1`` for the student view, ``memory_v2`` for the teacher view) of
    ``outputSize`` rows x ``inputSize`` dims, RepDistiller-compatible (buffer names, init, outputs).

    ``forward(v1, v2, y, idx)`` scores each anchor against the rows ``idx`` (B x (K+1), column 0 the
    positive) of the *other* view's bank: ``exp(<row, v>/T) / Z`` with shape (B, K+1, 1), returned as
    (student-anchor scores, teacher-anchor scores). Then the rows ``y`` of each bank are moved toward the
    batch embeddings with momentum and renormalised to unit L2 norm.

    ``params`` = [K, T, Z_v1, Z_v2, momentum] is a buffer, as in RepDistiller, so the normalisers travel
    with the state dict. Z starts at -1 and is fixed once, from the first batch: Z = mean(exp(score/T)) * N.

    Two ways of computing the scores give the same values:

    * ``'gather'`` (RepDistiller): copy the B*(K+1) rows out of each bank and batch-multiply. It materialises
      B x (K+1) x dim floats per bank (about 0.5 GB per bank at B=64, K=16384, dim=128).
    * ``'matmul'``: one product of the whole bank with the batch (N x B scores), then pick B*(K+1) scalars.
      It never copies rows; its cost grows with N instead of K.

    Forward + backward on a (shared) 2-core CPU, one thread, dim=128, B=64: N=2000, K=1000: matmul ~2.3 ms,
    gather ~51 ms; CIFAR-100 size (N=50000, K=16384): matmul ~0.11 s, gather ~2.2 s. Hence the default. The
    matmul path snapshots each bank (N x dim) when gradients are needed, because the momentum update writes
    into the bank that the product's backward reads.

    ``bank_dtype`` bfloat16 halves the banks (2 x N x dim x 2 bytes: 0.66 GB for ImageNet's 1,281,167 images at
    dim 128, against 1.31 GB in float32); scores and updates are computed in float32 and rounded when stored.

    Deviations from RepDistiller, none of which changes the values: no ``.cuda()`` (everything follows the
    inputs' device); scores are computed in float32 even under autocast (exp(1/0.07) ~ 1.6e6 overflows
    float16); Z is set with tensor ops, without a host sync or a print; ``idx=None`` draws uniform indices
    with torch.randint instead of the alias sampler (the same uniform distribution).
    """

    def __init__(self, inputSize: int, outputSize: int, K: int, T: float = 0.07, momentum: float = 0.5,
                 score_path: str = "matmul", bank_dtype: torch.dtype = torch.float32):
        super().__init__()
        if score_path not in SCORE_PATHS:
            raise ValueError(f"score_path must be one of {SCORE_PATHS}, got {score_path!r}")
        self.score_path = score_path
        self.nLem = int(outputSize)
        self.K = int(K)
        self.register_buffer("params", torch.tensor([K, T, -1.0, -1.0, momentum]))
        stdv = 1.0 / math.sqrt(inputSize / 3)
        # drawn in float32 whatever the storage type, so a bf16 bank starts from the float32 bank's values rounded
        self.register_buffer("memory_v1", torch.rand(outputSize, inputSize).mul_(2 * stdv).add_(-stdv).to(bank_dtype))
        self.register_buffer("memory_v2", torch.rand(outputSize, inputSize).mul_(2 * stdv).add_(-stdv).to(bank_dtype))
        # Whether this process has seen Z set (it is fixed after the first batch): afterwards the per-step
        # statistics and, under torchrun, their all-reduce are skipped. A host-side flag, since reading Z
        # from the buffer would be a device sync per step.
        self._z_fixed = False

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self._z_fixed = False  # the loaded Z may still be unset; the next batch looks (and keeps a set one)

    @staticmethod
    def _scores_gather(memory: torch.Tensor, v: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        rows = memory.index_select(0, idx.reshape(-1)).view(idx.shape[0], idx.shape[1], memory.shape[1])
        return torch.bmm(rows.to(v.dtype), v.unsqueeze(2)).squeeze(2)

    @staticmethod
    def _scores_matmul(memory: torch.Tensor, v: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return (v @ memory.t()).gather(1, idx)

    def scores(self, memory: torch.Tensor, v: torch.Tensor, idx: torch.Tensor, path: Optional[str] = None):
        """<memory[idx[b, j]], v[b]> as a (B, K+1) tensor; gradients reach ``v`` only."""
        path = path or self.score_path
        if path == "gather":
            return self._scores_gather(memory.detach(), v, idx)
        if memory.dtype != v.dtype:
            # a bf16 bank is scored in float32 (exp(score / 0.07) amplifies bf16's rounding of the score ~14 times);
            # the upcast is a copy, which also serves as the snapshot the backward needs
            memory = memory.detach().to(v.dtype)
        elif torch.is_grad_enabled() and v.requires_grad:
            # The product's backward needs the bank as it is now, and the momentum update below writes
            # into it in place; a snapshot (N x dim) is still far smaller than gather's B x (K+1) x dim rows.
            memory = memory.detach().clone()
        return self._scores_matmul(memory.detach(), v, idx)

    def forward(self, v1: torch.Tensor, v2: torch.Tensor, y: torch.Tensor, idx: Optional[torch.Tensor] = None,
                shard_counts: Optional[Sequence[int]] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """``shard_counts``: under torchrun, every process's number of rows when the caller knows them (the
        shards of the global batch), which spares the gathers their size exchange."""
        n_rows = self.memory_v1.shape[0]
        y = y.long()
        if idx is None:
            idx = torch.randint(0, n_rows, (v1.shape[0], self.K + 1), device=v1.device)
            idx[:, 0] = y
        idx = idx.long()
        hp = self.params.clone()  # not a view: params[2:4] is written below while T is needed by backward
        T, momentum = hp[1], hp[4]
        with torch.autocast(device_type=v1.device.type, enabled=False):
            # float32 at least, also with a bf16 bank (the scores, the update's arithmetic)
            v1f = v1.to(torch.promote_types(self.memory_v1.dtype, torch.float32))
            v2f = v2.to(torch.promote_types(self.memory_v2.dtype, torch.float32))
            # student anchor vs the teacher bank, and the reverse (RepDistiller's out_v1 / out_v2)
            out_v1 = torch.exp(self.scores(self.memory_v2, v1f, idx) / T)
            out_v2 = torch.exp(self.scores(self.memory_v1, v2f, idx) / T)

            with torch.no_grad():
                # Z < 0 means "not set yet": take it from this (the first) batch, keep it afterwards. Under
                # torchrun the mean is over the global batch, so every process fixes the same Z.
                if not self._z_fixed:
                    if current_env().enabled:
                        sums = all_reduce_sum(torch.stack([out_v1.sum(), out_v2.sum(),
                                                           out_v1.new_full((), float(out_v1.numel()))]))
                        z_new = sums[:2] / sums[2] * n_rows
                    else:
                        z_new = torch.stack([out_v1.mean(), out_v2.mean()]) * n_rows
                    z = self.params[2:4]
                    self.params[2:4] = torch.where(z < 0, z_new.to(z.dtype), z)
                    self._z_fixed = True
                z = self.params[2:4].clone()

            out_v1 = (out_v1 / z[0]).unsqueeze(2)
            out_v2 = (out_v2 / z[1]).unsqueeze(2)

            with torch.no_grad():
                if current_env().enabled:
                    # every process applies the whole global batch's rows: the banks stay identical everywhere
                    v1f, v2f, y = (all_gather_rows(t.detach(), shard_counts) for t in (v1f, v2f, y))
                self._momentum_update(self.memory_v1, v1f, y, momentum)
                self._momentum_update(self.memory_v2, v2f, y, momentum)
        return out_v1, out_v2

    @staticmethod
    def _momentum_update(memory: torch.Tensor, v: torch.Tensor, y: torch.Tensor, momentum: torch.Tensor):
        rows = memory.index_select(0, y).to(v.dtype) * momentum + v * (1 - momentum)
        memory.index_copy_(0, y, (rows / rows.pow(2).sum(1, keepdim=True).sqrt()).to(memory.dtype))
