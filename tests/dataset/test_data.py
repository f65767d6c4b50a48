import numpy as np
import pytest
import torch

from dataset import build_dataset
from dataset.cifar import CIFAR100_MEAN, CIFAR100_STD, write_cifar_format
from dataset.core import TensorImageSet, epoch_generator, random_crop_flip


def _cifar(tmp_path, n_train=40, n_test=20, classes=100, seed=0):
    rng = np.random.default_rng(seed)
    tx = rng.integers(0, 256, (n_train, 3, 32, 32), dtype=np.uint8)
    ty = np.arange(n_train) % classes
    vx = rng.integers(0, 256, (n_test, 3, 32, 32), dtype=np.uint8)
    vy = np.arange(n_test) % classes
    write_cifar_format(str(tmp_path), "cifar100", tx, ty, vx, vy)
    return tx, ty, vx, vy


def test_cifar_format_roundtrip_without_checksums(tmp_path):
    tx, ty, vx, vy = _cifar(tmp_path)
    b = build_dataset("cifar100", str(tmp_path))
    assert b.num_classes == 100 and len(b.train) == 40 and len(b.test) == 20
    assert torch.equal(b.train.images, torch.from_numpy(tx))
    assert b.train.targets.tolist() == ty.tolist()
    assert torch.equal(b.test.images, torch.from_numpy(vx))


def test_cifar10_format(tmp_path):
    rng = np.random.default_rng(1)
    tx = rng.integers(0, 256, (25, 3, 32, 32), dtype=np.uint8)
    write_cifar_format(str(tmp_path), "cifar10", tx, np.arange(25) % 10, tx[:5], np.arange(5))
    b = build_dataset("cifar10", str(tmp_path))
    assert b.num_classes == 10 and len(b.train) == 25 and len(b.test) == 5
    assert torch.equal(b.train.images, torch.from_numpy(tx))  # 5 batch files concatenated in order


def test_missing_cifar_names_folder_and_archive(tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    def offline(*a, **k):
        raise OSError("no network")
    monkeypatch.setattr(tvd, "CIFAR100", offline)
    with pytest.raises(FileNotFoundError) as e:
        build_dataset("cifar100", str(tmp_path))
    msg = str(e.value)
    assert "cifar-100-python" in msg and "cifar-100-python.tar.gz" in msg and "--data_root" in msg


def test_unknown_dataset():
    with pytest.raises(ValueError, match="cifar100"):
        build_dataset("imagenet-21k")


def test_normalisation_matches_torchvision_transform(tmp_path):
    tx, *_ = _cifar(tmp_path)
    b = build_dataset("cifar100", str(tmp_path))
    batch = next(b.test.eval_batches(8))
    # torchvision: ToTensor (x/255) then Normalize(mean, std), computed here channel by channel
    imgs = b.test.images[:8].float() / 255
    for c in range(3):
        expect = (imgs[:, c] - CIFAR100_MEAN[c]) / CIFAR100_STD[c]
        assert torch.allclose(batch.x[:, c], expect, atol=1e-6)


def test_crop_flip_statistics():
    # an image whose pixel value encodes its column lets us read back crop offset and flip
    B, H, W, pad = 4000, 32, 8, 4
    cols = torch.arange(W, dtype=torch.uint8) + 1
    x = cols.view(1, 1, 1, W).expand(B, 3, H, W).contiguous()
    out = random_crop_flip(x, pad, True, torch.Generator().manual_seed(0))
    assert out.shape == (B, 3, H, W)
    row = out[:, 0, H // 2].long()  # middle row: zeros where padding came in
    nz = row != 0
    # flipped images have decreasing column values, unflipped increasing
    first = torch.stack([r[m][0] for r, m in zip(row[:200], nz[:200])])
    last = torch.stack([r[m][-1] for r, m in zip(row[:200], nz[:200])])
    flipped = (first > last).float().mean().item()
    assert 0.4 < flipped < 0.6
    # horizontal offset uniform over 0..8: the number of zero columns takes every value 0..4
    zero_cols = (~nz).sum(1)
    assert set(zero_cols.unique().tolist()) == {0, 1, 2, 3, 4}
    # P(no zero columns) = P(offset == pad) = 1/9
    assert abs((zero_cols == 0).float().mean().item() - 1 / 9) < 0.03
    # no flip option: never decreasing
    out2 = random_crop_flip(x[:200], pad, False, torch.Generator().manual_seed(0))
    r2 = out2[:, 0, H // 2].long()
    for r in r2:
        v = r[r != 0]
        assert torch.all(v[1:] > v[:-1])


def test_shuffle_reproducible_and_a_permutation():
    imgs = torch.zeros(50, 3, 32, 32, dtype=torch.uint8)
    s = TensorImageSet(imgs, torch.arange(50) % 5, (0.5,) * 3, (0.25,) * 3)
    a = torch.cat([b.index for b in s.train_batches(16, seed=3, epoch=2)])
    b = torch.cat([b.index for b in s.train_batches(16, seed=3, epoch=2)])
    c = torch.cat([b.index for b in s.train_batches(16, seed=3, epoch=3)])
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert sorted(a.tolist()) == list(range(50))
    sizes = [bt.y.numel() for bt in s.train_batches(16, seed=3, epoch=2)]
    assert sizes == [16, 16, 16, 2]
    bt = next(s.train_batches(16, seed=3, epoch=2))
    assert torch.equal(bt.y, s.targets[bt.index])


def test_epoch_generator_depends_on_seed_and_epoch():
    d = torch.device("cpu")
    x1 = torch.rand(3, generator=epoch_generator(0, 1, d))
    assert torch.equal(x1, torch.rand(3, generator=epoch_generator(0, 1, d)))
    assert not torch.equal(x1, torch.rand(3, generator=epoch_generator(1, 1, d)))
    assert not torch.equal(x1, torch.rand(3, generator=epoch_generator(0, 2, d)))


def test_digits_split():
    b = build_dataset("digits")
    assert b.num_classes == 10
    assert len(b.train) + len(b.test) == 1797
    assert b.train.images.shape[1:] == (3, 32, 32) and b.train.images.dtype == torch.uint8
    # stratified: every class has ~20% of its samples in the test split
    for c in range(10):
        n_te = int((b.test.targets == c).sum())
        n_tr = int((b.train.targets == c).sum())
        assert abs(n_te / (n_te + n_tr) - 0.2) < 0.01
    assert b.train.flip is False
    # normalised training pixels have ~zero mean, unit std
    x = b.train.normalize(b.train.images)
    assert abs(x.mean().item()) < 1e-3 and abs(x.std().item() - 1) < 1e-3
    # the split is fixed
    assert torch.equal(b.test.targets, build_dataset("digits").test.targets)
