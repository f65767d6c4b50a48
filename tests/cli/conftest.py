import numpy as np
import pytest

from dataset.cifar import write_cifar_format


@pytest.fixture(scope="session")
def tiny_cifar(tmp_path_factory):
    """A CIFAR-100-format data set: 300 train images (3 per class) and 100 test images."""
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    ty = np.arange(300) % 100
    # class-dependent mean colour so that a model can learn something in a few steps
    base = (np.arange(100)[:, None] * np.array([37, 91, 53])[None, :]) % 200
    tx = (base[ty][:, :, None, None] + rng.integers(0, 56, (300, 3, 32, 32))).astype(np.uint8)
    vy = np.arange(100) % 100
    vx = (base[vy][:, :, None, None] + rng.integers(0, 56, (100, 3, 32, 32))).astype(np.uint8)
    write_cifar_format(str(root), "cifar100", tx, ty, vx, vy)
    return str(root)


def common_args(data_root, save_dir, epochs=1):
    return ["--dataset", "cifar100", "--data_root", data_root, "--save_dir", str(save_dir), "--epochs",
            str(epochs), "--batch_size", "32", "--device", "cpu", "--save_freq", "1"]
