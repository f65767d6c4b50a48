"""PAD-L2: the spec's worked example, the variance branch, its two stages through the engine's init stage,
refusals of unequal widths, and resume of the variance branch from the CLI."""
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from assembly.options import parse_student_options
from dataset import TensorImageSet
from distiller_zoo.PAD import pad_l2_loss
from engine.init_stage import run_init_stage
from helper.logging import NullLogger
from helper.types import Batch
from tests.distiller_zoo.model_pairs import PAIRS, PAIR_IDS, built_pair, pair_outputs
from tests.distiller_zoo.tiny_net import changed, snapshot
from tests.methods import resumed_and_straight


def test_the_worked_example():
    # spec 2.8: s, t and the log-variances v
    s, t = torch.tensor([[1.0, 2.0], [0.0, 1.0]]), torch.tensor([[1.5, 1.0], [0.5, -1.0]])
    v = torch.tensor([[0.0, math.log(2)], [-1.0, 0.5]])
    assert pad_l2_loss(s, t, v).item() == pytest.approx(1.012209, rel=1e-5)
    by_hand = [0.25 / (1e-6 + 1) + 0, 1 / (1e-6 + 2) + math.log(2), 0.25 / (1e-6 + math.exp(-1)) - 1,
               4 / (1e-6 + math.exp(0.5)) + 0.5]
    assert pad_l2_loss(s, t, v).item() == pytest.approx(sum(by_hand) / 4, rel=1e-6)


def test_the_variance_branch_and_the_main_stage_gradients():
    student, teacher, d = built_pair("pad", "resnet14", "resnet8")
    branch = d.variance_branch
    assert [type(m) for m in branch] == [nn.Linear, nn.BatchNorm1d]
    assert (branch[0].in_features, branch[0].out_features, branch[1].num_features) == (64, 64, 64)
    assert d.trainable_modules() == [branch]
    out_s, out_t = pair_outputs(student, teacher, batch=4)
    d.train()
    loss = d.method_loss(out_s, out_t, None, 1)
    s, t = out_s.feats[-1], out_t.feats[-1]
    assert loss.item() == pytest.approx(pad_l2_loss(s, t, branch(s)).item(), rel=1e-6)
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in branch.parameters())
    assert student.fc.weight.grad is None  # the pooled feature's path skips the classifier
    assert student.conv1.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())


def test_a_batch_of_one_has_no_pad_term():
    student, teacher, d = built_pair("pad", "resnet14", "resnet8")
    out_s, out_t = pair_outputs(student, teacher, batch=1)
    d.train()
    loss = d.method_loss(out_s, out_t, None, 1)
    assert loss.item() == 0.0
    loss.backward()
    assert all(torch.equal(p.grad, torch.zeros_like(p)) for p in d.variance_branch.parameters())


@pytest.mark.parametrize("pair", PAIRS, ids=PAIR_IDS)
def test_pairs_of_unequal_pooled_widths_are_refused_with_the_reason(pair):
    with pytest.raises(ValueError, match=r"--distill pad compares the pooled features directly, but the student's "
                                         r"has \d+ dimensions and the teacher's \d+; pick a pair of equal widths"):
        built_pair("pad", *pair)


def test_stage_one_is_the_init_stage_training_the_student_with_ce_and_15_mse():
    student, teacher, d = built_pair("pad", "resnet14", "resnet8")
    assert d.init_modules(student) == [student]
    out_s, out_t = pair_outputs(student, teacher, batch=4)
    y = torch.tensor([3, 1, 4, 1])
    expected = F.cross_entropy(out_s.logits, y) + 15 * ((out_s.feats[-1] - out_t.feats[-1]) ** 2).mean()
    assert d.init_loss(out_s, out_t, Batch(None, y, None)).item() == pytest.approx(expected.item(), rel=1e-6)
    # the engine's init stage: the student and nothing else moves
    opt = parse_student_options(["--distill", "pad", "--init_epochs", "1", "--batch_size", "4"])
    images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    data = SimpleNamespace(train=TensorImageSet(images, torch.arange(8) % 100, [0.5] * 3, [0.25] * 3))
    before = snapshot(student, teacher, d)
    run_init_stage(opt, data, student, teacher, d, torch.device("cpu"), NullLogger())
    moved = changed(before, student, teacher, d)
    assert {i for i, _ in moved} == {0}
    assert (0, "conv1.weight") in moved and (0, "fc.weight") in moved


def test_defaults():
    run = parse_student_options(["--distill", "pad"])
    assert (run.gamma, run.alpha, run.beta, run.pad_l2_weight, run.init_epochs) == (1.0, 0.0, 1.0, 15.0, 30)


@pytest.mark.slow
def test_resume_continues_exactly_with_the_variance_branch(micro_cifar, tmp_path):
    straight, resumed = resumed_and_straight(micro_cifar, tmp_path, "--distill", "pad", "--init_epochs", "1")
    assert {k.split(".")[0] for k in resumed["distiller"]} == {"variance_branch"}
    assert "variance_branch.1.running_mean" in resumed["distiller"]
    for part in ("model", "distiller"):
        for key, value in straight[part].items():
            assert torch.equal(value, resumed[part][key]), (part, key)
