"""helper/run_folder.py (issue #10): finished checkpoints, what counts as an earlier run, --keep_checkpoints and
the checkpoint-size line."""
import os

import pytest

from helper.checkpoint import save_checkpoint
from helper.run_folder import (ALREADY_FINISHED, RunFolderInUse, checkpoint_plan, claim_run_folders,
                               finished_result, holds_run, remove_periodic_checkpoints)
from models import build_model
from tests.engine.test_run_lifecycle import teacher_run


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
