"""NKD: the spec's worked example by hand, the target-column removal, the gradient path, options, one CLI run."""
import math
import os

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from assembly.options import parse_student_options, student_parser
from distiller_zoo import build_distiller
from distiller_zoo.base import Batch, DistillContext, Outputs
from distiller_zoo.NKD import NKDLoss, non_target_columns
from tests.methods import distill_one_epoch, method_options

Z_S = [[1.0, 2.0, 0.5], [0.2, -1.0, 1.5]]
Z_T = [[2.0, 1.0, 0.0], [0.0, -0.5, 2.5]]
Y = [1, 2]


def softmax(row, T=1.0):
    e = [math.exp(v / T) for v in row]
    return [v / sum(e) for v in e]


def nkd_by_hand(z_s, z_t, y, T, gamma):
    target = -sum(softmax(t)[c] * math.log(softmax(s)[c]) for s, t, c in zip(z_s, z_t, y)) / len(y)
    non_target = 0.0
    for s, t, c in zip(z_s, z_t, y):
        q_s = softmax([v for k, v in enumerate(s) if k != c], T)
        q_t = softmax([v for k, v in enumerate(t) if k != c], T)
        non_target += sum(b * math.log(a) for a, b in zip(q_s, q_t))
    return target, -gamma * T * T * non_target / len(y)


def test_worked_example_by_hand_and_in_float32():
    target, non_target = nkd_by_hand(Z_S, Z_T, Y, 1.0, 1.5)
    assert (target, non_target) == pytest.approx((0.190900, 0.937507), rel=1e-5)
    crit = NKDLoss(T=1.0, gamma=1.5)
    s, t, y = torch.tensor(Z_S), torch.tensor(Z_T), torch.tensor(Y)
    assert crit.target_term(s, t, y).item() == pytest.approx(0.190900, rel=1e-5)
    assert crit.non_target_term(s, t, y).item() == pytest.approx(0.937507, rel=1e-5)
    total = crit(s, t, y)
    assert total.dtype == torch.float32
    assert total.item() == pytest.approx(1.128408, rel=1e-5)
    # with the CE the loop adds at -r 1
    assert (F.cross_entropy(s, y) + total).item() == pytest.approx(1.512352, rel=1e-5)


def test_temperature_scales_only_the_non_target_part():
    s, t, y = torch.tensor(Z_S), torch.tensor(Z_T), torch.tensor(Y)
    target, non_target = nkd_by_hand(Z_S, Z_T, Y, 2.0, 0.5)
    crit = NKDLoss(T=2.0, gamma=0.5)
    assert crit.target_term(s, t, y).item() == pytest.approx(0.190900, rel=1e-5)
    assert crit.non_target_term(s, t, y).item() == pytest.approx(non_target, rel=1e-5)
    assert crit(s, t, y).item() == pytest.approx(target + non_target, rel=1e-5)


def test_non_target_columns_drop_each_rows_label_in_order():
    logits = torch.arange(12.0).reshape(3, 4)
    kept = non_target_columns(logits, torch.tensor([0, 2, 3]))
    assert kept.tolist() == [[1.0, 2.0, 3.0], [4.0, 5.0, 7.0], [8.0, 9.0, 10.0]]


def test_one_hot_labels_are_read_by_their_argmax():
    s, t = torch.tensor(Z_S), torch.tensor(Z_T)
    one_hot = F.one_hot(torch.tensor(Y), 3).float()
    assert NKDLoss()(s, t, one_hot).item() == pytest.approx(1.128408, rel=1e-5)


def test_bf16_logits_are_computed_in_float32():
    s, t, y = torch.tensor(Z_S).bfloat16(), torch.tensor(Z_T).bfloat16(), torch.tensor(Y)
    loss = NKDLoss()(s, t, y)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(NKDLoss()(s.float(), t.float(), y).item(), rel=1e-6)


def test_gradients_reach_the_student_logits_only():
    ctx = DistillContext(options=method_options("nkd"), student=nn.Identity(), teacher=nn.Identity())
    method = build_distiller("nkd", ctx)
    z_s = torch.tensor(Z_S, requires_grad=True)
    z_t = torch.tensor(Z_T, requires_grad=True)
    batch = Batch(x=torch.zeros(2, 3, 32, 32), y=torch.tensor(Y), index=torch.arange(2))
    kd = method.loss(Outputs(z_s), Outputs(z_t), batch, 1)["kd"]
    assert kd.item() == pytest.approx(1.128408, rel=1e-5)  # option defaults T 1, gamma 1.5
    kd.backward()
    assert z_s.grad is not None and z_s.grad.abs().sum().item() > 0
    assert z_t.grad is None


def test_declared_options_and_defaults():
    parsed = student_parser().parse_args(["--nkd_T", "2", "--nkd_gamma", "0.5"])
    assert (parsed.nkd_T, parsed.nkd_gamma) == (2.0, 0.5)
    fresh = student_parser().parse_args([])
    assert (fresh.nkd_T, fresh.nkd_gamma) == (1.0, 1.5)
    run = parse_student_options(["--distill", "nkd"])
    assert (run.gamma, run.alpha, run.beta) == (1.0, 0.0, 1.0)


def test_one_epoch_from_the_command_line(tiny_cifar, tmp_path):
    res, state = distill_one_epoch(tiny_cifar, tmp_path, "--distill", "nkd", "--nkd_T", "2", "--nkd_gamma", "1")
    assert os.path.basename(res["run_dir"]) == "S_resnet8_T_resnet8_cifar100_nkd_r_1.0_a_0.0_b_1.0_1"
    assert state["epoch"] == 1
    assert (state["opt"]["nkd_T"], state["opt"]["nkd_gamma"]) == (2.0, 1.0)
