"""Checkpoints written on the background thread: complete files, the state as it was, exact resume."""
import os
import threading

import pytest
import torch

import helper.checkpoint_writer as writer_module
import train_teacher
from helper.checkpoint import load_checkpoint
from helper.checkpoint_writer import CheckpointWriter, host_copy
from tests.conftest import common_args

RUN = os.path.join("models", "resnet8_cifar100_lr_0.05_decay_0.0005_trial_0")


def test_writer_saves_the_state_as_it_was_when_saved(tmp_path):
    weights = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    writer = CheckpointWriter()
    path = str(tmp_path / "a.pth")
    writer.save({"epoch": 1, "model": {"w": weights}, "rng": [torch.tensor([7])]}, path)
    weights.add_(100)  # training goes on while the file is written
    writer.save({"epoch": 2, "model": {"w": weights}}, str(tmp_path / "b.pth"))
    writer.close()
    writer.raise_error()
    assert writer.written == 2
    first = load_checkpoint(path)
    assert first["epoch"] == 1 and torch.equal(first["model"]["w"], torch.arange(6.0).reshape(2, 3))
    assert torch.equal(first["rng"][0], torch.tensor([7]))
    assert torch.equal(load_checkpoint(str(tmp_path / "b.pth"))["model"]["w"], torch.arange(6.0).reshape(2, 3) + 100)
    assert sorted(os.listdir(tmp_path)) == ["a.pth", "b.pth"]  # no temporaries left


def test_host_copy_keeps_strides_and_never_aliases():
    t = torch.randn(2, 3, 4, 4).contiguous(memory_format=torch.channels_last)
    c = host_copy({"t": t, "n": (1, "x")})
    assert c["n"] == (1, "x")
    assert c["t"].stride() == t.stride() and torch.equal(c["t"], t)
    assert c["t"].data_ptr() != t.data_ptr()


def test_writer_error_reaches_the_training_thread_and_later_writes_are_skipped(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    writer = CheckpointWriter()
    writer.save({"epoch": 1}, str(blocker / "x.pth"))  # its folder cannot be created
    writer.close()
    with pytest.raises(OSError):
        writer.raise_error()
    writer.raise_error()  # raised once
    assert writer.written == 0


def test_fit_writes_every_checkpoint_on_the_writer_and_resume_from_it_is_exact(tiny_cifar, tmp_path, monkeypatch):
    threads, calls = [], []
    real_save = writer_module.save_checkpoint

    def recorded_save(state, path):
        threads.append(threading.current_thread().name)
        calls.append(os.path.basename(path))
        return real_save(state, path)

    copies = []
    real_copy = writer_module.host_copy

    def counted_copy(obj):
        if isinstance(obj, dict) and "epoch" in obj:  # a whole checkpoint, not one of its parts (recursion)
            copies.append(obj["epoch"])
        return real_copy(obj)

    monkeypatch.setattr(writer_module, "save_checkpoint", recorded_save)
    monkeypatch.setattr(writer_module, "host_copy", counted_copy)
    closed = []
    real_close = CheckpointWriter.close

    def close(self):
        real_close(self)
        closed.append(self.written)

    monkeypatch.setattr(CheckpointWriter, "close", close)

    whole = tmp_path / "whole"
    train_teacher.main(common_args(tiny_cifar, whole, epochs=3) + ["--model", "resnet8"])
    assert set(threads) == {"checkpoint-writer"}
    # each epoch: ckpt_epoch_N (--save_freq 1) and _last, plus _best when top-1 improved
    assert calls.count("resnet8_last.pth") == 3
    assert [c for c in calls if c.startswith("ckpt_epoch")] == ["ckpt_epoch_1.pth", "ckpt_epoch_2.pth",
                                                                "ckpt_epoch_3.pth"]
    assert closed == [len(calls)]  # joined at the end of fit, every queued file written
    # one host copy per epoch serves both ckpt_epoch_N and _last (and one per _best)
    assert len(copies) == 3 + calls.count("resnet8_best.pth")
    run_dir = whole / RUN
    assert not [n for n in os.listdir(run_dir) if n.startswith(".tmp_")]
    for name in os.listdir(run_dir):
        if name.endswith(".pth"):
            load_checkpoint(str(run_dir / name))  # complete, loadable files

    cut = tmp_path / "cut"
    train_teacher.main(common_args(tiny_cifar, cut, epochs=2) + ["--model", "resnet8"])
    train_teacher.main(common_args(tiny_cifar, cut, epochs=3) + ["--model", "resnet8", "--resume", "auto"])
    a, b = load_checkpoint(str(run_dir / "resnet8_last.pth")), load_checkpoint(str(cut / RUN / "resnet8_last.pth"))
    assert a["epoch"] == b["epoch"] == 3
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    for (i, s), (_, s_b) in zip(a["optimizer"]["state"].items(), b["optimizer"]["state"].items()):
        assert torch.equal(s["momentum_buffer"], s_b["momentum_buffer"]), i
