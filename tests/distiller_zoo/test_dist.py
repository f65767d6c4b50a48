"""DIST: the spec's worked examples by hand, the gradient path, its options and defaults, one run from the CLI."""
import math
import os

import pytest
import torch
import torch.nn as nn

from assembly.options import parse_student_options, student_parser
from distiller_zoo import build_distiller
from distiller_zoo.base import Batch, DistillContext, Outputs
from distiller_zoo.DIST import DISTLoss, pearson_correlation
from tests.methods import distill_one_epoch, method_options

# the spec's common inputs (B = 2) and its B = 3 example (the intra term is degenerate for two samples)
Z_S2 = [[1.0, 2.0, 0.5], [0.2, -1.0, 1.5]]
Z_T2 = [[2.0, 1.0, 0.0], [0.0, -0.5, 2.5]]
Z_S3 = Z_S2 + [[0.3, 0.1, -0.4]]
Z_T3 = Z_T2 + [[1.0, 0.5, -1.0]]


def softmax(row, tau):
    e = [math.exp(v / tau) for v in row]
    return [v / sum(e) for v in e]


def pearson(a, b):
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    ca, cb = [v - ma for v in a], [v - mb for v in b]
    inner = sum(x * y for x, y in zip(ca, cb))
    return inner / (math.sqrt(sum(x * x for x in ca)) * math.sqrt(sum(y * y for y in cb)) + 1e-8)


def dist_by_hand(z_s, z_t, tau):
    y_s = [softmax(r, tau) for r in z_s]
    y_t = [softmax(r, tau) for r in z_t]
    inter = 1 - sum(pearson(a, b) for a, b in zip(y_s, y_t)) / len(y_s)
    columns = range(len(y_s[0]))
    intra = 1 - sum(pearson([r[c] for r in y_s], [r[c] for r in y_t]) for c in columns) / len(columns)
    return tau * tau * inter, tau * tau * intra


@pytest.mark.parametrize("z_s,z_t,tau,expected", [
    (Z_S3, Z_T3, 1.0, (0.368154, 0.288536)),
    (Z_S3, Z_T3, 4.0, (4.428040, 4.663715)),
    (Z_S2, Z_T2, 4.0, (6.641915, 10.666510)),
])
def test_worked_examples_by_hand_and_in_float32(z_s, z_t, tau, expected):
    by_hand = dist_by_hand(z_s, z_t, tau)
    assert by_hand == pytest.approx(expected, rel=1e-5)
    inter, intra = DISTLoss(tau=tau).terms(torch.tensor(z_s), torch.tensor(z_t))
    assert inter.dtype == torch.float32
    assert (inter.item(), intra.item()) == pytest.approx(expected, rel=1e-5)
    total = DISTLoss(beta=1.0, gamma=1.0, tau=tau)(torch.tensor(z_s), torch.tensor(z_t)).item()
    assert total == pytest.approx(sum(expected), rel=1e-5)


def test_two_samples_at_tau_1_the_intra_term_is_degenerate():
    inter, intra = DISTLoss(tau=1.0).terms(torch.tensor(Z_S2), torch.tensor(Z_T2))
    assert inter.item() == pytest.approx(0.549300, rel=1e-5)
    assert abs(intra.item()) < 1e-5  # any two points correlate +-1
    assert DISTLoss(tau=1.0)(torch.tensor(Z_S2), torch.tensor(Z_T2)).item() == pytest.approx(0.549300, rel=1e-4)


def test_weights_scale_their_own_term():
    s, t = torch.tensor(Z_S3), torch.tensor(Z_T3)
    inter, intra = DISTLoss(tau=4.0).terms(s, t)
    assert DISTLoss(beta=3.0, gamma=0.5, tau=4.0)(s, t).item() == pytest.approx(3 * inter.item() + 0.5 * intra.item(),
                                                                              rel=1e-6)


def test_the_epsilon_is_added_to_the_product_of_the_norms():
    a = torch.tensor([[0.0, 1e-5, 0.0]])
    # centred norms are ~8.2e-6 each: their product (6.7e-11) is far below 1e-8, so rho is inner / 1e-8
    inner = ((a - a.mean()) ** 2).sum().item()
    assert pearson_correlation(a, a, dim=1).item() == pytest.approx(inner / (inner + 1e-8), rel=1e-4)
    assert pearson_correlation(a, a, dim=1).item() < 0.01


def test_bf16_logits_are_computed_in_float32():
    s, t = torch.tensor(Z_S3).bfloat16(), torch.tensor(Z_T3).bfloat16()
    loss = DISTLoss(tau=4.0)(s, t)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(DISTLoss(tau=4.0)(s.float(), t.float()).item(), rel=1e-6)


def test_gradients_reach_the_student_logits_only():
    ctx = DistillContext(options=method_options("dist"), student=nn.Identity(), teacher=nn.Identity())
    method = build_distiller("dist", ctx)
    z_s = torch.tensor(Z_S3, requires_grad=True)
    z_t = torch.tensor(Z_T3, requires_grad=True)
    batch = Batch(x=torch.zeros(3, 3, 32, 32), y=torch.tensor([1, 2, 0]), index=torch.arange(3))
    kd = method.loss(Outputs(z_s), Outputs(z_t), batch, 1)["kd"]
    assert kd.item() == pytest.approx(4.428040 + 4.663715, rel=1e-5)  # options' defaults: tau 4, weights 1
    kd.backward()
    assert z_s.grad is not None and z_s.grad.abs().sum().item() > 0
    assert z_t.grad is None


def test_declared_options_and_defaults():
    parsed = student_parser().parse_args(["--dist_beta", "0.5", "--dist_gamma", "2", "--dist_tau", "1"])
    assert (parsed.dist_beta, parsed.dist_gamma, parsed.dist_tau) == (0.5, 2.0, 1.0)
    fresh = student_parser().parse_args([])
    assert (fresh.dist_beta, fresh.dist_gamma, fresh.dist_tau) == (1.0, 1.0, 4.0)
    run = parse_student_options(["--distill", "dist"])
    assert (run.gamma, run.alpha, run.beta) == (1.0, 0.0, 2.0)
    assert parse_student_options(["--distill", "dist", "-b", "3"]).beta == 3.0


def test_one_epoch_from_the_command_line(tiny_cifar, tmp_path):
    res, state = distill_one_epoch(tiny_cifar, tmp_path, "--distill", "dist", "--dist_tau", "2", "--dist_gamma", "0.5")
    assert os.path.basename(res["run_dir"]) == "S_resnet8_T_resnet8_cifar100_dist_r_1.0_a_0.0_b_2.0_1"
    assert state["epoch"] == 1
    assert (state["opt"]["dist_tau"], state["opt"]["dist_gamma"], state["opt"]["dist_beta"]) == (2.0, 0.5, 1.0)
