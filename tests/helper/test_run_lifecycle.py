"""The run lifecycle pieces of helper/loops.py (issue #10): non-finite losses and weights, finished and missing
checkpoints, what counts as an earlier run, --keep_checkpoints and the checkpoint-size line."""
import math
import os
from types import SimpleNamespace

import pytest
import torch

from distiller_zoo import DistillContext, build_distiller
from helper.checkpoint import save_checkpoint
from helper.loops import NONFINITE_STEPS, EpochMeter, StudentRun, TrainingDiverged, check_finite_weights, resume_paths
from helper.run_folder import (ALREADY_FINISHED, RunFolderInUse, checkpoint_plan, claim_run_folders,
                               finished_result, holds_run, remove_periodic_checkpoints)
from models import build_model


def test_epoch_meter_counts_non_finite_losses_with_the_epoch_sums():
    meter = EpochMeter(torch.device("cpu"))
    logits, y = torch.zeros(4, 10), torch.arange(4)
    for loss in (1.0, math.nan, 3.0, math.inf):
        meter.update(torch.tensor(loss), {}, logits, y)
    assert meter.result()[NONFINITE_STEPS] == 2
    finite = EpochMeter(torch.device("cpu"))
    finite.update(torch.tensor(1.0), {"ce": torch.tensor(1.0)}, logits, y)
    finite.update(torch.tensor(3.0), {"ce": torch.tensor(2.0)}, logits, y)
    row = finite.result()
    assert row[NONFINITE_STEPS] == 0
    assert row["train_loss"] == pytest.approx(2.0) and row["loss_ce"] == pytest.approx(1.5)


def teacher_run(run_dir, **opt):
    model = build_model("resnet8", num_classes=10)
    options = SimpleNamespace(**{"learning_rate": 0.05, "momentum": 0.9, "gamma": 1.0, "alpha": 0.0, "beta": 0.0,
                                 "epochs": 240, "save_freq": 40, "keep_checkpoints": "all", **opt})
    distiller = build_distiller("ce", DistillContext(options, model, None, num_classes=10))
    return StudentRun(options, model, distiller, str(run_dir), "resnet8")


def test_non_finite_weights_are_refused_before_anything_is_saved(tmp_path):
    run = teacher_run(tmp_path)
    check_finite_weights(run, 3, 0.05)  # finite: nothing happens
    with torch.no_grad():
        run.student.fc.weight[0, 0] = math.inf
    with pytest.raises(TrainingDiverged) as err:
        check_finite_weights(run, 3, 5e6)
    assert str(err.value) == ("epoch 3: non-finite weights; stopped before validating or saving them, "
                              "resnet8_last.pth of epoch 2 is kept for --resume auto; try a lower --learning_rate "
                              "(lr 5e+06 in this epoch)")
    assert isinstance(err.value, ValueError)  # the entry scripts print it as one line


def test_checkpoint_plan_sizes_follow_the_tensors():
    run = teacher_run("unused", epochs=240, save_freq=40)
    weights = sum(t.numel() * t.element_size() for t in run.student.state_dict().values())
    momentum = sum(p.numel() * p.element_size() for p in run.student.parameters())
    full = weights + momentum  # the plain cross-entropy distiller has no state of its own
    mb = lambda n: f"{n / 2 ** 20:.3g} MB"  # noqa: E731
    assert checkpoint_plan(run, run.opt) == (
        f"checkpoints: resnet8_best.pth (~{mb(weights)}) when test top-1 improves, resnet8_last.pth (~{mb(full)}) "
        f"every epoch, ckpt_epoch_N.pth (~{mb(full)} each) every 40 epochs (6 files): at most "
        f"~{mb(weights + 7 * full)} per run")
    last_only = teacher_run("unused", keep_checkpoints="last")
    assert checkpoint_plan(last_only, last_only.opt).endswith(
        f"every epoch, no ckpt_epoch_N.pth (--keep_checkpoints last): at most ~{mb(weights + full)} per run")


def test_finished_result_reads_the_epoch_of_a_resumable_checkpoint(tmp_path):
    path = str(tmp_path / "resnet8_last.pth")
    save_checkpoint({"epoch": 3, "model": {}, "optimizer": {}, "accuracy": 12.5, "best_acc": 20.0}, path)
    assert finished_result(path, 3) == {"epoch": 3, "last_acc": 12.5, "best_acc": 20.0, ALREADY_FINISHED: True}
    assert finished_result(path, 4) is None
    # weights only (a _best.pth): not resumable, so not a finished run either
    save_checkpoint({"epoch": 3, "model": {}, "best_acc": 20.0}, path)
    assert finished_result(path, 3) is None


def test_a_finished_checkpoint_of_another_architecture_is_not_a_finished_run(tmp_path):
    """--resume PATH of a resnet8 run into a resnet14 run: prepare_run must get to say it does not fit."""
    path = str(tmp_path / "resnet8_last.pth")
    weights = build_model("resnet8", num_classes=10).state_dict()
    save_checkpoint({"epoch": 3, "model": weights, "optimizer": {}, "accuracy": 12.5, "best_acc": 20.0}, path)
    assert finished_result(path, 3, build_model("resnet8", num_classes=10))[ALREADY_FINISHED]
    assert finished_result(path, 3, build_model("resnet14", num_classes=10)) is None
    assert finished_result(path, 3, build_model("resnet8", num_classes=100)) is None  # the classifier's shape


def test_resume_auto_without_a_checkpoint_starts_afresh_and_says_so(tmp_path, capsys):
    runs = [teacher_run(tmp_path / "never_started"), teacher_run(tmp_path / "empty")]
    (tmp_path / "empty").mkdir()
    assert resume_paths(runs, "auto") == [None, None]
    assert capsys.readouterr().out.splitlines() == [
        f"no checkpoint in {tmp_path / 'never_started'} yet: starting from epoch 1",
        f"no checkpoint in {tmp_path / 'empty'} yet: starting from epoch 1"]


def test_what_counts_as_an_earlier_run(tmp_path):
    assert not holds_run(str(tmp_path / "missing"))
    (tmp_path / "metrics.jsonl").write_text("")
    (tmp_path / ".tmp_abc.pth").write_bytes(b"half")
    assert not holds_run(str(tmp_path))  # an empty metrics file and a killed save's temporary hold nothing
    (tmp_path / "metrics.jsonl").write_text('{"epoch": 1}\n')
    assert holds_run(str(tmp_path))
    (tmp_path / "metrics.jsonl").unlink()
    (tmp_path / "resnet8_best.pth").write_bytes(b"x")
    assert holds_run(str(tmp_path))


def test_a_fresh_start_refuses_a_folder_with_a_run_unless_overwrite(tmp_path, capsys):
    run = teacher_run(tmp_path)
    for name in ("ckpt_epoch_40.pth", "resnet8_last.pth", "resnet8_best.pth", "metrics.jsonl", "summary.json",
                 "notes.txt"):
        (tmp_path / name).write_text("earlier")
    with pytest.raises(RunFolderInUse) as err:
        claim_run_folders([run], overwrite=False, quiet=False)
    assert str(err.value) == (f"'{tmp_path}' already holds a run; continue it with --resume auto, start another "
                              "with a new --trial, or start it afresh with --overwrite")
    assert len(os.listdir(tmp_path)) == 6
    claim_run_folders([run], overwrite=True, quiet=False)
    assert capsys.readouterr().out == f"--overwrite: removed 5 files of the earlier run in {tmp_path}\n"
    assert os.listdir(tmp_path) == ["notes.txt"]  # files the toolkit did not write stay


def test_keep_last_removes_periodic_checkpoints_up_to_the_saved_epoch(tmp_path):
    for name in ("ckpt_epoch_1.pth", "ckpt_epoch_2.pth", "ckpt_epoch_3.pth", "resnet8_last.pth"):
        (tmp_path / name).write_bytes(b"x")
    remove_periodic_checkpoints(str(tmp_path), 2)
    assert sorted(os.listdir(tmp_path)) == ["ckpt_epoch_3.pth", "resnet8_last.pth"]
