"""Large image sets read from disk (``--dataset imagenet | tiny_imagenet``) behind the in-memory sets' interface.

:class:`FolderImageSet` is one split; like :class:`dataset.core.TensorImageSet` it yields :class:`helper.types.Batch`
objects (indices included, so CRD and the other instance methods work) from ``train_batches(batch_size, seed,
epoch, ...)`` and ``eval_batches(...)``. The order of an epoch is a permutation drawn from (seed, epoch) only, every
sample's augmentation draws from a seed of its own drawn with it, and under torchrun each process reads its
contiguous share of every global batch: so K processes see exactly the images one process sees, the number of
DataLoader workers changes nothing, and a run resumed in the middle of an epoch (``start``) continues with the
very batches it would have trained.

Decoding and augmentation run in DataLoader workers (``--num_workers``; pinned memory on CUDA, persistent workers)
with PIL and torchvision's functional transforms and produce uint8 crops; the conversion to float and the
normalisation happen on the training device. Where NVIDIA DALI is installed, ``--data_pipeline dali`` (or ``auto``
on CUDA) decodes and crops the training images on the GPU instead (:mod:`dataset.dali`).

Transforms (spec 3.3): ImageNet trains on RandomResizedCrop(224) (scale 0.08-1, ratio 3/4-4/3, bilinear) and a
horizontal flip and evaluates on Resize(256) + CenterCrop(224); Tiny-ImageNet trains on RandomRotation(20) and a
flip at its 64 pixels (mdistiller's), evaluated as they are. ``--crop_size``/``--resize_size`` change the sizes
(the tests use small ones; the ImageNet networks pool adaptively).
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

from helper.distributed import shard_bounds
from helper.types import Batch

from .core import DataBundle, STRONG_VIEW_STREAM, epoch_generator
from .folder_sources import DataFolderError, SampleList, image_folder_splits, shard_splits, tiny_imagenet_splits
from .randaugment import rand_augment
from .recipes import imagenet_recipe, tiny_imagenet_recipe
from .registry import register_dataset

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# mdistiller's Tiny-ImageNet constants
TINY_IMAGENET_MEAN = (0.4802, 0.4481, 0.3975)
TINY_IMAGENET_STD = (0.2302, 0.2265, 0.2262)

FORMATS = ("folder", "webdataset")
PIPELINES = ("auto", "dataloader", "dali")
NO_AUGMENTATION = -1  # a sample seed that means: the evaluation transform


@dataclass(frozen=True)
class FolderSettings:
    """How a folder data set is read (the run's ``--data_format``, ``--data_pipeline``, sizes and workers)."""

    data_format: str = "folder"
    pipeline: str = "auto"
    crop_size: Optional[int] = None  # None: the data set's (224 ImageNet, 64 Tiny-ImageNet)
    resize_size: Optional[int] = None  # None: crop * 256 / 224 (ImageNet), the crop (Tiny-ImageNet)
    num_workers: int = 8
    prefetch_factor: int = 4


@dataclass(frozen=True)
class Transform:
    """One split's per-sample transform: ``train`` is ``rrc`` (RandomResizedCrop + flip) or ``rotate``
    (RandomRotation(20) + flip, no crop); evaluation is resize of the shorter side + center crop."""

    train: str
    crop: int
    resize: int


# ---------------------------------------------------------------- per-sample transforms (run in the workers)

def decode(data: bytes):
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        return img.convert("RGB")


def _uniform(g: torch.Generator, lo, hi) -> float:
    # float32 draws, as torchvision's transforms make them from the global RNG
    return torch.empty(1).uniform_(float(lo), float(hi), generator=g).item()


def random_resized_crop_box(width: int, height: int, g: torch.Generator, scale=(0.08, 1.0),
                            ratio=(3.0 / 4.0, 4.0 / 3.0)) -> Tuple[int, int, int, int]:
    """(top, left, height, width) of RandomResizedCrop's box: torchvision's rule (ten tries of an area fraction in
    ``scale`` and a log-uniform aspect ratio in ``ratio``, then the central crop of the nearest allowed ratio) with
    the same draws, taken from ``g`` instead of the global RNG so that a sample's crop depends on its own seed only
    (a generator seeded s gives exactly the box torchvision's ``get_params`` gives after ``torch.manual_seed(s)``)."""
    area = height * width
    log_ratio = torch.log(torch.tensor(ratio))
    for _ in range(10):
        target_area = area * _uniform(g, scale[0], scale[1])
        aspect = torch.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1], generator=g)).item()
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = torch.randint(0, height - h + 1, size=(1,), generator=g).item()
            left = torch.randint(0, width - w + 1, size=(1,), generator=g).item()
            return top, left, h, w
    in_ratio = float(width) / float(height)
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def to_uint8_chw(img) -> torch.Tensor:
    return torch.from_numpy(np.array(img, dtype=np.uint8, copy=True)).permute(2, 0, 1).contiguous()


def train_view(img, transform: Transform, g: torch.Generator) -> torch.Tensor:
    import torchvision.transforms.functional as TF
    from torchvision.transforms import InterpolationMode

    if transform.train == "rotate":
        img = TF.rotate(img, _uniform(g, -20.0, 20.0))
        if img.size != (transform.crop, transform.crop):
            img = TF.resize(img, [transform.crop, transform.crop], InterpolationMode.BILINEAR, antialias=True)
    else:
        top, left, h, w = random_resized_crop_box(img.size[0], img.size[1], g)
        img = TF.resized_crop(img, top, left, h, w, [transform.crop, transform.crop], InterpolationMode.BILINEAR,
                              antialias=True)
    if bool(torch.rand(1, generator=g) < 0.5):
        img = TF.hflip(img)
    return to_uint8_chw(img)


def eval_view(img, transform: Transform) -> torch.Tensor:
    import torchvision.transforms.functional as TF
    from torchvision.transforms import InterpolationMode

    if min(img.size) != transform.resize:
        img = TF.resize(img, transform.resize, InterpolationMode.BILINEAR, antialias=True)
    if img.size != (transform.crop, transform.crop):
        img = TF.center_crop(img, [transform.crop, transform.crop])
    return to_uint8_chw(img)


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


class SampleReader(torch.utils.data.Dataset):
    """Sample ``(index, seed, strong_seed)`` -> uint8 crop(s), label and index; a seed of ``NO_AUGMENTATION`` asks
    for the evaluation transform, a strong seed >= 0 adds MLKD's strong view (own crop and flip, RandAugment(2) and
    Cutout, all drawn from that seed)."""

    def __init__(self, samples: SampleList, transform: Transform):
        self.samples = samples
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key):
        index, seed, strong_seed = key
        try:
            img = decode(self.samples.read(index))
        except OSError as exc:  # PIL's UnidentifiedImageError and truncated files are OSErrors
            raise DataFolderError(f"{self.samples.describe(index)} is not a readable image ({exc}); replace or "
                                  f"remove it") from None
        y = int(self.samples.targets[index])
        x = eval_view(img, self.transform) if seed == NO_AUGMENTATION else train_view(img, self.transform,
                                                                                     seeded(seed))
        if strong_seed == NO_AUGMENTATION:
            return x, y, index
        g = seeded(strong_seed)
        strong = rand_augment(train_view(img, self.transform, g)[None], g)[0]
        return x, y, index, strong


# ---------------------------------------------------------------- the order of an epoch

@dataclass
class EpochPlan:
    """The samples of one epoch in order, with their augmentation seeds: a function of (seed, epoch) only."""

    order: torch.Tensor  # int64 (N,) sample indices
    seeds: Optional[torch.Tensor]  # int64 (N,) per position; None: no augmentation
    strong_seeds: Optional[torch.Tensor]


def epoch_plan(n: int, seed: int, epoch: int, augment: bool, strong_view: bool) -> EpochPlan:
    g = epoch_generator(seed, epoch, torch.device("cpu"))
    order = torch.randperm(n, generator=g)
    seeds = torch.randint(0, 2 ** 62, (n,), generator=g) if augment else None
    strong = None
    if strong_view:
        g_strong = epoch_generator(seed, epoch, torch.device("cpu"), STRONG_VIEW_STREAM)
        strong = torch.randint(0, 2 ** 62, (n,), generator=g_strong)
    return EpochPlan(order, seeds, strong)


def global_batches(n: int, batch_size: int, world_size: int, drop_last: bool, start: int = 0) -> List[Tuple[int, int]]:
    """[begin, end) positions of the global batches of an epoch that begins at position ``start`` (a resumed
    epoch): K * B positions each; a last one smaller than K processes is dropped, as in the in-memory sets."""
    step = batch_size * world_size
    out = []
    for begin in range(start, n, step):
        end = min(begin + step, n)
        if (drop_last and end - begin < step) or end - begin < world_size:
            break
        out.append((begin, end))
    return out


class EpochKeys(Sequence):
    """This process's keys ``(index, seed, strong_seed)`` of each global batch of an epoch, made when a batch is
    asked for (an ImageNet epoch has 1.28 M samples; a list of them all would cost seconds and memory per epoch)."""

    def __init__(self, plan: EpochPlan, bounds: List[Tuple[int, int]], rank: int, world_size: int):
        self.order = plan.order.tolist()
        n = len(self.order)
        self.seeds = [NO_AUGMENTATION] * n if plan.seeds is None else plan.seeds.tolist()
        self.strong = [NO_AUGMENTATION] * n if plan.strong_seeds is None else plan.strong_seeds.tolist()
        self.bounds = bounds
        self.rank, self.world_size = rank, world_size

    def __len__(self) -> int:
        return len(self.bounds)

    def shard(self, b: int) -> Tuple[int, int]:
        begin, end = self.bounds[b]
        return shard_bounds(end - begin, self.rank, self.world_size)

    def __getitem__(self, b: int) -> List[Tuple[int, int, int]]:
        begin = self.bounds[b][0]
        lo, hi = self.shard(b)
        return [(self.order[p], self.seeds[p], self.strong[p]) for p in range(begin + lo, begin + hi)]


class ShardKeys(torch.utils.data.Sampler):
    """The DataLoader's batch sampler: the keys of the pass planned with :meth:`plan` before it (as DistributedSampler's
    set_epoch; the workers stay alive between passes)."""

    def __init__(self):
        super().__init__()
        self.keys: Sequence[List[Tuple[int, int, int]]] = []

    def plan(self, keys: Sequence[List[Tuple[int, int, int]]]) -> None:
        self.keys = keys

    def __iter__(self):
        return iter(self.keys)

    def __len__(self) -> int:
        return len(self.keys)


def _worker_message(exc: Exception) -> Optional[str]:
    """The original one-line message of a DataFolderError raised in a DataLoader worker (whose text PyTorch wraps
    in 'Caught ... in DataLoader worker process N' and a traceback)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines or not lines[0].startswith("Caught"):
        return None
    last = lines[-1]
    prefix = f"{DataFolderError.__module__}.{DataFolderError.__name__}: "
    for p in (prefix, f"{DataFolderError.__name__}: "):
        if last.startswith(p):
            return last[len(p):]
    return None


class FolderImageSet:
    """One split of a folder data set (see the module docstring); ``targets`` (on the device) serve CRD's sampler."""

    def __init__(self, samples: SampleList, transform: Transform, mean: Sequence[float], std: Sequence[float],
                 device: torch.device, settings: FolderSettings, use_dali: bool = False):
        self.samples = samples
        self.transform = transform
        self._device = torch.device(device)
        self.targets = torch.from_numpy(samples.targets).to(self._device)
        self.mean = torch.tensor(mean, dtype=torch.float32, device=self._device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=self._device).view(1, -1, 1, 1)
        self.settings = settings
        self.use_dali = use_dali
        self._loader = None
        self._keys = ShardKeys()
        self._dali = None

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def input_shape(self) -> Tuple[int, int, int]:
        return 3, self.transform.crop, self.transform.crop

    def normalize(self, x_uint8: torch.Tensor) -> torch.Tensor:
        return (x_uint8.float().div_(255.0) - self.mean) / self.std

    def num_batches(self, batch_size: int, drop_last: bool = False, world_size: int = 1) -> int:
        return len(global_batches(len(self), batch_size, world_size, drop_last))

    def loader(self):
        """The split's DataLoader (built once; its workers persist across epochs)."""
        if self._loader is None:
            workers = max(0, int(self.settings.num_workers))
            extra = {"persistent_workers": True, "prefetch_factor": self.settings.prefetch_factor} if workers else {}
            # its own generator: a DataLoader draws its workers' base seed from the global RNG at every pass, which
            # would move the stream CRD's negatives come from (and a resumed epoch would draw other ones); the
            # augmentation draws from each sample's own seed, not from the workers' seeds
            self._loader = torch.utils.data.DataLoader(
                SampleReader(self.samples, self.transform), batch_sampler=self._keys, num_workers=workers,
                pin_memory=self._device.type == "cuda", generator=torch.Generator().manual_seed(0), **extra)
        return self._loader

    def _read(self, keys: Sequence[List[Tuple[int, int, int]]], train: bool = False) -> Iterator[tuple]:
        """The batches of ``keys`` as device tensors: (x uint8, y, index[, strong uint8]); a training pass (with
        augmentation) goes through DALI where the split uses it."""
        if train and self.use_dali:
            if self._dali is None:
                from .dali import DaliTrainReader

                self._dali = DaliTrainReader(self.samples, self.transform, self._device, self.settings)
            yield from self._dali.batches(keys)
            return
        self._keys.plan(keys)
        it = iter(self.loader())
        while True:
            try:
                parts = next(it)
            except StopIteration:
                return
            except Exception as exc:  # noqa: BLE001 - a worker's DataFolderError becomes its own one line
                message = _worker_message(exc)
                if message is None:
                    raise
                raise DataFolderError(message) from None
            yield tuple(t.to(self._device, non_blocking=True) for t in parts)

    def train_batches(self, batch_size: int, seed: int, epoch: int, augment: bool = True, drop_last: bool = False,
                      rank: int = 0, world_size: int = 1, strong_view: bool = False, start: int = 0
                      ) -> Iterator[Batch]:
        """The epoch of (seed, epoch) from position ``start`` on (0: the whole epoch), as TensorImageSet's."""
        if strong_view and self.use_dali:
            raise ValueError("the strong view (--distill mlkd) is made by the DataLoader pipeline; give "
                             "--data_pipeline dataloader")
        plan = epoch_plan(len(self), seed, epoch, augment, strong_view)
        bounds = global_batches(len(self), batch_size, world_size, drop_last, start)
        keys = EpochKeys(plan, bounds, rank, world_size)
        dali = self.use_dali and augment
        for b, parts in enumerate(self._read(keys, train=dali)):
            x, y, index = self.normalize(parts[0]), parts[1], parts[2]
            strong = self.normalize(parts[3]) if len(parts) > 3 else None
            if world_size == 1:
                yield Batch(x, y, index, x_strong=strong)
                continue
            begin, end = bounds[b]
            global_index = plan.order[begin:end].to(self._device, non_blocking=True)
            yield Batch(x, y, index, global_index=global_index, global_y=self.targets.index_select(0, global_index),
                        shard=keys.shard(b), x_strong=strong)

    def eval_batches(self, batch_size: int, rank: int = 0, world_size: int = 1) -> Iterator[Batch]:
        """The split in order; with ``world_size`` > 1 only this process's contiguous part of it."""
        lo, hi = shard_bounds(len(self), rank, world_size)
        keys = [[(i, NO_AUGMENTATION, NO_AUGMENTATION) for i in range(start, min(start + batch_size, hi))]
                for start in range(lo, hi, batch_size)]
        for parts in self._read(keys):
            yield Batch(self.normalize(parts[0]), parts[1], parts[2])


# ---------------------------------------------------------------- the data sets

def dali_available() -> bool:
    try:
        import nvidia.dali  # noqa: F401
    except ImportError:
        return False
    return True


def use_dali(settings: FolderSettings, device: torch.device) -> bool:
    """``--data_pipeline``: dali needs CUDA and the package; auto takes it where both are there."""
    if settings.pipeline not in PIPELINES:
        raise ValueError(f"--data_pipeline must be one of {', '.join(PIPELINES)}, got '{settings.pipeline}'")
    if settings.pipeline == "dataloader":
        return False
    cuda = torch.device(device).type == "cuda"
    if settings.pipeline == "dali":
        if not cuda:
            raise ValueError("--data_pipeline dali decodes on the GPU; it needs --device cuda (use "
                             "--data_pipeline dataloader on a CPU)")
        if not dali_available():
            raise ValueError("--data_pipeline dali needs NVIDIA DALI (pip install nvidia-dali-cuda120, see "
                             "docs/imagenet.md); or give --data_pipeline dataloader")
        return True
    return cuda and dali_available()


def folder_bundle(name: str, splits: Tuple[SampleList, SampleList], train_transform: str, crop: int, resize: int,
                  mean, std, device, settings: FolderSettings) -> DataBundle:
    train_samples, test_samples = splits
    if settings.data_format not in FORMATS:
        raise ValueError(f"--data_format must be one of {', '.join(FORMATS)}, got '{settings.data_format}'")
    transform = Transform(train_transform, crop, resize)
    dali = use_dali(settings, device)
    train = FolderImageSet(train_samples, transform, mean, std, device, settings, use_dali=dali)
    test = FolderImageSet(test_samples, transform, mean, std, device, settings)
    return DataBundle(name, train, test, max(len(train_samples.classes), int(train_samples.targets.max()) + 1))


def read_splits(layout, data_root: str, settings: FolderSettings):
    return shard_splits(data_root) if settings.data_format == "webdataset" else layout(data_root)


@register_dataset("imagenet", family="imagenet", bundle=True, recipes={"mdistiller": imagenet_recipe})
def load_imagenet(data_root: str, device, settings: Optional[FolderSettings] = None) -> DataBundle:
    settings = settings or FolderSettings()
    crop = settings.crop_size or 224
    resize = settings.resize_size or int(round(crop * 256 / 224))
    return folder_bundle("imagenet", read_splits(image_folder_splits, data_root, settings), "rrc", crop, resize,
                         IMAGENET_MEAN, IMAGENET_STD, device, settings)


@register_dataset("tiny_imagenet", family="imagenet", bundle=True, recipes={"mdistiller": tiny_imagenet_recipe})
def load_tiny_imagenet(data_root: str, device, settings: Optional[FolderSettings] = None) -> DataBundle:
    settings = settings or FolderSettings()
    crop = settings.crop_size or 64
    resize = settings.resize_size or crop
    return folder_bundle("tiny_imagenet", read_splits(tiny_imagenet_splits, data_root, settings), "rotate", crop,
                         resize, TINY_IMAGENET_MEAN, TINY_IMAGENET_STD, device, settings)
