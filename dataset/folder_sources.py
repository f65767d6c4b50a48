"""Where the images of a large data set are and what class each has: torchvision's ImageFolder layout,
Tiny-ImageNet's layout, and tar shards in WebDataset's format; every sample is read by its index.

* ImageFolder (``--dataset imagenet``): ``DIR/train/<class>/*.JPEG`` and ``DIR/val/<class>/*.JPEG``; classes are the
  sorted sub-folder names of ``train`` (torchvision's rule, so class indices equal ImageFolder's and its published
  models'), files sorted within a class.
* Tiny-ImageNet (``--dataset tiny_imagenet``): ``DIR/train/<wnid>/images/*.JPEG`` and ``DIR/val/images/*.JPEG`` with
  ``DIR/val/val_annotations.txt`` (file name, wnid, box per line), the archive's own layout; a ``val`` already sorted
  into class sub-folders is read as an ImageFolder too.
* WebDataset shards (``--data_format webdataset``): ``DIR/train/*.tar`` and ``DIR/val/*.tar``; a sample is the tar
  members sharing a key (the name up to its first dot): an image (``.jpg``, ``.jpeg``, ``.png``, ``.webp``) and its
  class index (``.cls``, decimal text). The shards are indexed once (member headers only, no image bytes read) and
  read by offset, so the order, the per-sample augmentation, the indices CRD needs and within-epoch resume are those
  of the folder layouts. The ``webdataset`` package is not needed for this; streaming shards from an object store is
  not supported.

A missing or malformed folder is one ``ValueError`` line that names the path and says what to do.
"""
from __future__ import annotations

import io
import os
import tarfile
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
TAR_IMAGE_SUFFIXES = ("jpg", "jpeg", "png", "webp")


class DataFolderError(ValueError):
    """A data folder that cannot be read as the data set it is given as (one line: path and remedy)."""


@dataclass
class SampleList:
    """The samples of one split: ``targets[i]`` is sample i's class; ``read(i)`` returns its encoded bytes."""

    targets: np.ndarray  # int64 (N,)
    classes: List[str]
    # ImageFolder and Tiny-ImageNet: one file path per sample
    paths: Optional[List[str]] = None
    # tar shards: the shard of each sample, and the byte offset and size of its image in it
    shards: Optional[List[str]] = None
    shard_of: Optional[np.ndarray] = None
    offsets: Optional[np.ndarray] = None
    sizes: Optional[np.ndarray] = None

    def __len__(self) -> int:
        return int(self.targets.shape[0])

    def read(self, i: int) -> bytes:
        if self.paths is not None:
            with open(self.paths[i], "rb") as f:
                return f.read()
        with open(self.shards[int(self.shard_of[i])], "rb") as f:
            f.seek(int(self.offsets[i]))
            return f.read(int(self.sizes[i]))

    def describe(self, i: int) -> str:
        """The sample's file (or shard and member) for an error message."""
        if self.paths is not None:
            return f"'{self.paths[i]}'"
        return f"'{self.shards[int(self.shard_of[i])]}' at byte {int(self.offsets[i])}"


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES) and not name.startswith(".")


def _require_folder(path: str, what: str, remedy: str) -> None:
    if not os.path.isdir(path):
        raise DataFolderError(f"{what} '{path}' does not exist or is not a folder; {remedy}")


def class_folders(split_dir: str) -> List[str]:
    return sorted(e.name for e in os.scandir(split_dir) if e.is_dir() and not e.name.startswith("."))


def scan_image_folder(split_dir: str, classes: Optional[Sequence[str]] = None, images_subfolder: str = "",
                      layout: str = "ImageFolder") -> SampleList:
    """``split_dir/<class>[/images_subfolder]/<image>``; ``classes``: the training split's (val must match)."""
    remedy = (f"--data_root must hold train/ and val/ in {layout} layout (one sub-folder of images per class)")
    _require_folder(split_dir, "data folder", remedy)
    found = class_folders(split_dir)
    if not found:
        raise DataFolderError(f"'{split_dir}' has no class sub-folders; {remedy}")
    if classes is None:
        classes = found
    else:
        unknown = sorted(set(found) - set(classes))
        if unknown:
            raise DataFolderError(f"'{split_dir}' has class folder '{unknown[0]}' that the training split lacks "
                                  f"({len(unknown)} such); train/ and val/ must have the same classes")
    index = {c: i for i, c in enumerate(classes)}
    paths, targets = [], []
    for c in found:
        folder = os.path.join(split_dir, c, images_subfolder) if images_subfolder else os.path.join(split_dir, c)
        if not os.path.isdir(folder):
            raise DataFolderError(f"'{folder}' is missing; {remedy}")
        names = sorted(n for n in os.listdir(folder) if _is_image(n))
        paths += [os.path.join(folder, n) for n in names]
        targets += [index[c]] * len(names)
    if not paths:
        raise DataFolderError(f"'{split_dir}' holds no image files ({', '.join(IMAGE_SUFFIXES[:3])}, ...); {remedy}")
    return SampleList(np.asarray(targets, dtype=np.int64), list(classes), paths=paths)


def image_folder_splits(root: str) -> Tuple[SampleList, SampleList]:
    """ImageNet in torchvision's layout: ``root/train`` and ``root/val``."""
    train = scan_image_folder(os.path.join(root, "train"))
    return train, scan_image_folder(os.path.join(root, "val"), train.classes)


def tiny_imagenet_splits(root: str) -> Tuple[SampleList, SampleList]:
    """Tiny-ImageNet as its archive unpacks (``root`` may also be the folder holding ``tiny-imagenet-200``)."""
    if not os.path.isdir(os.path.join(root, "train")) and os.path.isdir(os.path.join(root, "tiny-imagenet-200")):
        root = os.path.join(root, "tiny-imagenet-200")
    remedy = "--data_root must be the unpacked tiny-imagenet-200 folder (train/<wnid>/images, val/images and " \
             "val/val_annotations.txt)"
    train_dir, val_dir = os.path.join(root, "train"), os.path.join(root, "val")
    _require_folder(train_dir, "Tiny-ImageNet folder", remedy)
    classes = class_folders(train_dir)
    nested = bool(classes) and os.path.isdir(os.path.join(train_dir, classes[0], "images"))
    train = scan_image_folder(train_dir, images_subfolder="images" if nested else "", layout="Tiny-ImageNet")
    annotations = os.path.join(val_dir, "val_annotations.txt")
    if not os.path.isfile(annotations):
        if os.path.isdir(val_dir) and class_folders(val_dir) and not os.path.isdir(os.path.join(val_dir, "images")):
            return train, scan_image_folder(val_dir, train.classes, layout="Tiny-ImageNet")
        raise DataFolderError(f"'{annotations}' is missing; {remedy}")
    index = {c: i for i, c in enumerate(train.classes)}
    paths, targets = [], []
    with open(annotations) as f:
        for number, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) < 2 or fields[1] not in index:
                raise DataFolderError(f"'{annotations}' line {number}: expected '<file> <wnid> ...' with a wnid of "
                                      f"train/, got '{line.strip()[:60]}'")
            paths.append(os.path.join(val_dir, "images", fields[0]))
            targets.append(index[fields[1]])
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise DataFolderError(f"'{missing[0]}', named in '{annotations}', does not exist ({len(missing)} such); "
                              f"{remedy}")
    return train, SampleList(np.asarray(targets, dtype=np.int64), train.classes, paths=paths)


def index_shards(split_dir: str) -> SampleList:
    """The samples of ``split_dir/*.tar`` in shard order, then member order."""
    remedy = ("--data_format webdataset needs --data_root with train/ and val/ folders of .tar shards whose samples "
              "are <key>.jpg and <key>.cls members")
    _require_folder(split_dir, "shard folder", remedy)
    shards = sorted(os.path.join(split_dir, n) for n in os.listdir(split_dir) if n.endswith(".tar"))
    if not shards:
        raise DataFolderError(f"'{split_dir}' holds no .tar shards; {remedy}")
    shard_of, offsets, sizes, targets = [], [], [], []
    for s, shard in enumerate(shards):
        try:
            with tarfile.open(shard, "r:") as tar:
                images, labels, order = {}, {}, []
                for member in tar:
                    if not member.isfile():
                        continue
                    base = os.path.basename(member.name)
                    key, _, suffix = base.partition(".")
                    key = os.path.join(os.path.dirname(member.name), key)
                    suffix = suffix.lower()
                    if suffix in TAR_IMAGE_SUFFIXES:
                        if key not in images:
                            order.append(key)
                        images[key] = (member.offset_data, member.size)
                    elif suffix == "cls":
                        labels[key] = tar.extractfile(member).read()
        except (tarfile.TarError, OSError) as exc:
            raise DataFolderError(f"'{shard}' is not a readable uncompressed tar shard ({type(exc).__name__}); "
                                  f"{remedy}") from None
        for key in order:
            if key not in labels:
                raise DataFolderError(f"'{shard}': sample '{key}' has an image but no .cls member; {remedy}")
            try:
                label = int(labels[key].decode().strip())
            except (UnicodeDecodeError, ValueError):
                raise DataFolderError(f"'{shard}': '{key}.cls' is not a class index ({labels[key][:20]!r})") from None
            offset, size = images[key]
            shard_of.append(s)
            offsets.append(offset)
            sizes.append(size)
            targets.append(label)
    if not targets:
        raise DataFolderError(f"the shards in '{split_dir}' hold no image samples; {remedy}")
    targets = np.asarray(targets, dtype=np.int64)
    if targets.min() < 0:
        raise DataFolderError(f"the shards in '{split_dir}' hold a negative class index")
    return SampleList(targets, [], shards=shards, shard_of=np.asarray(shard_of), offsets=np.asarray(offsets),
                      sizes=np.asarray(sizes))


def shard_splits(root: str) -> Tuple[SampleList, SampleList]:
    train, val = index_shards(os.path.join(root, "train")), index_shards(os.path.join(root, "val"))
    n = int(max(train.targets.max(), val.targets.max())) + 1
    train.classes = val.classes = [str(c) for c in range(n)]
    return train, val


def write_shard(path: str, samples: Sequence[Tuple[str, bytes, int]]) -> str:
    """A tar shard of ``(key, jpeg bytes, class)`` samples in WebDataset's format (tests, converting a subset)."""
    with tarfile.open(path, "w") as tar:
        for key, data, label in samples:
            for suffix, payload in (("jpg", data), ("cls", str(int(label)).encode())):
                info = tarfile.TarInfo(f"{key}.{suffix}")
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
    return path
