"""In-memory image sets: one uint8 NCHW tensor per split, batches augmented with a few tensor ops."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Optional, Sequence

import torch
import torch.nn.functional as F

from helper.distributed import shard_bounds
from helper.types import Batch

from .randaugment import rand_augment
from .registry import BUNDLE_LOADERS, DATASETS

# a second stream of draws per (seed, epoch), for the strong view: asking for it leaves the first stream's batches
# (order, crops, flips) exactly as they are without it, so side-by-side runs with and without MLKD see the same ones
STRONG_VIEW_STREAM = 1
_STREAM_STRIDE = 104_729_357  # far beyond any epoch count, so that streams never share a seed


def epoch_generator(seed: int, epoch: int, device: torch.device, stream: int = 0) -> torch.Generator:
    """A generator that depends only on (seed, epoch, stream): a resumed run replays the same batches."""
    g = torch.Generator(device=device)
    g.manual_seed((int(seed) * 1_000_003 + int(epoch) + int(stream) * _STREAM_STRIDE) % (2 ** 63 - 1))
    return g


def random_crop_flip(x: torch.Tensor, pad: int, flip: bool, g: torch.Generator) -> torch.Tensor:
    """RandomCrop(H, padding=pad) with zero fill and RandomHorizontalFlip for a whole uint8 batch.

    One gather instead of per-image PIL work: every sample gets its own offsets (uniform in
    [0, 2*pad]) and flip bit, drawn from ``g``.
    """
    B, C, H, W = x.shape
    dev = x.device
    if pad > 0:
        padded = F.pad(x, (pad, pad, pad, pad))
        oy = torch.randint(0, 2 * pad + 1, (B,), generator=g, device=dev)
        ox = torch.randint(0, 2 * pad + 1, (B,), generator=g, device=dev)
        rows = (oy[:, None] + torch.arange(H, device=dev)[None, :])  # B,H
        cols = (ox[:, None] + torch.arange(W, device=dev)[None, :])  # B,W
    else:
        padded = x
        rows = torch.arange(H, device=dev).expand(B, H)
        cols = torch.arange(W, device=dev).expand(B, W)
    if flip:
        do_flip = torch.rand(B, generator=g, device=dev) < 0.5
        cols = torch.where(do_flip[:, None], cols.flip(1), cols)
    b_idx = torch.arange(B, device=dev)[:, None, None, None]
    c_idx = torch.arange(C, device=dev)[None, :, None, None]
    return padded[b_idx, c_idx, rows[:, None, :, None], cols[:, None, None, :]]


class TensorImageSet:
    """One split: ``images`` uint8 (N,C,H,W) and ``targets`` int64 (N,), both on the device."""

    def __init__(self, images: torch.Tensor, targets: torch.Tensor, mean: Sequence[float],
                 std: Sequence[float], pad: int = 4, flip: bool = True):
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError("images must be a uint8 tensor of shape (N, C, H, W)")
        if targets.shape[0] != images.shape[0]:
            raise ValueError("images and targets differ in length")
        self.images = images
        self.targets = targets.long()
        dev = images.device
        self.mean = torch.tensor(mean, dtype=torch.float32, device=dev).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=dev).view(1, -1, 1, 1)
        self.pad = pad
        self.flip = flip

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def device(self) -> torch.device:
        return self.images.device

    @property
    def input_shape(self):
        """(C, H, W) of one network input."""
        return tuple(self.images.shape[1:])

    def to(self, device) -> "TensorImageSet":
        return TensorImageSet(self.images.to(device), self.targets.to(device), self.mean.flatten().tolist(),
                              self.std.flatten().tolist(), self.pad, self.flip)

    def normalize(self, x_uint8: torch.Tensor) -> torch.Tensor:
        return (x_uint8.float().div_(255.0) - self.mean) / self.std

    def num_batches(self, batch_size: int, drop_last: bool = False, world_size: int = 1) -> int:
        n, step = len(self), batch_size * world_size
        full, rest = divmod(n, step)
        return full + (0 < rest and not drop_last and rest >= world_size)

    def train_batches(self, batch_size: int, seed: int, epoch: int, augment: bool = True,
                      drop_last: bool = False, rank: int = 0, world_size: int = 1,
                      strong_view: bool = False, start: int = 0) -> Iterator[Batch]:
        """A seeded shuffle of the split for ``epoch``, augmented on the device.

        With ``world_size`` K > 1 the global batch is ``K * batch_size`` images and this process gets rows
        ``shard_bounds(n, rank, K)`` of it. The shuffle and the crop/flip draws are made for the global batch
        on every process (the same generator), so the union of the K shards is exactly the batch one process
        would see. A final global batch smaller than K is dropped (some process would get no sample).

        ``strong_view``: each batch also carries ``x_strong``, the same images with their own crop and flip and
        then RandAugment + Cutout (:func:`dataset.randaugment.rand_augment`, MLKD's strong view), drawn from a
        second generator of (seed, epoch).

        ``start``: the number of the epoch's samples already trained (a run resumed within the epoch); the batches
        before it are drawn but not yielded, so the rest are exactly those of the uninterrupted epoch.
        """
        g = epoch_generator(seed, epoch, self.device)
        g_strong = epoch_generator(seed, epoch, self.device, STRONG_VIEW_STREAM) if strong_view else None
        perm = torch.randperm(len(self), generator=g, device=self.device)
        step = batch_size * world_size
        for begin in range(0, len(self), step):
            idx = perm[begin:begin + step]
            n = idx.numel()
            if (drop_last and n < step) or n < world_size:
                break
            x = self.images.index_select(0, idx)
            strong = None
            if g_strong is not None:
                strong = rand_augment(random_crop_flip(x, self.pad, self.flip, g_strong), g_strong)
            if augment:
                x = random_crop_flip(x, self.pad, self.flip, g)
            if begin < start:
                continue  # trained before the resume; its draws above keep the generators where they were
            y = self.targets.index_select(0, idx)
            if world_size == 1:
                yield Batch(self.normalize(x), y, idx, x_strong=None if strong is None else self.normalize(strong))
                continue
            lo, hi = shard_bounds(n, rank, world_size)
            yield Batch(self.normalize(x[lo:hi]), y[lo:hi], idx[lo:hi], global_index=idx, global_y=y,
                        shard=(lo, hi), x_strong=None if strong is None else self.normalize(strong[lo:hi]))

    def eval_batches(self, batch_size: int, rank: int = 0, world_size: int = 1) -> Iterator[Batch]:
        """The split in order; with ``world_size`` > 1 only this process's contiguous part of it."""
        lo, hi = shard_bounds(len(self), rank, world_size)
        for start in range(lo, hi, batch_size):
            stop = min(start + batch_size, hi)
            idx = torch.arange(start, stop, device=self.device)
            yield Batch(self.normalize(self.images[start:stop]), self.targets[start:stop], idx)


@dataclass
class DataBundle:
    name: str
    train: TensorImageSet
    test: TensorImageSet
    num_classes: int


def build_dataset(name: str, data_root: str = "./data", device: Optional[torch.device] = None,
                  settings=None) -> DataBundle:
    """The data set ``name`` on ``device``; ``settings`` (a ``dataset.folder.FolderSettings``; None: its defaults)
    says how a folder data set is read and is not used by the in-memory ones."""
    if name not in DATASETS:
        raise ValueError(f"unknown --dataset '{name}'; choose one of: {', '.join(sorted(DATASETS))}")
    device = torch.device(device or "cpu")
    if name in BUNDLE_LOADERS:
        return DATASETS[name](data_root, device, settings)
    spec = DATASETS[name](data_root)
    train = TensorImageSet(spec["train_x"].to(device), spec["train_y"].to(device), spec["mean"], spec["std"],
                           pad=4, flip=spec.get("flip", True))
    test = TensorImageSet(spec["test_x"].to(device), spec["test_y"].to(device), spec["mean"], spec["std"],
                          pad=4, flip=spec.get("flip", True))
    return DataBundle(name, train, test, spec["num_classes"])
