"""The run lifecycle pieces of the engine (issue #10): non-finite losses and weights, missing checkpoints
(the run folder's own rules: tests/helper/test_run_folder.py)."""
import math

import pytest
import torch

import distiller_zoo
from distiller_zoo import build_distiller
from engine.epoch import NONFINITE_STEPS, EpochMeter, TrainingDiverged
from engine.fit import check_finite_weights, resume_paths
from engine.step import StudentRun
from models import build_model
from tests.engine.built import method_context, student_options


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
    options = student_options(**{"learning_rate": 0.05, "momentum": 0.9, "gamma": 1.0, "alpha": 0.0, "beta": 0.0,
                                 "epochs": 240, "save_freq": 40, "keep_checkpoints": "all", "distill": "ce",
                                 "device": "cpu", **opt})
    distiller = build_distiller("ce", method_context(distiller_zoo.REGISTRY["ce"], options, model, None,
                                                     num_classes=10))
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


def test_resume_auto_without_a_checkpoint_starts_afresh_and_says_so(tmp_path, capsys):
    runs = [teacher_run(tmp_path / "never_started"), teacher_run(tmp_path / "empty")]
    (tmp_path / "empty").mkdir()
    assert resume_paths(runs, "auto") == [None, None]
    assert capsys.readouterr().out.splitlines() == [
        f"no checkpoint in {tmp_path / 'never_started'} yet: starting from epoch 1",
        f"no checkpoint in {tmp_path / 'empty'} yet: starting from epoch 1"]
