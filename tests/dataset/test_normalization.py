"""--data_norm presets (dataset/normalization.py)."""
import torch

from dataset import set_normalization
from dataset.core import DataBundle, TensorImageSet


def test_byot_normalisation_constants():
    imgs = torch.full((2, 3, 4, 4), 255, dtype=torch.uint8)
    split = TensorImageSet(imgs, torch.zeros(2), (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761))
    data = DataBundle("cifar100", split, split.to("cpu"), 100)
    set_normalization(data, "byot")
    x = data.test.normalize(imgs)
    expect = [(1 - m) / s for m, s in zip((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))]
    assert torch.allclose(x[0, :, 0, 0], torch.tensor(expect))
