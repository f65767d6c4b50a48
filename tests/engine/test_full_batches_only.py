"""A method whose modules are sized by --batch_size (SemCKD) trains on full batches only: the loop skips the last,
smaller batch for it and for nothing else."""
import pytest
import torch

from engine.epoch import EpochMeter, train_runs_one_epoch
from engine.step import loss_weights, step_runs

from .test_host_syncs import CPU, options, tiny_set
from .test_teacher_in_loop import student_run


def test_a_smaller_last_batch_is_skipped_for_semckd_only():
    opt = options(batch_size=4)
    data = tiny_set(10)  # batches of 4, 4 and 2
    semckd, teacher = student_run("semckd", opt, data)
    kd, _ = student_run("kd", opt, data)
    batches = list(data.train_batches(4, 0, 1))
    assert [b.y.shape[0] for b in batches] == [4, 4, 2]
    before = {k: v.clone() for k, v in semckd.student.state_dict().items()}
    kd_before = kd.student.fc.weight.clone()
    weights = loss_weights(opt)
    _, results = step_runs(batches[2], 1, [semckd, kd], [weights, weights], opt, CPU, teacher)
    assert results[0] is None and results[1] is not None
    # the skipped run took no step (its BatchNorm statistics did not move either); the other one did
    assert all(torch.equal(before[k], v) for k, v in semckd.student.state_dict().items())
    assert not torch.equal(kd.student.fc.weight, kd_before)
    _, [full] = step_runs(batches[0], 1, [semckd], [weights], opt, CPU, teacher)
    assert full is not None and full[1]["kd"] > 0


def test_an_epoch_counts_the_trained_batches_only(monkeypatch):
    opt = options(batch_size=4)
    data = tiny_set(10)
    run, teacher = student_run("semckd", opt, data)
    counted = []
    update = EpochMeter.update

    def recording(self, loss, terms, logits, y):
        counted.append(y.shape[0])
        return update(self, loss, terms, logits, y)

    monkeypatch.setattr(EpochMeter, "update", recording)
    row = train_runs_one_epoch(1, data, [run], opt, CPU, teacher)[0]
    assert counted == [4, 4]
    assert row["loss_kd"] > 0 and row["train_loss"] == row["train_loss"]  # finite means, not 0/0
