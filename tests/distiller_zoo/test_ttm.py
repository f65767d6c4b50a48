"""TTM and WTTM: the spec's worked examples by hand (U included), the shared loss, gradients, options, CLI runs."""
import math
import os

import pytest
import torch
import torch.nn as nn

from assembly.options import parse_student_options, student_parser
from distiller_zoo import REGISTRY, build_distiller
from distiller_zoo.base import Batch, DistillContext, Outputs
from distiller_zoo.TTM import transformed_teacher_matching
from tests.methods import distill_one_epoch, method_options

Z_S = [[1.0, 2.0, 0.5], [0.2, -1.0, 1.5]]
Z_T = [[2.0, 1.0, 0.0], [0.0, -0.5, 2.5]]
# gamma: (U per sample, L_TTM, L_WTTM) from the spec
EXPECTED = {0.1: ([2.614786, 2.488600], 0.268983, 0.681199),
            0.5: ([1.610374, 1.418970], 0.139544, 0.220034)}


def softmax(row):
    e = [math.exp(v) for v in row]
    return [v / sum(e) for v in e]


def ttm_by_hand(z_s, z_t, gamma):
    """(U, L_TTM, L_WTTM) from the definition: the teacher's probabilities to the power gamma, renormalised."""
    u, kls = [], []
    for s, t in zip(z_s, z_t):
        powered = [p ** gamma for p in softmax(t)]
        u.append(sum(powered))
        q = [p / u[-1] for p in powered]
        kls.append(sum(qc * math.log(qc / pc) for qc, pc in zip(q, softmax(s))))
    return u, sum(kls) / len(kls), sum(w * kl for w, kl in zip(u, kls)) / len(kls)


@pytest.mark.parametrize("gamma", [0.1, 0.5])
def test_worked_examples_by_hand_and_in_float32(gamma):
    u, ttm, wttm = ttm_by_hand(Z_S, Z_T, gamma)
    u_expected, ttm_expected, wttm_expected = EXPECTED[gamma]
    assert u == pytest.approx(u_expected, rel=1e-5)
    assert (ttm, wttm) == pytest.approx((ttm_expected, wttm_expected), rel=1e-5)
    s, t = torch.tensor(Z_S), torch.tensor(Z_T)
    plain = transformed_teacher_matching(s, t, gamma)
    weighted = transformed_teacher_matching(s, t, gamma, weighted=True)
    assert plain.dtype == weighted.dtype == torch.float32
    assert plain.item() == pytest.approx(ttm_expected, rel=1e-5)
    assert weighted.item() == pytest.approx(wttm_expected, rel=1e-5)


def test_the_renormalised_power_is_the_teacher_softmax_at_temperature_one_over_gamma():
    t = torch.tensor(Z_T, dtype=torch.float64)
    powered = torch.softmax(t, dim=1) ** 0.3
    assert torch.allclose(powered / powered.sum(1, keepdim=True), torch.softmax(0.3 * t, dim=1), atol=1e-12)


def test_gamma_one_is_kd_at_temperature_one_without_a_factor():
    torch.manual_seed(0)
    s, t = torch.randn(5, 10), torch.randn(5, 10)
    kl = torch.nn.functional.kl_div(torch.log_softmax(s, 1), torch.softmax(t, 1), reduction="batchmean")
    assert transformed_teacher_matching(s, t, 1.0).item() == pytest.approx(kl.item(), rel=1e-5)
    # U is 1 at gamma 1, so WTTM is TTM
    assert transformed_teacher_matching(s, t, 1.0, weighted=True).item() == pytest.approx(kl.item(), rel=1e-5)


def test_bf16_logits_are_computed_in_float32():
    s, t = torch.tensor(Z_S).bfloat16(), torch.tensor(Z_T).bfloat16()
    loss = transformed_teacher_matching(s, t, 0.1, weighted=True)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(transformed_teacher_matching(s.float(), t.float(), 0.1, weighted=True).item(),
                                        rel=1e-6)


@pytest.mark.parametrize("name,index", [("ttm", 1), ("wttm", 2)])
def test_gradients_reach_the_student_logits_only(name, index):
    ctx = DistillContext(options=method_options(name, ttm_l=0.1), student=nn.Identity(), teacher=nn.Identity())
    method = build_distiller(name, ctx)
    z_s = torch.tensor(Z_S, requires_grad=True)
    z_t = torch.tensor(Z_T, requires_grad=True)
    batch = Batch(x=torch.zeros(2, 3, 32, 32), y=torch.tensor([1, 2]), index=torch.arange(2))
    kd = method.loss(Outputs(z_s), Outputs(z_t), batch, 1)["kd"]
    assert kd.item() == pytest.approx(EXPECTED[0.1][index], rel=1e-5)
    kd.backward()
    assert z_s.grad is not None and z_s.grad.abs().sum().item() > 0
    assert z_t.grad is None


def test_declared_options_and_defaults():
    assert REGISTRY["ttm"].options == REGISTRY["wttm"].options
    assert student_parser().parse_args(["--ttm_l", "0.5"]).ttm_l == 0.5
    assert student_parser().parse_args([]).ttm_l == 1.0  # the reference's flag default
    for name in ("ttm", "wttm"):
        run = parse_student_options(["--distill", name])
        # the reference README's vgg13 -> vgg8 example
        assert (run.gamma, run.alpha, run.beta, run.ttm_l) == (1.0, 0.0, 45.0, 0.1)
    assert parse_student_options(["--distill", "ttm", "--ttm_l", "0.2"]).ttm_l == 0.2


@pytest.mark.parametrize("name", ["ttm", "wttm"])
def test_one_epoch_from_the_command_line(name, tiny_cifar, tmp_path):
    res, state = distill_one_epoch(tiny_cifar, tmp_path, "--distill", name, "--ttm_l", "0.3")
    assert os.path.basename(res["run_dir"]) == f"S_resnet8_T_resnet8_cifar100_{name}_r_1.0_a_0.0_b_45.0_1"
    assert state["epoch"] == 1 and state["opt"]["ttm_l"] == 0.3
