"""--lr_schedule and --warm-up through train_teacher.py: the logged lr per epoch, and a killed run resumes exactly."""
import os

import pytest
import torch

import engine.fit
import train_teacher
from helper.checkpoint import load_checkpoint
from helper.logging import read_metrics
from tests.conftest import cpu_args

COSINE = ["--model", "resnet8", "--learning_rate", "0.05", "--lr_schedule", "cosine", "--warm-up", "--save_freq", "1"]
RUN = "resnet8_cifar100_lr_0.05_cosine_decay_0.0005_trial_0"


class Killed(Exception):
    pass


@pytest.mark.slow
def test_a_killed_cosine_run_with_warm_up_resumes_exactly(teacher_cifar, tmp_path, monkeypatch):
    train_teacher.main(COSINE + cpu_args(teacher_cifar, tmp_path / "straight", epochs=3, batch_size=8))
    straight = tmp_path / "straight" / "models" / RUN
    # epoch 1: the warm-up's 0.01; then 0.05 * (1 + cos(pi * e / 3)) / 2 for 0-indexed e = 1, 2 (cos = 1/2, -1/2)
    assert [r["lr"] for r in read_metrics(straight)] == pytest.approx([0.01, 0.0375, 0.0125], rel=1e-12)

    real_record_epoch = engine.fit.record_epoch

    def kill_at_epoch_3(epoch):
        if epoch == 3:
            raise Killed
        real_record_epoch(epoch)

    monkeypatch.setattr(engine.fit, "record_epoch", kill_at_epoch_3)
    with pytest.raises(Killed):
        train_teacher.main(COSINE + cpu_args(teacher_cifar, tmp_path / "killed", epochs=3, batch_size=8))
    monkeypatch.setattr(engine.fit, "record_epoch", real_record_epoch)
    killed = tmp_path / "killed" / "models" / RUN
    assert [r["epoch"] for r in read_metrics(killed)] == [1, 2]
    train_teacher.main(COSINE + cpu_args(teacher_cifar, tmp_path / "killed", epochs=3, batch_size=8)
                       + ["--resume", "auto"])
    a = load_checkpoint(os.path.join(straight, "resnet8_last.pth"))
    b = load_checkpoint(os.path.join(killed, "resnet8_last.pth"))
    assert a["epoch"] == b["epoch"] == 3 and b["opt"]["lr_schedule"] == "cosine"
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert [r["lr"] for r in read_metrics(killed)] == pytest.approx([0.01, 0.0375, 0.0125], rel=1e-12)

    # resuming that checkpoint under another schedule is refused in one line
    ckpt = os.path.join(killed, "ckpt_epoch_2.pth")
    with pytest.raises(ValueError) as err:
        train_teacher.main(["--model", "resnet8", "--learning_rate", "0.05", "--resume", ckpt]
                           + cpu_args(teacher_cifar, tmp_path / "other", epochs=3, batch_size=8))
    assert str(err.value) == (f"the --resume checkpoint '{ckpt}' was written with --lr_schedule cosine; resume with "
                              "--lr_schedule cosine, not step")
