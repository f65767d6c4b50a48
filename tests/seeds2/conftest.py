import numpy as np
import pytest

from dataset.cifar import write_cifar_format
from tests.cli.conftest import tiny_cifar  # noqa: F401


def _class_images(labels, rng):
    # class-dependent mean colour plus noise (as tests/cli/conftest.py), so that a model can learn a little
    base = (np.arange(100)[:, None] * np.array([37, 91, 53])[None, :]) % 200
    return (base[labels][:, :, None, None] + rng.integers(0, 56, (len(labels), 3, 32, 32))).astype(np.uint8)


@pytest.fixture(scope="session")
def micro_cifar(tmp_path_factory):
    """CIFAR-100 format, 24 training images (3 of each of 8 classes) and 8 test images.

    The BYOT ResNet18/50 and the CheckpointKD teachers (wrn_40_2, resnet110) take seconds per batch on the
    test machine's CPU, so their end-to-end runs use this rather than ``tiny_cifar``.
    """
    root = tmp_path_factory.mktemp("micro_data")
    rng = np.random.default_rng(5)
    ty = np.arange(24) % 8
    vy = np.arange(8) % 8
    write_cifar_format(str(root), "cifar100", _class_images(ty, rng), ty, _class_images(vy, rng), vy)
    return str(root)


def cpu_args(data_root, save_dir, epochs=1, batch_size=16):
    return ["--dataset", "cifar100", "--data_root", data_root, "--save_dir", str(save_dir), "--epochs", str(epochs),
            "--batch_size", str(batch_size), "--device", "cpu"]
