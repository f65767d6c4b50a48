"""Folder data sets (dataset/folder.py, dataset/folder_sources.py): layouts, transforms equal to torchvision's, the
order of an epoch from (seed, epoch) only, shards per process, resume within an epoch, one-line errors."""
import os
import shutil

import numpy as np
import pytest
import torch
import torchvision.transforms as T
from PIL import Image

from dataset import FolderSettings, build_dataset
from dataset.folder import (IMAGENET_MEAN, NO_AUGMENTATION, SampleReader, Transform, decode, eval_view,
                            random_resized_crop_box, train_view, use_dali)
from dataset.folder_sources import DataFolderError, image_folder_splits, tiny_imagenet_splits, write_shard
from tests.conftest import write_imagenet_folder, write_jpeg_folder

SMALL = FolderSettings(crop_size=32, num_workers=0)


def _batches(split, batch_size=5, **kw):
    return list(split.train_batches(batch_size, 3, 2, **kw))


def test_image_folder_classes_and_samples_follow_torchvision(jpeg_imagenet):
    from torchvision.datasets import ImageFolder

    train, val = image_folder_splits(jpeg_imagenet)
    reference = ImageFolder(os.path.join(jpeg_imagenet, "train"))
    assert train.classes == reference.classes
    assert train.paths == [p for p, _ in reference.samples]
    assert train.targets.tolist() == reference.targets
    assert val.targets.tolist() == [0, 0, 1, 1, 2, 2]


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_training_view_is_torchvisions_crop_and_flip_after_seeding(jpeg_imagenet, seed):
    train, _ = image_folder_splits(jpeg_imagenet)
    img = decode(train.read(4))
    ours = train_view(img, Transform("rrc", 24, 27), torch.Generator().manual_seed(seed))
    torch.manual_seed(seed)
    theirs = T.Compose([T.RandomResizedCrop(24), T.RandomHorizontalFlip()])(img)
    assert torch.equal(ours, torch.from_numpy(np.array(theirs)).permute(2, 0, 1))
    # the box rule itself, on shapes that exercise the fallback
    for w, h in [(500, 375), (3, 300), (300, 3)]:
        torch.manual_seed(seed)
        assert random_resized_crop_box(w, h, torch.Generator().manual_seed(seed)) == \
            tuple(T.RandomResizedCrop.get_params(Image.new("RGB", (w, h)), [0.08, 1.0], [3 / 4, 4 / 3]))


def test_evaluation_view_is_resize_then_center_crop(jpeg_imagenet):
    train, _ = image_folder_splits(jpeg_imagenet)
    img = decode(train.read(0))
    theirs = T.Compose([T.Resize(36), T.CenterCrop(32)])(img)
    assert torch.equal(eval_view(img, Transform("rrc", 32, 36)), torch.from_numpy(np.array(theirs)).permute(2, 0, 1))


def test_batches_carry_indices_labels_and_normalised_crops(jpeg_imagenet):
    data = build_dataset("imagenet", jpeg_imagenet, "cpu", SMALL)
    assert (data.num_classes, len(data.train), len(data.test)) == (3, 12, 6)
    batches = _batches(data.train)
    assert [b.x.shape[0] for b in batches] == [5, 5, 2]
    index = torch.cat([b.index for b in batches])
    assert sorted(index.tolist()) == list(range(12))
    assert torch.equal(torch.cat([b.y for b in batches]), data.train.targets[index])
    # normalised with ImageNet's constants on the device: reading the crop back gives uint8 values
    first = batches[0]
    pixels = (first.x * data.train.std + data.train.mean) * 255
    assert torch.allclose(pixels, pixels.round(), atol=1e-3) and data.train.mean.flatten().tolist() == \
        pytest.approx(IMAGENET_MEAN)


def test_the_epoch_depends_on_seed_and_epoch_only_not_on_workers(jpeg_imagenet):
    data = build_dataset("imagenet", jpeg_imagenet, "cpu", SMALL)
    with_workers = build_dataset("imagenet", jpeg_imagenet, "cpu", FolderSettings(crop_size=32, num_workers=2))
    a, b = _batches(data.train), _batches(with_workers.train)
    assert all(torch.equal(p.x, q.x) and torch.equal(p.index, q.index) for p, q in zip(a, b))
    again = _batches(with_workers.train)  # the persistent workers serve a second pass
    assert all(torch.equal(p.x, q.x) for p, q in zip(a, again))
    other = list(data.train.train_batches(5, 3, 3))
    assert not torch.equal(a[0].index, other[0].index)


def test_two_processes_read_the_two_halves_of_every_global_batch(jpeg_imagenet):
    data = build_dataset("imagenet", jpeg_imagenet, "cpu", SMALL)
    one = _batches(data.train, 6)
    ranks = [_batches(data.train, 3, rank=r, world_size=2) for r in range(2)]
    for whole, left, right in zip(one, *ranks):
        assert torch.equal(torch.cat([left.x, right.x]), whole.x)
        assert torch.equal(left.global_index, whole.index) and left.shard == (0, 3) and right.shard == (3, 6)
        assert torch.equal(right.global_y, whole.y)


def test_a_resumed_epoch_continues_with_the_remaining_batches(jpeg_imagenet):
    data = build_dataset("imagenet", jpeg_imagenet, "cpu", SMALL)
    whole = _batches(data.train, strong_view=True)
    rest = _batches(data.train, strong_view=True, start=5)
    assert len(rest) == 2
    assert all(torch.equal(p.x, q.x) and torch.equal(p.x_strong, q.x_strong) for p, q in zip(whole[1:], rest))


def test_the_strong_view_is_another_crop_of_the_same_images(jpeg_imagenet):
    data = build_dataset("imagenet", jpeg_imagenet, "cpu", SMALL)
    plain, both = _batches(data.train), _batches(data.train, strong_view=True)
    assert torch.equal(plain[0].x, both[0].x)  # asking for the strong view leaves the first one as it was
    assert both[0].x_strong.shape == both[0].x.shape and not torch.equal(both[0].x_strong, both[0].x)


def test_tiny_imagenet_layout_with_its_val_annotations(tmp_path):
    root = tmp_path / "tiny-imagenet-200"
    write_jpeg_folder(str(root / "train"), 2, 3, 64, seed=0, layout="tiny")
    os.makedirs(root / "val" / "images")
    lines = []
    for i, wnid in enumerate(["n00000001", "n00000000", "n00000001"]):
        Image.new("RGB", (64, 64), (i * 50, 0, 0)).save(root / "val" / "images" / f"val_{i}.JPEG")
        lines.append(f"val_{i}.JPEG\t{wnid}\t0\t0\t63\t63")
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    train, val = tiny_imagenet_splits(str(tmp_path))  # the folder holding tiny-imagenet-200 works too
    assert train.classes == ["n00000000", "n00000001"] and train.targets.tolist() == [0, 0, 0, 1, 1, 1]
    assert val.targets.tolist() == [1, 0, 1]
    data = build_dataset("tiny_imagenet", str(root), "cpu", FolderSettings(num_workers=0))
    assert data.train.input_shape == (3, 64, 64)
    # evaluated as they are (64 pixels), trained with a rotation and a flip (mdistiller's)
    first = next(data.test.eval_batches(3))
    pixels = ((first.x * data.test.std + data.test.mean) * 255).round()
    assert pixels[0, 0].unique().tolist() == [0.0] and pixels[1, 0].unique().tolist() == [50.0]


def test_webdataset_shards_give_the_folder_batches(jpeg_imagenet, tmp_path):
    for split in ("train", "val"):
        samples = (image_folder_splits(jpeg_imagenet)[split == "val"])
        os.makedirs(tmp_path / split)
        items = [(f"s{i:04d}", open(p, "rb").read(), int(y)) for i, (p, y) in enumerate(zip(samples.paths,
                                                                                             samples.targets))]
        write_shard(str(tmp_path / split / "part-0000.tar"), items[:7])
        write_shard(str(tmp_path / split / "part-0001.tar"), items[7:])
    folder = build_dataset("imagenet", jpeg_imagenet, "cpu", SMALL)
    shards = build_dataset("imagenet", str(tmp_path), "cpu", FolderSettings(crop_size=32, num_workers=0,
                                                                            data_format="webdataset"))
    assert shards.num_classes == 3
    assert all(torch.equal(p.x, q.x) and torch.equal(p.y, q.y) for p, q in zip(_batches(folder.train),
                                                                               _batches(shards.train)))
    assert torch.equal(next(folder.test.eval_batches(6)).x, next(shards.test.eval_batches(6)).x)


def test_missing_or_malformed_folders_are_one_line_errors(tmp_path, jpeg_imagenet):
    with pytest.raises(DataFolderError, match=r"data folder '.*train' does not exist .*--data_root must hold train/"):
        build_dataset("imagenet", str(tmp_path), "cpu", SMALL)
    os.makedirs(tmp_path / "train" / "cat")
    with pytest.raises(DataFolderError, match=r"'.*train' holds no image files"):
        build_dataset("imagenet", str(tmp_path), "cpu", SMALL)
    root = tmp_path / "copy"
    shutil.copytree(jpeg_imagenet, root)
    os.makedirs(root / "val" / "zebra")
    with pytest.raises(DataFolderError, match="class folder 'zebra' that the training split lacks"):
        build_dataset("imagenet", str(root), "cpu", SMALL)
    tiny = tmp_path / "tiny"
    write_jpeg_folder(str(tiny / "train"), 2, 1, 64, seed=0, layout="tiny")
    os.makedirs(tiny / "val" / "images")
    with pytest.raises(DataFolderError, match=r"val_annotations.txt' is missing; --data_root must be the unpacked"):
        tiny_imagenet_splits(str(tiny))
    with pytest.raises(DataFolderError, match=r"holds no \.tar shards"):
        build_dataset("imagenet", jpeg_imagenet, "cpu", FolderSettings(data_format="webdataset"))


@pytest.mark.parametrize("workers", [0, 1])
def test_an_unreadable_image_names_its_file_also_from_a_worker(tmp_path, workers):
    root = write_imagenet_folder(tmp_path / "data", train_per_class=2, val_per_class=1)
    broken = os.path.join(root, "train", "n00000001", "img_1_0.JPEG")
    with open(broken, "wb") as f:
        f.write(b"not a jpeg")
    data = build_dataset("imagenet", root, "cpu", FolderSettings(crop_size=32, num_workers=workers))
    with pytest.raises(DataFolderError) as info:
        list(data.train.train_batches(6, 0, 1))
    assert str(info.value).startswith(f"'{broken}' is not a readable image")
    assert "\n" not in str(info.value)


def test_reader_makes_the_strong_view_from_its_own_seed(jpeg_imagenet):
    train, _ = image_folder_splits(jpeg_imagenet)
    reader = SampleReader(train, Transform("rrc", 24, 27))
    x, y, index, strong = reader[(3, 11, 12)]
    again = reader[(3, 11, 12)]
    assert (y, index) == (int(train.targets[3]), 3) and torch.equal(strong, again[3]) and torch.equal(x, again[0])
    assert len(reader[(3, NO_AUGMENTATION, NO_AUGMENTATION)]) == 3


def test_dali_is_chosen_only_on_cuda_with_the_package():
    assert not use_dali(FolderSettings(pipeline="auto"), torch.device("cpu"))
    with pytest.raises(ValueError, match="--data_pipeline dali decodes on the GPU; it needs --device cuda"):
        use_dali(FolderSettings(pipeline="dali"), torch.device("cpu"))
