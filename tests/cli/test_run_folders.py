"""The run lifecycle through the entry scripts (issue #10): re-runs into a folder, finished and unstarted runs
with --resume auto, a diverging loss, the init stage's lines and --keep_checkpoints."""
import hashlib
import os

import numpy as np
import pytest
import torch

import train_student
import train_teacher
from dataset.cifar import write_cifar_format
from helper.checkpoint import load_checkpoint
from helper.logging import read_metrics
from helper.run_folder import ALREADY_FINISHED
from helper.run import run_cli

TEACHER = "resnet8_cifar100_lr_0.05_decay_0.0005_trial_0"


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    """CIFAR-100 format, 64 training and 32 test images of 4 classes: two steps per epoch at batch 32."""
    root = tmp_path_factory.mktemp("micro_data")
    rng = np.random.default_rng(3)
    base = (np.arange(100)[:, None] * np.array([37, 91, 53])[None, :]) % 200
    ty, vy = np.arange(64) % 4, np.arange(32) % 4

    def images(y):
        return (base[y][:, :, None, None] + rng.integers(0, 56, (len(y), 3, 32, 32))).astype(np.uint8)

    write_cifar_format(str(root), "cifar100", images(ty), ty, images(vy), vy)
    return str(root)


def args(data_root, save, epochs=1, *extra):
    return ["--dataset", "cifar100", "--data_root", data_root, "--save_dir", str(save), "--epochs", str(epochs),
            "--batch_size", "32", "--device", "cpu", "--save_freq", "1", *extra]


def teacher(data_root, save, epochs=1, *extra):
    return train_teacher.main(args(data_root, save, epochs, "--model", "resnet8", *extra))


def snapshot(folder):
    """Every file under ``folder`` with its modification time and content hash."""
    out = {}
    for parent, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(parent, name)
            out[os.path.relpath(path, folder)] = (os.stat(path).st_mtime_ns,
                                                   hashlib.sha256(open(path, "rb").read()).hexdigest())
    return out


def cli_line(main):
    """What the entry wrapper ends with: the one line of a SystemExit (None when it returns)."""
    try:
        run_cli(main)
    except SystemExit as stop:
        return stop.code
    return None


@pytest.fixture(scope="module")
def teacher_ckpt(micro, tmp_path_factory):
    save = tmp_path_factory.mktemp("teacher")
    teacher(micro, save)
    return os.path.join(save, "models", TEACHER, "ckpt_epoch_1.pth")


@pytest.mark.slow
def test_rerun_is_refused_untouched_and_overwrite_starts_afresh(micro, tmp_path, capsys):
    teacher(micro, tmp_path, 2)
    run = tmp_path / "models" / TEACHER
    before = snapshot(run)
    line = cli_line(lambda: teacher(micro, tmp_path, 2))
    assert line == (f"error: '{run}' already holds a run; continue it with --resume auto, start another with a new "
                    "--trial, or start it afresh with --overwrite")
    assert snapshot(run) == before
    # a shorter run over the old one: its epoch-2 checkpoint would otherwise be what --resume auto picks later
    teacher(micro, tmp_path, 1, "--overwrite")
    # every file of the earlier run is the toolkit's: checkpoints, metrics, summary and the tensorboard events
    assert f"--overwrite: removed {len(before)} files of the earlier run in {run}" in capsys.readouterr().out
    assert not (run / "ckpt_epoch_2.pth").exists()
    assert [r["epoch"] for r in read_metrics(run)] == [1]
    assert load_checkpoint(str(run / "resnet8_last.pth"))["epoch"] == 1


@pytest.mark.slow
def test_resume_auto_of_a_finished_run_does_nothing(micro, tmp_path, capsys):
    teacher(micro, tmp_path, 1)
    run = tmp_path / "models" / TEACHER
    before = snapshot(run)
    capsys.readouterr()
    res = teacher(micro, tmp_path, 1, "--resume", "auto")
    out = capsys.readouterr().out
    assert f"already finished (epoch 1 of 1): nothing to do ({run})" in out and "done:" not in out
    assert res[ALREADY_FINISHED] and res["epoch"] == 1
    assert snapshot(run) == before  # summary.json, metrics, checkpoints and tensorboard events untouched


@pytest.mark.slow
def test_resume_auto_before_the_first_checkpoint_starts_from_epoch_1(micro, tmp_path, capsys):
    run = tmp_path / "models" / TEACHER
    run.mkdir(parents=True)
    (run / "metrics.jsonl").write_text("")  # killed before its first epoch ended
    res = teacher(micro, tmp_path, 1, "--resume", "auto")
    assert f"no checkpoint in {run} yet: starting from epoch 1" in capsys.readouterr().out
    assert res["epoch"] == 1 and load_checkpoint(str(run / "resnet8_last.pth"))["epoch"] == 1


@pytest.mark.slow
def test_trials_skip_finished_runs_and_continue_the_others(micro, teacher_ckpt, tmp_path, capsys):
    student = args(micro, tmp_path, 1, "--path_t", teacher_ckpt, "--distill", "kd", "--model_s", "resnet8",
                   "--trials", "2")
    train_student.main(student)
    folder = tmp_path / "student_model" / "S_resnet8_T_resnet8_cifar100_kd_r_0.1_a_0.9_b_0.0_{}"
    first, second = str(folder).format(1), str(folder).format(2)
    before = snapshot(first)
    for name in os.listdir(second):  # trial 2 killed before its first checkpoint
        if name.endswith(".pth"):
            os.remove(os.path.join(second, name))
    capsys.readouterr()
    res = train_student.main(student + ["--resume", "auto"])
    out = capsys.readouterr().out
    assert f"[trial 1] already finished (epoch 1 of 1): nothing to do ({first})" in out
    assert f"[trial 2] no checkpoint in {second} yet: starting from epoch 1" in out
    assert "[trial 2] epoch 1/1" in out and "[trial 1] epoch 1/1" not in out
    assert snapshot(first) == before
    assert load_checkpoint(os.path.join(second, "resnet8_last.pth"))["epoch"] == 1
    assert [t["epoch"] for t in res["trials"]] == [1, 1]
    # everything finished: nothing to do for either, nothing written
    both = {first: snapshot(first), second: snapshot(second)}
    train_student.main(student + ["--resume", "auto"])
    assert capsys.readouterr().out.count("already finished (epoch 1 of 1): nothing to do") == 2
    assert {first: snapshot(first), second: snapshot(second)} == both


@pytest.mark.slow
def test_a_diverging_loss_stops_with_one_line_and_keeps_the_last_good_checkpoint(micro, tmp_path):
    # the lr jumps from 0.05 to 5e28 after epoch 1 (a decay "rate" of 1e30): the second step of epoch 2 is nan
    line = cli_line(lambda: teacher(micro, tmp_path, 3, "--lr_decay_epochs", "1", "--lr_decay_rate", "1e30"))
    assert line.startswith("error: epoch 2: non-finite training loss (")
    assert line.endswith("steps); stopped before validating or saving it, resnet8_last.pth of epoch 1 is kept for "
                         "--resume auto; try a lower --learning_rate (lr 5e+28 in this epoch)")
    run = tmp_path / "models" / TEACHER
    last = load_checkpoint(str(run / "resnet8_last.pth"))
    assert last["epoch"] == 1 and all(torch.isfinite(t).all() for t in last["model"].values() if t.is_floating_point())
    assert sorted(n for n in os.listdir(run) if n.endswith(".pth") and n != "resnet8_best.pth") == [
        "ckpt_epoch_1.pth", "resnet8_last.pth"]
    assert [r["epoch"] for r in read_metrics(run)] == [1]


@pytest.mark.slow
def test_init_stage_names_its_method_and_stops_on_a_non_finite_loss(micro, teacher_ckpt, tmp_path, capsys):
    method = ["--path_t", teacher_ckpt, "--distill", "abound", "--model_s", "resnet8"]
    train_student.main(args(micro, tmp_path / "ok", 1, *method, "--init_epochs", "1"))
    out = capsys.readouterr().out
    assert "[abound] init epoch 1/1  loss " in out and "[abound] note" not in out
    line = cli_line(lambda: train_student.main(args(micro, tmp_path / "nan", 1, *method, "--init_epochs", "2",
                                                    "--learning_rate", "1e12")))
    out = capsys.readouterr().out
    assert ("[abound] note: the init stage runs --init_epochs 2 epochs (RepDistiller's 30) before the 1 training "
            "epoch(s); give a smaller --init_epochs for a short run") in out
    assert line.startswith("error: [abound] init epoch 1/2: non-finite init-stage loss; stopped before training, "
                           "nothing saved; try a lower --learning_rate (lr 1e+12 in this epoch)")
    run = tmp_path / "nan" / "student_model" / "S_resnet8_T_resnet8_cifar100_abound_r_1.0_a_0.0_b_1.0_1"
    assert not [n for n in os.listdir(run) if n.endswith(".pth")]


@pytest.mark.slow
@pytest.mark.parametrize("keep", ["all", "last"])
def test_keep_checkpoints(keep, micro, tmp_path, capsys):
    teacher(micro, tmp_path, 3, "--keep_checkpoints", keep)
    run = tmp_path / "models" / TEACHER
    periodic = ["ckpt_epoch_1.pth", "ckpt_epoch_2.pth", "ckpt_epoch_3.pth"] if keep == "all" else []
    files = sorted(set(os.listdir(run)) - {"resnet8_best.pth"})  # written only if test top-1 ever rose above 0
    assert files == sorted(periodic + ["metrics.jsonl", "resnet8_last.pth", "summary.json", "tensorboard"])
    assert (run / "resnet8_best.pth").exists() == (max(r["test_acc"] for r in read_metrics(run)) > 0)
    out = capsys.readouterr().out
    assert ("(3 files)" in out) == (keep == "all") and ("no ckpt_epoch_N.pth" in out) == (keep == "last")
