"""CIFAR-10/100 from torchvision's on-disk python format (``cifar-100-python/``, ``cifar-10-batches-py/``).

The extracted files are read directly, without the official archive checksums, so small CIFAR-format
sets written by tests (or a subset a user made) work too.
"""
from __future__ import annotations

import os
import pickle
import tarfile

import numpy as np
import torch

from .registry import register_dataset

CIFAR100_MEAN = (0.5071, 0.4867, 0.4408)
CIFAR100_STD = (0.2675, 0.2565, 0.2761)
# RepDistiller has no CIFAR-10 path; these are the usual CIFAR-10 training-set statistics.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)

_SPECS = {
    "cifar100": dict(folder="cifar-100-python", archive="cifar-100-python.tar.gz",
                     url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                     train=["train"], test=["test"], label_key="fine_labels", num_classes=100,
                     mean=CIFAR100_MEAN, std=CIFAR100_STD),
    "cifar10": dict(folder="cifar-10-batches-py", archive="cifar-10-python.tar.gz",
                    url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                    train=[f"data_batch_{i}" for i in range(1, 6)], test=["test_batch"], label_key="labels",
                    num_classes=10, mean=CIFAR10_MEAN, std=CIFAR10_STD),
}


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only: a data file must not be able to run code."""

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
                ("numpy._core.multiarray", "scalar")}

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise _RefusedGlobal(f"{module}.{name}")


class _RefusedGlobal(pickle.UnpicklingError):
    def __init__(self, name: str):
        super().__init__(f"refusing to load {name} from a CIFAR file")
        self.name = name


class CifarFileError(ValueError):
    """A CIFAR batch file that cannot be read; the message names the file and the archive to re-extract."""


def _read_batch(path: str, label_key: str, archive: str = "the archive"):
    again = f"re-extract the archive {archive}"
    try:
        with open(path, "rb") as f:
            entry = _ArrayUnpickler(f, encoding="bytes").load()
    except _RefusedGlobal as exc:
        raise CifarFileError(f"refused: '{path}' would call {exc.name}, which a CIFAR batch file never does "
                             f"(nothing was run); {again}") from None
    except (EOFError, pickle.UnpicklingError) as exc:
        # CPython's unpickler says "pickle data was truncated" when the file ends early
        if isinstance(exc, EOFError) or "truncated" in str(exc):
            raise CifarFileError(f"'{path}' is truncated ({os.path.getsize(path):,} bytes); {again}") from None
        raise CifarFileError(f"'{path}' is damaged ({type(exc).__name__}); {again}") from None
    except (ValueError, TypeError, IndexError, KeyError, AttributeError, UnicodeDecodeError, MemoryError) as exc:
        # what a damaged pickle raises depends on where the damage is; the fix is the same
        raise CifarFileError(f"'{path}' is damaged ({type(exc).__name__}); {again}") from None
    if not isinstance(entry, dict):
        raise CifarFileError(f"'{path}' is not a CIFAR batch file (holds a {type(entry).__name__}); {again}")
    entry = {(k.decode() if isinstance(k, bytes) else k): v for k, v in entry.items()}
    if "data" not in entry or label_key not in entry:
        raise CifarFileError(f"'{path}' is not a CIFAR batch file (needs 'data' and '{label_key}'); {again}")
    data = np.asarray(entry["data"], dtype=np.uint8)
    if data.size % (3 * 32 * 32):
        raise CifarFileError(f"'{path}' holds {data.size} pixel values, not whole 3x32x32 images; {again}")
    data = data.reshape(-1, 3, 32, 32)
    labels = np.asarray(entry[label_key], dtype=np.int64)
    if data.shape[0] != labels.shape[0]:
        raise CifarFileError(f"'{path}': {data.shape[0]} images but {labels.shape[0]} labels; {again}")
    return data, labels


def _ensure_present(name: str, data_root: str) -> str:
    spec = _SPECS[name]
    folder = os.path.join(data_root, spec["folder"])
    needed = spec["train"] + spec["test"]
    if all(os.path.isfile(os.path.join(folder, f)) for f in needed):
        return folder
    archive = os.path.join(data_root, spec["archive"])
    if os.path.isfile(archive):
        with tarfile.open(archive) as tar:
            tar.extractall(data_root, filter="data")
    else:
        try:  # downloads where a network exists; offline this fails quickly
            import torchvision.datasets as tvd
            cls = tvd.CIFAR100 if name == "cifar100" else tvd.CIFAR10
            cls(data_root, train=True, download=True)
        except Exception as exc:  # noqa: BLE001 - any failure means: tell the user what to place where
            raise FileNotFoundError(
                f"{name} not found in '{folder}' and could not be downloaded ({type(exc).__name__}). "
                f"Place the archive {spec['archive']} ({spec['url']}) in '{data_root}' or extract it so that "
                f"'{folder}' holds {', '.join(needed)}; or pass --data_root to where it is.") from None
    missing = [f for f in needed if not os.path.isfile(os.path.join(folder, f))]
    if missing:
        raise FileNotFoundError(f"'{folder}' lacks {', '.join(missing)}; re-extract {spec['archive']}")
    return folder


def _load(name: str, data_root: str):
    spec = _SPECS[name]
    folder = _ensure_present(name, data_root)

    def read(files):
        parts = [_read_batch(os.path.join(folder, f), spec["label_key"], spec["archive"]) for f in files]
        return (torch.from_numpy(np.concatenate([p[0] for p in parts])),
                torch.from_numpy(np.concatenate([p[1] for p in parts])))

    train_x, train_y = read(spec["train"])
    test_x, test_y = read(spec["test"])
    return dict(train_x=train_x, train_y=train_y, test_x=test_x, test_y=test_y,
                num_classes=spec["num_classes"], mean=spec["mean"], std=spec["std"], flip=True)


@register_dataset("cifar100")
def load_cifar100(data_root):
    return _load("cifar100", data_root)


@register_dataset("cifar10")
def load_cifar10(data_root):
    return _load("cifar10", data_root)


def write_cifar_format(data_root: str, name: str, train_x, train_y, test_x, test_y) -> str:
    """Write uint8 (N,3,32,32) arrays in torchvision's CIFAR python format (for tests and subsets)."""
    spec = _SPECS[name]
    folder = os.path.join(data_root, spec["folder"])
    os.makedirs(folder, exist_ok=True)

    def dump(fname, x, y):
        with open(os.path.join(folder, fname), "wb") as f:
            pickle.dump({b"data": np.asarray(x, dtype=np.uint8).reshape(len(x), -1),
                         spec["label_key"].encode(): [int(v) for v in y]}, f)

    chunks = np.array_split(np.arange(len(train_x)), len(spec["train"]))
    for fname, idx in zip(spec["train"], chunks):
        dump(fname, np.asarray(train_x)[idx], np.asarray(train_y)[idx])
    dump(spec["test"][0], test_x, test_y)
    return folder
