"""--dataset fashion_mnist: the IDX reader on hand-made files in torchvision's raw layout (gzipped and not), the
Debian package folder as the second place, the one-line error naming all three, and the real files when present."""
import gzip
import os

import numpy as np
import pytest
import torch

import dataset.fashion_mnist as fm
from dataset import build_dataset
from dataset.fashion_mnist import FILES, IdxFileError, read_idx, write_idx


def raw_set(folder, n_train=6, n_test=4, gz=True, seed=0):
    """Four IDX files of random 28x28 images and labels 0..9 in ``folder``; returns the arrays."""
    rng = np.random.default_rng(seed)
    arrays = {"train_x": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
              "train_y": (np.arange(n_train) % 10).astype(np.uint8),
              "test_x": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
              "test_y": (np.arange(n_test)[::-1] % 10).astype(np.uint8)}
    os.makedirs(folder, exist_ok=True)
    for key, name in FILES.items():
        write_idx(os.path.join(folder, name + (".gz" if gz else "")), arrays[key])
    return arrays


@pytest.fixture
def no_debian_no_network(tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    def offline(*args, **kwargs):
        raise OSError("no network")
    monkeypatch.setattr(tvd, "FashionMNIST", offline)
    monkeypatch.setattr(fm, "DEBIAN_FOLDER", str(tmp_path / "no_debian_package"))


def test_idx_header_is_read_by_hand(tmp_path):
    # magic 0x00000803 (unsigned bytes, 3 dimensions), then 2, 2, 3 as big-endian int32, then the 12 bytes
    path = tmp_path / "three.idx"
    path.write_bytes(bytes([0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 3]) + bytes(range(12)))
    assert read_idx(str(path)).tolist() == [[[0, 1, 2], [3, 4, 5]], [[6, 7, 8], [9, 10, 11]]]


@pytest.mark.parametrize("gz", [True, False], ids=["gzipped", "extracted"])
def test_torchvision_raw_layout_is_padded_to_32_and_three_channels(tmp_path, no_debian_no_network, gz):
    arrays = raw_set(tmp_path / "FashionMNIST" / "raw", gz=gz)
    data = build_dataset("fashion_mnist", str(tmp_path))
    assert data.num_classes == 10 and len(data.train) == 6 and len(data.test) == 4
    images = data.train.images
    assert images.shape == (6, 3, 32, 32) and images.dtype == torch.uint8
    # two zero rows/columns on every side, the 28x28 image in the middle, the same in all three channels
    assert torch.equal(images[:, 1, 2:30, 2:30], torch.from_numpy(arrays["train_x"]))
    assert torch.equal(images[:, 0], images[:, 2])
    assert images[:, :, :2].sum() == 0 and images[:, :, 30:].sum() == 0 and images[:, :, :, :2].sum() == 0
    assert data.test.targets.tolist() == [3, 2, 1, 0]
    assert data.train.flip  # RepDistiller's horizontal flip (clothes stay clothes), unlike digits


def test_mean_and_std_are_the_padded_training_split_s_own(tmp_path, no_debian_no_network):
    arrays = raw_set(tmp_path / "FashionMNIST" / "raw", n_train=3)
    padded = np.zeros((3, 32, 32))
    padded[:, 2:30, 2:30] = arrays["train_x"] / 255.0
    data = build_dataset("fashion_mnist", str(tmp_path))
    assert data.train.mean.flatten().tolist() == pytest.approx([padded.mean()] * 3, abs=1e-6)
    assert data.test.std.flatten().tolist() == pytest.approx([padded.std(ddof=1)] * 3, abs=1e-6)


def test_extracted_file_is_preferred_to_its_gz_and_the_two_may_mix(tmp_path, no_debian_no_network):
    raw = tmp_path / "FashionMNIST" / "raw"
    arrays = raw_set(raw, gz=True)
    # torchvision leaves both forms; a stale .gz next to the extracted file is not what is read
    write_idx(str(raw / FILES["test_y"]), np.full(4, 7, dtype=np.uint8))
    assert build_dataset("fashion_mnist", str(tmp_path)).test.targets.tolist() == [7, 7, 7, 7]
    assert len(arrays["test_y"]) == 4


def test_debian_package_folder_is_the_second_place(tmp_path, monkeypatch):
    debian = tmp_path / "usr_share_datasets_fashion-mnist"
    arrays = raw_set(debian, n_train=5, seed=3)
    monkeypatch.setattr(fm, "DEBIAN_FOLDER", str(debian))
    data = build_dataset("fashion_mnist", str(tmp_path / "empty_data_root"))
    assert torch.equal(data.train.images[:, 0, 2:30, 2:30], torch.from_numpy(arrays["train_x"]))


def test_absent_everywhere_is_one_line_naming_all_three_places(tmp_path, no_debian_no_network):
    with pytest.raises(FileNotFoundError) as err:
        build_dataset("fashion_mnist", str(tmp_path))
    message = str(err.value)
    assert "\n" not in message
    assert os.path.join(str(tmp_path), "FashionMNIST", "raw") in message
    assert "no_debian_package" in message and "apt-get install dataset-fashion-mnist" in message
    assert "download failed: OSError" in message and "--data_root" in message


def test_incomplete_folder_counts_as_absent(tmp_path, no_debian_no_network):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw_set(raw)
    os.remove(raw / (FILES["test_y"] + ".gz"))
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte"):
        build_dataset("fashion_mnist", str(tmp_path))


def test_damaged_files_name_the_file(tmp_path, no_debian_no_network):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw_set(raw, gz=False)
    images = raw / FILES["train_x"]
    images.write_bytes(images.read_bytes()[:-5])  # truncated
    with pytest.raises(IdxFileError, match=f"'{images}' holds 4,699 data bytes, its header promises 4,704"):
        build_dataset("fashion_mnist", str(tmp_path))
    images.write_bytes(b"<html>not found</html>")
    with pytest.raises(IdxFileError, match="not an IDX file of unsigned bytes"):
        build_dataset("fashion_mnist", str(tmp_path))
    broken_gz = tmp_path / "broken.gz"
    broken_gz.write_bytes(gzip.compress(b"\x00" * 100)[:20])
    with pytest.raises(IdxFileError, match="does not read"):
        read_idx(str(broken_gz))


def test_labels_must_match_the_images_and_the_ten_classes(tmp_path, no_debian_no_network):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw_set(raw, gz=False)
    write_idx(str(raw / FILES["train_y"]), np.array([0, 1, 2], dtype=np.uint8))
    with pytest.raises(IdxFileError, match="3 labels for 6 images"):
        build_dataset("fashion_mnist", str(tmp_path))
    write_idx(str(raw / FILES["train_y"]), np.array([0, 1, 2, 3, 4, 10], dtype=np.uint8))
    with pytest.raises(IdxFileError, match="label 10"):
        build_dataset("fashion_mnist", str(tmp_path))


@pytest.mark.skipif(not os.path.isdir(fm.DEBIAN_FOLDER),
                    reason="Debian's dataset-fashion-mnist is not installed (apt-get install dataset-fashion-mnist)")
def test_the_real_data_set_from_the_debian_package(tmp_path):
    data = build_dataset("fashion_mnist", str(tmp_path))
    assert (len(data.train), len(data.test), data.num_classes) == (60000, 10000, 10)
    assert data.train.targets.bincount().tolist() == [6000] * 10 and data.test.targets.bincount().tolist() == [1000] * 10
    # the 28x28 set's usual statistics (0.2860, 0.3530) diluted by the zero border of the 32x32 images
    assert data.train.mean.flatten()[0].item() == pytest.approx(0.2860 * 28 * 28 / 32 ** 2, abs=1e-3)
