"""The DALI pipeline (dataset/dali.py) on a GPU with NVIDIA DALI installed: the batches hold the images, labels and
indices of the DataLoader pipeline's (the crops are DALI's own draws)."""
import pytest
import torch

from dataset import FolderSettings, build_dataset

pytestmark = [
    pytest.mark.skipif(not torch.cuda.is_available(), reason="DALI decodes on a CUDA GPU; none is available"),
]


def test_dali_batches_carry_the_dataloaders_samples(jpeg_imagenet):
    pytest.importorskip("nvidia.dali", reason="NVIDIA DALI is not installed (optional: pip install "
                                              "nvidia-dali-cuda120)")
    dali = build_dataset("imagenet", jpeg_imagenet, "cuda", FolderSettings(crop_size=32, pipeline="dali",
                                                                           num_workers=2))
    plain = build_dataset("imagenet", jpeg_imagenet, "cuda", FolderSettings(crop_size=32, pipeline="dataloader",
                                                                            num_workers=0))
    assert dali.train.use_dali and not plain.train.use_dali
    got, ref = list(dali.train.train_batches(5, 0, 1)), list(plain.train.train_batches(5, 0, 1))
    assert [b.x.shape for b in got] == [b.x.shape for b in ref]
    for a, b in zip(got, ref):
        assert a.x.device.type == "cuda" and a.x.dtype == torch.float32
        assert torch.equal(a.index, b.index) and torch.equal(a.y, b.y)
    # a resumed epoch continues with the same samples
    rest = list(dali.train.train_batches(5, 0, 1, start=5))
    assert [torch.equal(a.index, b.index) for a, b in zip(rest, ref[1:])] == [True, True]
