import numpy as np
import pytest

from dataset.cifar import write_cifar_format
from tests.cli.conftest import tiny_cifar  # noqa: F401


def _class_images(labels, rng):
    # class-dependent mean colour plus noise, as tests/cli/conftest.py, so a model can learn a little
    base = (np.arange(100)[:, None] * np.array([37, 91, 53])[None, :]) % 200
    return (base[labels][:, :, None, None] + rng.integers(0, 56, (len(labels), 3, 32, 32))).astype(np.uint8)


@pytest.fixture(scope="session")
def seed_cifar(tmp_path_factory):
    """CIFAR-100 format with images of 20 of the classes: 40 training images (2 per class, enough for a
    stratified hold-out) and 20 test images.

    Much smaller than ``tiny_cifar`` because the seed READMEs name big teachers (resnet110, resnet32x4) and
    re-parameterised students, and the test machine's CPU is slow.
    """
    root = tmp_path_factory.mktemp("seed_data")
    rng = np.random.default_rng(1)
    ty = np.arange(40) % 20
    vy = np.arange(20) % 20
    write_cifar_format(str(root), "cifar100", _class_images(ty, rng), ty, _class_images(vy, rng), vy)
    return str(root)


@pytest.fixture(scope="session")
def teacher_cifar(tmp_path_factory):
    """16 training / 8 test images: just enough for a one-epoch teacher run through train_teacher.py."""
    root = tmp_path_factory.mktemp("teacher_data")
    rng = np.random.default_rng(2)
    ty = np.arange(16) % 100
    vy = np.arange(8) % 100
    write_cifar_format(str(root), "cifar100", _class_images(ty, rng), ty, _class_images(vy, rng), vy)
    return str(root)
