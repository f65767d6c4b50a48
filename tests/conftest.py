"""Fixtures and argument helpers shared by every test folder: small CIFAR-100-format data sets on disk.

The data sets differ only in size; each is as small as the runs that use it allow, because the test machine's CPU
is slow and the seed READMEs name big teachers.
"""
import numpy as np
import pytest
import torch

import engine.fit
from dataset.cifar import write_cifar_format
from models.multi_resnet import multi_resnet18_kd


def _class_images(labels, rng):
    # class-dependent mean colour plus noise, so that a model can learn something in a few steps
    base = (np.arange(100)[:, None] * np.array([37, 91, 53])[None, :]) % 200
    return (base[labels][:, :, None, None] + rng.integers(0, 56, (len(labels), 3, 32, 32))).astype(np.uint8)


def _write_cifar100(root, seed, n_train, n_test, n_classes):
    rng = np.random.default_rng(seed)
    ty = np.arange(n_train) % n_classes
    vy = np.arange(n_test) % n_classes
    write_cifar_format(str(root), "cifar100", _class_images(ty, rng), ty, _class_images(vy, rng), vy)
    return str(root)


@pytest.fixture(scope="session")
def tiny_cifar(tmp_path_factory):
    """A CIFAR-100-format data set: 300 train images (3 per class) and 100 test images."""
    return _write_cifar100(tmp_path_factory.mktemp("data"), 0, 300, 100, 100)


@pytest.fixture(scope="session")
def seed_cifar(tmp_path_factory):
    """CIFAR-100 format with images of 20 of the classes: 40 training images (2 per class, enough for a
    stratified hold-out) and 20 test images.

    Much smaller than ``tiny_cifar`` because the seed READMEs name big teachers (resnet110, resnet32x4) and
    re-parameterised students, and the test machine's CPU is slow.
    """
    return _write_cifar100(tmp_path_factory.mktemp("seed_data"), 1, 40, 20, 20)


@pytest.fixture(scope="session")
def teacher_cifar(tmp_path_factory):
    """16 training / 8 test images: just enough for a one-epoch teacher run through train_teacher.py."""
    return _write_cifar100(tmp_path_factory.mktemp("teacher_data"), 2, 16, 8, 100)


@pytest.fixture(scope="session")
def micro_cifar(tmp_path_factory):
    """CIFAR-100 format, 24 training images (3 of each of 8 classes) and 8 test images.

    The BYOT ResNet18/50 and the CheckpointKD teachers (wrn_40_2, resnet110) take seconds per batch on the
    test machine's CPU, so their end-to-end runs use this rather than ``tiny_cifar``.
    """
    return _write_cifar100(tmp_path_factory.mktemp("micro_data"), 5, 24, 8, 8)


@pytest.fixture(scope="module")
def r18():
    """BYOT's multi-exit ResNet18 with 10 classes, shared by its model, loss and exit-evaluation tests."""
    torch.manual_seed(0)
    return multi_resnet18_kd(num_classes=10)


def common_args(data_root, save_dir, epochs=1):
    return ["--dataset", "cifar100", "--data_root", data_root, "--save_dir", str(save_dir), "--epochs",
            str(epochs), "--batch_size", "32", "--device", "cpu", "--save_freq", "1"]


def cpu_args(data_root, save_dir, epochs=1, batch_size=16):
    return ["--dataset", "cifar100", "--data_root", data_root, "--save_dir", str(save_dir), "--epochs", str(epochs),
            "--batch_size", str(batch_size), "--device", "cpu"]


def write_jpeg_folder(split_dir, n_classes, per_class, size, seed, layout="imagefolder"):
    """Real JPEG files, a class-dependent colour plus noise, in class sub-folders (``layout="tiny"``: Tiny-ImageNet's
    ``<wnid>/images/``); sizes vary a little so that crops and resizes see non-square images."""
    import os

    from PIL import Image

    rng = np.random.default_rng(seed)
    base = (np.arange(n_classes)[:, None] * np.array([67, 131, 29])[None, :]) % 200
    for c in range(n_classes):
        folder = os.path.join(split_dir, f"n{c:08d}", "images" if layout == "tiny" else "")
        os.makedirs(folder, exist_ok=True)
        for i in range(per_class):
            h, w = size + int(rng.integers(0, 9)), size + int(rng.integers(0, 9))
            pixels = (base[c][None, None, :] + rng.integers(0, 56, (h, w, 3))).astype(np.uint8)
            Image.fromarray(pixels).save(os.path.join(folder, f"img_{c}_{i}.JPEG"), quality=90)


def write_imagenet_folder(root, n_classes=3, train_per_class=4, val_per_class=2, size=40, seed=0):
    """ImageNet in torchvision's ImageFolder layout (root/train, root/val) with small real JPEG files."""
    import os

    write_jpeg_folder(os.path.join(str(root), "train"), n_classes, train_per_class, size, seed)
    write_jpeg_folder(os.path.join(str(root), "val"), n_classes, val_per_class, size, seed + 1)
    return str(root)


@pytest.fixture(scope="session")
def jpeg_imagenet(tmp_path_factory):
    """A 3-class ImageFolder of real JPEG files about 40 pixels wide: 12 training and 6 validation images."""
    return write_imagenet_folder(tmp_path_factory.mktemp("jpeg_imagenet"))


def imagenet_args(data_root, save_dir, epochs=1, batch_size=4, crop=32):
    """A tiny ImageNet run: small crops (the ImageNet networks pool adaptively), no workers, CPU."""
    return ["--dataset", "imagenet", "--data_root", data_root, "--save_dir", str(save_dir), "--epochs", str(epochs),
            "--batch_size", str(batch_size), "--device", "cpu", "--crop_size", str(crop), "--num_workers", "0",
            "--test_batch_size", "8"]


def interrupt_after_saves(monkeypatch, saves):
    """Stop the run (as Ctrl-C would) right after its ``saves``-th checkpoint within an epoch."""
    real, count = engine.fit.save_within_epoch, []

    def save_then_stop(*args, **kwargs):
        real(*args, **kwargs)
        count.append(1)
        if len(count) == saves:
            raise KeyboardInterrupt

    monkeypatch.setattr(engine.fit, "save_within_epoch", save_then_stop)
