"""--save_steps: checkpoints within an epoch, and a run resumed from one ends exactly as the uninterrupted run."""
import os

import pytest
import torch

import engine.fit
import train_teacher
from helper.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from helper.logging import read_metrics
from tests.conftest import cpu_args, interrupt_after_saves

RUN = "resnet8_cifar100_lr_0.05_decay_0.0005_trial_0"


@pytest.mark.slow
def test_a_run_resumed_within_an_epoch_ends_as_the_uninterrupted_one(teacher_cifar, tmp_path, monkeypatch):
    args = cpu_args(teacher_cifar, tmp_path / "whole", epochs=2, batch_size=4) + ["--model", "resnet8"]
    train_teacher.main(args)
    whole = load_checkpoint(str(tmp_path / "whole" / "models" / RUN / "resnet8_last.pth"))

    args = cpu_args(teacher_cifar, tmp_path / "cut", epochs=2, batch_size=4) + ["--model", "resnet8",
                                                                                "--save_steps", "2"]
    # 16 images in batches of 4: 4 steps per epoch; stop after step 2 of epoch 2
    interrupt_after_saves(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        train_teacher.main(args)
    run_dir = str(tmp_path / "cut" / "models" / RUN)
    cut = load_checkpoint(os.path.join(run_dir, "resnet8_last.pth"))
    assert (cut["epoch"], cut["epoch_samples"], cut["global_batch"]) == (1, 8, 4)
    monkeypatch.undo()
    train_teacher.main(args + ["--resume", "auto"])
    resumed = load_checkpoint(os.path.join(run_dir, "resnet8_last.pth"))
    assert resumed["epoch"] == 2 and "epoch_samples" not in resumed
    for key, value in whole["model"].items():
        assert torch.equal(resumed["model"][key], value), key
    # the epoch's numbers cover all of its samples, those before the interruption included
    rows = read_metrics(run_dir)
    assert [r["epoch"] for r in rows] == [1, 2]
    reference = read_metrics(str(tmp_path / "whole" / "models" / RUN))
    assert rows[1]["train_loss"] == pytest.approx(reference[1]["train_loss"], rel=1e-6)
    assert rows[1]["train_acc"] == pytest.approx(reference[1]["train_acc"])


def test_the_checkpoint_furthest_on_is_the_one_to_resume(tmp_path):
    state = {"model": {}, "optimizer": {}}
    save_checkpoint({**state, "epoch": 3}, str(tmp_path / "ckpt_epoch_3.pth"))
    save_checkpoint({**state, "epoch": 3, "epoch_samples": 512}, str(tmp_path / "net_last.pth"))
    assert latest_checkpoint(str(tmp_path), "net") == str(tmp_path / "net_last.pth")
    save_checkpoint({**state, "epoch": 4}, str(tmp_path / "ckpt_epoch_4.pth"))
    assert latest_checkpoint(str(tmp_path), "net") == str(tmp_path / "ckpt_epoch_4.pth")


def test_resuming_within_an_epoch_needs_the_global_batch_it_was_written_with():
    class Options:
        batch_size = 64

    state = {"epoch": 4, "epoch_samples": 1024, "global_batch": 256}
    engine.fit.check_step_resume("net_last.pth", state, type("O", (), {"batch_size": 128}), 2)
    with pytest.raises(ValueError) as err:
        engine.fit.check_step_resume("net_last.pth", state, Options, 2)
    assert str(err.value) == ("'net_last.pth' was written within epoch 5 with a global batch of 256; resume it with "
                              "the same global batch (now 64 x 2 processes = 128), e.g. --global_batch_size 256")


def test_no_checkpoint_within_an_epoch_after_a_non_finite_loss(tmp_path):
    import math

    import distiller_zoo
    from distiller_zoo import build_distiller
    from engine.epoch import EpochMeter
    from engine.step import StudentRun
    from helper.checkpoint_writer import CheckpointWriter
    from models import build_model
    from tests.engine.built import method_context, student_options

    model = build_model("resnet8", num_classes=10)
    options = student_options(learning_rate=0.05, momentum=0.9, gamma=1.0, alpha=0.0, beta=0.0, epochs=2,
                              save_freq=1, keep_checkpoints="all", distill="ce", device="cpu", batch_size=4)
    distiller = build_distiller("ce", method_context(distiller_zoo.REGISTRY["ce"], options, model, None,
                                                     num_classes=10))
    run = StudentRun(options, model, distiller, str(tmp_path), "resnet8")
    run.optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    meter = EpochMeter(torch.device("cpu"))
    logits, y = torch.zeros(4, 10), torch.arange(4)
    meter.update(torch.tensor(math.nan), {}, logits, y)
    writer = CheckpointWriter()
    engine.fit.save_within_epoch(run, 1, 4, meter, None, writer)
    writer.close()
    assert not (tmp_path / "resnet8_last.pth").exists()
    finite = EpochMeter(torch.device("cpu"))
    finite.update(torch.tensor(1.0), {}, logits, y)
    writer = CheckpointWriter()
    engine.fit.save_within_epoch(run, 1, 4, finite, None, writer)
    writer.close()
    assert load_checkpoint(str(tmp_path / "resnet8_last.pth"))["epoch_samples"] == 4
