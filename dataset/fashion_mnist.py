"""Fashion-MNIST (Xiao et al. 2017): 60,000 / 10,000 real 28x28 grayscale images of 10 clothing classes.

Read from the IDX files (``train-images-idx3-ubyte`` etc., gzipped or not), looked for in this order:

1. torchvision's layout under ``--data_root``: ``FashionMNIST/raw/`` (what ``torchvision.datasets.FashionMNIST``
   downloads to);
2. Debian's ``dataset-fashion-mnist`` package (``/usr/share/datasets/fashion-mnist/``), which apt installs on a
   machine that reaches a Debian mirror but not the data set's own host;
3. a download through torchvision where a network exists.

Each image is zero-padded to 32x32 and replicated to 3 channels, so every CIFAR architecture runs on it unchanged,
and normalised with the padded training split's own mean and std. Training augmentation is RepDistiller's (random
crop with 4-pixel padding and horizontal flip, done on the device).
"""
from __future__ import annotations

import gzip
import os
from typing import List, Optional

import numpy as np
import torch
import torch.nn.functional as F

from .registry import register_dataset

RAW_FOLDER = os.path.join("FashionMNIST", "raw")
DEBIAN_FOLDER = "/usr/share/datasets/fashion-mnist"
FILES = {"train_x": "train-images-idx3-ubyte", "train_y": "train-labels-idx1-ubyte",
         "test_x": "t10k-images-idx3-ubyte", "test_y": "t10k-labels-idx1-ubyte"}
NUM_CLASSES = 10
SIDE = 32  # padded image side: the CIFAR models' input size
# IDX magic: two zero bytes, the element type (0x08: unsigned byte), the number of dimensions
UBYTE = 0x08


class IdxFileError(ValueError):
    """An IDX file that does not hold what its name says; the message names the file."""


def read_idx(path: str) -> np.ndarray:
    """The uint8 array of an IDX file (``.gz`` read through gzip), with the shape its header gives."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as exc:  # a damaged .gz says so only when read
        raise IdxFileError(f"'{path}' does not read ({type(exc).__name__}: {exc}); replace the file") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != UBYTE or raw[3] < 1:
        raise IdxFileError(f"'{path}' is not an IDX file of unsigned bytes (header {raw[:4].hex() or 'empty'}); "
                           "replace the file")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise IdxFileError(f"'{path}' ends inside its header; replace the file")
    shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    count = int(np.prod(shape))
    if len(raw) - header != count:
        raise IdxFileError(f"'{path}' holds {len(raw) - header:,} data bytes, its header promises {count:,} "
                           f"(shape {'x'.join(map(str, shape))}); replace the file")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def write_idx(path: str, array) -> str:
    """Write a uint8 array as an IDX file (gzipped when ``path`` ends with .gz); for tests and subsets."""
    a = np.ascontiguousarray(np.asarray(array, dtype=np.uint8))
    header = bytes([0, 0, UBYTE, a.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in a.shape)
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(header + a.tobytes())
    return path


def find_file(folder: str, name: str) -> Optional[str]:
    """``name`` or ``name.gz`` in ``folder`` (the extracted file first, as torchvision leaves both)."""
    for candidate in (name, name + ".gz"):
        path = os.path.join(folder, candidate)
        if os.path.isfile(path):
            return path
    return None


def complete_folder(folder: str) -> Optional[dict]:
    """The four files' paths when ``folder`` holds all of them, else None."""
    paths = {key: find_file(folder, name) for key, name in FILES.items()}
    return paths if all(paths.values()) else None


def locate(data_root: str, debian_folder: Optional[str] = None) -> dict:
    """The paths of the four files: torchvision's layout under ``data_root``, Debian's package, a download."""
    debian_folder = DEBIAN_FOLDER if debian_folder is None else debian_folder
    raw = os.path.join(data_root, RAW_FOLDER)
    for folder in (raw, debian_folder):
        paths = complete_folder(folder)
        if paths:
            return paths
    try:  # where a network exists; offline this fails within seconds
        import torchvision.datasets as tvd
        tvd.FashionMNIST(data_root, train=True, download=True)
        paths = complete_folder(raw)
        if paths:
            return paths
        reason = f"the download left no complete set in '{raw}'"
    except Exception as exc:  # noqa: BLE001 - any failure means: tell the user the three ways
        reason = f"download failed: {type(exc).__name__}"
    names = ", ".join(f"{n}[.gz]" for n in FILES.values())
    raise FileNotFoundError(
        f"fashion_mnist not found: not in '{raw}' (torchvision's layout under --data_root), not in '{debian_folder}' "
        f"(Debian: apt-get install dataset-fashion-mnist), and not downloadable ({reason}); place {names} in one of "
        "the two folders, or run once with network access")


def to_images(x: np.ndarray, path: str) -> torch.Tensor:
    """(N, 28, 28) uint8 -> (N, 3, 32, 32): zero padding around the image, the gray channel three times."""
    if x.ndim != 3:
        raise IdxFileError(f"'{path}' holds a {x.ndim}-dimensional array, not a stack of images; replace the file")
    t = torch.from_numpy(x.copy())[:, None]
    pad_h, pad_w = SIDE - t.shape[2], SIDE - t.shape[3]
    if pad_h < 0 or pad_w < 0:
        raise IdxFileError(f"'{path}' holds {t.shape[2]}x{t.shape[3]} images, larger than {SIDE}x{SIDE}")
    t = F.pad(t, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
    return t.expand(-1, 3, -1, -1).contiguous()


def to_labels(y: np.ndarray, path: str, count: int) -> torch.Tensor:
    if y.ndim != 1 or y.shape[0] != count:
        raise IdxFileError(f"'{path}' holds {y.shape[0] if y.ndim else 0} labels for {count} images; replace it")
    if y.size and int(y.max()) >= NUM_CLASSES:
        raise IdxFileError(f"'{path}' has label {int(y.max())}; Fashion-MNIST has classes 0..{NUM_CLASSES - 1}")
    return torch.from_numpy(y.astype(np.int64))


def channel_stats(images: torch.Tensor) -> List[float]:
    """Mean and std of the (padded) training images in [0, 1], one value for all three equal channels."""
    x = images[:, 0].double().div_(255.0)
    return [x.mean().item(), x.std().item()]


@register_dataset("fashion_mnist")
def load_fashion_mnist(data_root):
    paths = locate(data_root)
    train_x = to_images(read_idx(paths["train_x"]), paths["train_x"])
    test_x = to_images(read_idx(paths["test_x"]), paths["test_x"])
    train_y = to_labels(read_idx(paths["train_y"]), paths["train_y"], train_x.shape[0])
    test_y = to_labels(read_idx(paths["test_y"]), paths["test_y"], test_x.shape[0])
    mean, std = channel_stats(train_x)
    return dict(train_x=train_x, train_y=train_y, test_x=test_x, test_y=test_y, num_classes=NUM_CLASSES,
                mean=(mean,) * 3, std=(std,) * 3, flip=True)
