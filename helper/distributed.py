"""Building blocks for training under ``torchrun``: DDP with NCCL on CUDA, or gloo on CPU.

Everything here degrades to a no-op (or the identity) in a single process, so callers need no
``if distributed`` branches of their own. The only state is torch.distributed's process group.
"""
from __future__ import annotations

import inspect
import os
import warnings
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
from torch import nn

from helper.util import select_device

SCALING_RULES = ("linear", "none")


@dataclass
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def _active() -> bool:
    # A group of one needs no communication, and skipping it keeps a 1-process torchrun exact.
    return _is_initialized() and dist.get_world_size() > 1


def _env_int(name: str, default: Optional[int] = None) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        if default is None:
            raise ValueError(f"{name} is not set; launch with torchrun, which sets RANK, "
                             "LOCAL_RANK and WORLD_SIZE together")
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not an integer") from None


def _read_torchrun_env() -> DistEnv:
    world = _env_int("WORLD_SIZE", default=1)
    if world < 1:
        raise ValueError(f"WORLD_SIZE={world} must be at least 1")
    if world == 1:
        return DistEnv()
    rank = _env_int("RANK")
    local_rank = _env_int("LOCAL_RANK")
    if not 0 <= rank < world:
        raise ValueError(f"RANK={rank} is outside [0, WORLD_SIZE={world})")
    if not 0 <= local_rank < world:
        raise ValueError(f"LOCAL_RANK={local_rank} is outside [0, WORLD_SIZE={world})")
    return DistEnv(rank=rank, world_size=world, local_rank=local_rank)


def launch_world_size() -> int:
    """The number of processes torchrun started (1 without torchrun), read from the environment before any process
    group exists (the options resolve a global batch with it)."""
    return _read_torchrun_env().world_size


def init_distributed(device_name: str) -> Tuple[DistEnv, torch.device]:
    """Join the process group described by torchrun's environment, or run as a single process."""
    env = _read_torchrun_env()
    requested = select_device(device_name)
    if not env.enabled:
        return env, requested

    if requested.type == "cuda":
        visible = torch.cuda.device_count()
        if env.local_rank >= visible:
            raise ValueError(
                f"LOCAL_RANK={env.local_rank} needs GPU {env.local_rank} but only {visible} "
                f"{'is' if visible == 1 else 'are'} visible; launch torchrun with "
                f"--nproc_per_node={visible} or fewer, or train with --device cpu")
        # One process per GPU: without set_device every rank would allocate on cuda:0.
        device = torch.device("cuda", env.local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        device = torch.device("cpu")
        backend = "gloo"

    if not _is_initialized():
        if not dist.is_available():
            raise ValueError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
        missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(k)]
        if missing:
            raise ValueError(f"{', '.join(missing)} not set; launch with torchrun, which sets them")
        kwargs = {"device_id": device} if backend == "nccl" else {}
        dist.init_process_group(backend, **kwargs)
    elif (dist.get_rank(), dist.get_world_size()) != (env.rank, env.world_size):
        raise ValueError(
            f"a process group is already initialised as rank {dist.get_rank()} of "
            f"{dist.get_world_size()}, but the environment says rank {env.rank} of {env.world_size}")
    return env, device


def current_env() -> DistEnv:
    if not _is_initialized():
        return DistEnv()
    rank = dist.get_rank()
    # torch.distributed does not know the local rank; torchrun exports it, and a single-node
    # launcher that does not is best approximated by the global rank.
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    return DistEnv(rank=rank, world_size=dist.get_world_size(), local_rank=local_rank)


def shard_bounds(n: int, rank: int, world_size: int) -> Tuple[int, int]:
    """[start, end) of ``rank``'s contiguous share of n items; same split as torch.tensor_split."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside [0, world_size={world_size})")
    if n < 0:
        raise ValueError(f"n={n} must be non-negative")
    base, extra = divmod(n, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


@torch.no_grad()
def all_gather_rows(t: torch.Tensor, counts: Optional[Sequence[int]] = None) -> torch.Tensor:
    """Every rank's rows concatenated in rank order; ranks may hold different numbers of rows.

    ``counts``: every rank's number of rows, when the caller knows them (the shards of a batch whose global
    size is known); otherwise they are exchanged first, which costs a host sync.
    """
    if not _active():
        return t
    world = dist.get_world_size()
    t = t.detach()
    # Gloo has no bool reductions/gathers on every platform; bytes round-trip losslessly.
    as_bool = t.dtype == torch.bool
    if as_bool:
        t = t.to(torch.uint8)
    t = t.contiguous()

    if counts is None:
        # Sizes travel as a tensor on the data's device because NCCL only moves CUDA tensors.
        size = torch.tensor([t.shape[0]], dtype=torch.long, device=t.device)
        sizes = [torch.empty_like(size) for _ in range(world)]
        dist.all_gather(sizes, size)
        counts = [int(s.item()) for s in sizes]
    elif len(counts) != world or counts[dist.get_rank()] != t.shape[0]:
        raise ValueError(f"all_gather_rows: counts {list(counts)} do not fit {world} ranks with {t.shape[0]} "
                         f"rows on rank {dist.get_rank()}")
    longest = max(counts)

    if longest == 0:
        out = t.new_empty((0,) + tuple(t.shape[1:]))
    else:
        # all_gather needs equal shapes everywhere, hence the padding up to the longest shard.
        padded = t.new_zeros((longest,) + tuple(t.shape[1:]))
        padded[: t.shape[0]] = t
        parts = [torch.empty_like(padded) for _ in range(world)]
        dist.all_gather(parts, padded)
        out = torch.cat([p[:c] for p, c in zip(parts, counts)], dim=0)
    return out.to(torch.bool) if as_bool else out


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if _active():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


@torch.no_grad()
def average_gradients(params) -> None:
    """Average the gradients of ``params`` over all processes (what DDP does, for modules it does not wrap)."""
    if not _active():
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def broadcast_buffers(module: nn.Module, src: int = 0) -> nn.Module:
    if not _active():
        return module
    for buf in module.buffers():
        if buf.is_contiguous():
            dist.broadcast(buf, src)
        else:
            # Collectives need contiguous memory; copy back so the module keeps its own tensor.
            tmp = buf.contiguous()
            dist.broadcast(tmp, src)
            buf.copy_(tmp)
    return module


def wrap_ddp(module: nn.Module, device: torch.device) -> nn.Module:
    """DistributedDataParallel over ``module`` for this toolkit's step.

    static_graph: every step runs the same graph, and it may leave parameters unused (a method's module that
    only the init stage trains) without the per-step graph walk of find_unused_parameters. Buffers are not
    synced at each forward: CRD's memory bank is kept equal by its own row exchange and the BatchNorm statistics
    are synced (--sync_bn) or taken from process 0 once per epoch.
    """
    from torch.nn.parallel import DistributedDataParallel

    kwargs = {"device_ids": [device.index] if device.type == "cuda" else None, "static_graph": True}
    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters:
        kwargs["forward_sync_buffers"] = False  # the newer name; broadcast_buffers is deprecated there
    else:
        kwargs["broadcast_buffers"] = False
    return DistributedDataParallel(module, **kwargs)


def barrier() -> None:
    if _active():
        dist.barrier()


def destroy() -> None:
    if _is_initialized():
        dist.destroy_process_group()


def scaled_learning_rate(lr: float, world_size: int, rule: str) -> float:
    """Learning rate for ``world_size`` processes that each keep the single-process batch size.

    'linear' follows Goyal et al. (2017): the global batch grows with the number of processes, so
    the lr grows with it to keep the update per sample the same. 'none' keeps lr as given.
    """
    if rule == "linear":
        return lr * world_size
    if rule == "none":
        return lr
    raise ValueError(f"unknown lr scaling rule {rule!r}; valid rules: {', '.join(SCALING_RULES)}")


def _all_reduce_with_grad(t: torch.Tensor) -> torch.Tensor:
    # torch marks this autograd-aware collective as deprecated in favour of functional collectives
    # whose gloo/autograd support is less settled; silence the per-call notice, not other warnings.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning,
                                message=r"torch\.distributed\.nn\.functional\.all_reduce")
        return dist_fn.all_reduce(t, op=dist.ReduceOp.SUM)


class CrossProcessBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics span the batches of every rank.

    nn.SyncBatchNorm only runs on CUDA; this one runs on any backend, gloo on CPU included, at the
    cost of two all-reduces per layer and step. Parameters and buffers are BatchNorm2d's own, so
    checkpoints load into either class.
    """

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not (self.training and _active()):
            return super().forward(input)
        self._check_input_dim(input)

        # Low-precision inputs would lose the per-channel sums; accumulate in float32 at least.
        compute_dtype = torch.promote_types(input.dtype, torch.float32)
        x = input.to(compute_dtype)
        channels = x.shape[1]
        dims = (0, 2, 3)

        # Sum and count share one collective; the count needs no gradient but rides along free.
        local_count = x.new_full((1,), float(x.numel() // channels))
        totals = _all_reduce_with_grad(torch.cat([x.sum(dim=dims), local_count]))
        count = totals[channels].detach()
        # A host read per layer and step, accepted: this class serves gloo (CPU) runs only, where it costs no
        # device sync; CUDA runs use nn.SyncBatchNorm (convert_sync_batchnorm).
        count_value = int(round(count.item()))
        if count_value <= 1:
            raise ValueError(
                f"Expected more than 1 value per channel across all ranks when training, got "
                f"{count_value} (input size {list(input.shape)} on this rank)")
        mean = totals[:channels] / count

        # Second pass over the deviations from the global mean: E[x^2] - E[x]^2 cancels badly
        # when the mean is large compared with the spread.
        centred = x - mean.view(1, -1, 1, 1)
        var = _all_reduce_with_grad((centred * centred).sum(dim=dims)) / count

        out = centred * torch.rsqrt(var + self.eps).view(1, -1, 1, 1)
        if self.affine:
            out = out * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)

        if self.track_running_stats and self.running_mean is not None:
            self._update_running_stats(mean.detach(), var.detach(), count_value)
        return out.to(input.dtype)

    @torch.no_grad()
    def _update_running_stats(self, mean: torch.Tensor, biased_var: torch.Tensor, count: int) -> None:
        self.num_batches_tracked.add_(1)
        if self.momentum is None:
            # BatchNorm's cumulative moving average: every batch so far weighs the same.
            factor = 1.0 / float(self.num_batches_tracked.item())
        else:
            factor = self.momentum
        unbiased = biased_var * (count / (count - 1))
        self.running_mean.mul_(1.0 - factor).add_(mean.to(self.running_mean.dtype), alpha=factor)
        self.running_var.mul_(1.0 - factor).add_(unbiased.to(self.running_var.dtype), alpha=factor)


def _to_cross_process(bn: nn.BatchNorm2d) -> CrossProcessBatchNorm2d:
    new = CrossProcessBatchNorm2d(bn.num_features, eps=bn.eps, momentum=bn.momentum,
                                  affine=bn.affine, track_running_stats=bn.track_running_stats)
    # Reuse the very tensors so optimizers, EMA copies or hooks that already hold them stay valid.
    if bn.affine:
        new.weight = bn.weight
        new.bias = bn.bias
    if bn.track_running_stats:
        new.running_mean = bn.running_mean
        new.running_var = bn.running_var
        new.num_batches_tracked = bn.num_batches_tracked
    new.train(bn.training)
    if hasattr(bn, "qconfig"):
        new.qconfig = bn.qconfig
    return new


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Make every BatchNorm2d compute its training statistics over all ranks.

    On CUDA this is torch's SyncBatchNorm. Elsewhere plain nn.BatchNorm2d instances become
    CrossProcessBatchNorm2d; subclasses are left alone because their forward may differ.
    Returns the converted module, which is a new object when ``module`` itself is a BatchNorm2d.
    """
    if torch.device(device).type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    if type(module) is nn.BatchNorm2d:
        return _to_cross_process(module)
    for name, child in module.named_children():
        converted = convert_sync_batchnorm(child, device)
        if converted is not child:
            setattr(module, name, converted)
    return module
