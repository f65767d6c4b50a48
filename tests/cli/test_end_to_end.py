import json
import os
import subprocess
import sys

import pytest
import torch

import train_student
import train_teacher
import validation
from helper.checkpoint import load_checkpoint
from helper.logging import read_metrics

from tests.conftest import common_args

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def teacher_run(tiny_cifar, tmp_path_factory):
    save = tmp_path_factory.mktemp("save")
    train_teacher.main(common_args(tiny_cifar, save) + ["--model", "resnet8"])
    run = os.path.join(save, "models", "resnet8_cifar100_lr_0.05_decay_0.0005_trial_0")
    return save, run


def test_teacher_run_writes_repdistiller_files(teacher_run):
    _, run = teacher_run
    for f in ("ckpt_epoch_1.pth", "resnet8_last.pth", "metrics.jsonl", "summary.json"):
        assert os.path.isfile(os.path.join(run, f)), f
    assert os.path.isdir(os.path.join(run, "tensorboard")) and os.listdir(os.path.join(run, "tensorboard"))
    ck = load_checkpoint(os.path.join(run, "ckpt_epoch_1.pth"))
    assert ck["epoch"] == 1 and {"model", "accuracy", "optimizer"} <= set(ck)
    rows = read_metrics(run)
    assert [r["epoch"] for r in rows] == [1]
    assert rows[0]["lr"] == pytest.approx(0.05)
    assert 0 <= rows[0]["test_acc"] <= 100 and rows[0]["train_loss"] > 0
    assert ck["accuracy"] == pytest.approx(rows[0]["test_acc"])


def test_kd_student_and_validation(teacher_run, tiny_cifar, capsys):
    save, run = teacher_run
    args = common_args(tiny_cifar, save) + ["--path_t", os.path.join(run, "ckpt_epoch_1.pth"), "--distill", "kd",
                                            "--model_s", "resnet8", "-r", "0.1", "-a", "0.9", "-b", "0"]
    res = train_student.main(args)
    out = capsys.readouterr().out
    assert "teacher resnet8: test acc" in out
    sdir = os.path.join(save, "student_model", "S_resnet8_T_resnet8_cifar100_kd_r_0.1_a_0.9_b_0.0_1")
    rows = read_metrics(sdir)
    assert rows[0]["loss_kl"] > 0 and rows[0]["loss_ce"] > 0
    # the weighted sum the loop optimised is gamma*CE + alpha*KL + beta*0
    assert rows[0]["train_loss"] == pytest.approx(0.1 * rows[0]["loss_ce"] + 0.9 * rows[0]["loss_kl"], rel=1e-4)
    summary = json.load(open(os.path.join(sdir, "summary.json")))
    assert summary["options"]["model_t"] == "resnet8"
    v = validation.main(["--model", "resnet8", "--model_path", os.path.join(sdir, "resnet8_last.pth"),
                         "--dataset", "cifar100", "--data_root", tiny_cifar, "--device", "cpu"])
    assert v["acc"] == pytest.approx(res["last_acc"])


def test_resume_matches_uninterrupted_run(teacher_run, tiny_cifar, tmp_path):
    _, run = teacher_run
    base = ["--path_t", os.path.join(run, "ckpt_epoch_1.pth"), "--distill", "kd", "--model_s", "resnet8",
            "--lr_decay_epochs", "2", "--seed", "5"]
    full_dir, cut_dir = tmp_path / "full", tmp_path / "cut"
    train_student.main(common_args(tiny_cifar, full_dir, epochs=3) + base)
    train_student.main(common_args(tiny_cifar, cut_dir, epochs=2) + base)  # "killed" after epoch 2
    train_student.main(common_args(tiny_cifar, cut_dir, epochs=3) + base + ["--resume", "auto"])
    name = "S_resnet8_T_resnet8_cifar100_kd_r_0.1_a_0.9_b_0.0_1"
    a = load_checkpoint(str(full_dir / "student_model" / name / "resnet8_last.pth"))
    b = load_checkpoint(str(cut_dir / "student_model" / name / "resnet8_last.pth"))
    assert a["epoch"] == b["epoch"] == 3
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    rows = read_metrics(cut_dir / "student_model" / name)
    assert [r["epoch"] for r in rows] == [1, 2, 3]  # nothing repeated or skipped
    assert rows[2]["lr"] == pytest.approx(0.005)


def test_bad_inputs_fail_with_helpful_messages(teacher_run, tiny_cifar, tmp_path):
    save, run = teacher_run
    args = common_args(tiny_cifar, tmp_path)
    with pytest.raises(ValueError, match="--path_t is required"):
        train_student.main(args + ["--distill", "kd"])
    with pytest.raises(ValueError, match="choose one of: .*attention|choose one of: .*kd"):
        train_student.main(args + ["--distill", "magic", "--path_t", os.path.join(run, "ckpt_epoch_1.pth")])
    with pytest.raises(ValueError, match="valid names"):
        train_teacher.main(args + ["--model", "resnet9000"])
    with pytest.raises(ValueError, match="does not fit architecture 'resnet14'"):
        train_student.main(args + ["--path_t", os.path.join(run, "ckpt_epoch_1.pth"), "--model_t", "resnet14"])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        train_student.main(args + ["--path_t", str(tmp_path / "resnet8_x" / "none.pth")])


def test_cli_prints_error_and_exits_nonzero(tmp_path):
    proc = subprocess.run([sys.executable, "train_teacher.py", "--model", "nosuchnet", "--dataset", "digits",
                           "--save_dir", str(tmp_path), "--device", "cpu", "--epochs", "1"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "error: unknown model 'nosuchnet'" in proc.stderr and "resnet32x4" in proc.stderr


@pytest.mark.slow
def test_digits_teacher_reaches_90_percent(tmp_path):
    res = train_teacher.main(["--dataset", "digits", "--model", "resnet8", "--epochs", "8", "--lr_decay_epochs",
                              "6,7", "--save_dir", str(tmp_path), "--device", "cpu", "--save_freq", "0"])
    assert res["last_acc"] >= 90.0
