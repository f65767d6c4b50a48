import math
import types

import pytest
import torch

from distiller_zoo import DistillKL, build_distiller, DistillContext, Outputs, Batch
from helper.options import parse_student_options, parse_teacher_options, resolve_loss_weights, str2bool
from helper.util import accuracy, adjust_learning_rate, lr_at


@pytest.mark.parametrize("epoch,expected", [
    (1, 0.05), (150, 0.05), (151, 0.005), (180, 0.005), (181, 0.0005), (210, 0.0005), (211, 0.00005),
    (240, 0.00005)])
def test_repdistiller_step_schedule(epoch, expected):
    assert lr_at(epoch, 0.05, [150, 180, 210], 0.1) == pytest.approx(expected, rel=1e-12)


def test_adjust_learning_rate_sets_every_group():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [p]}, {"params": [torch.nn.Parameter(torch.zeros(1))]}], lr=1.0)
    o = types.SimpleNamespace(learning_rate=0.05, lr_decay_epochs="150,180,210", lr_decay_rate=0.1)
    assert adjust_learning_rate(181, o, opt) == pytest.approx(0.0005)
    assert [g["lr"] for g in opt.param_groups] == [pytest.approx(0.0005)] * 2


def test_student_lr_defaults_follow_repdistiller():
    assert parse_student_options(["--model_s", "resnet8"]).learning_rate == 0.05
    assert parse_student_options(["--model_s", "MobileNetV2"]).learning_rate == 0.01
    assert parse_student_options(["--model_s", "ShuffleV1"]).learning_rate == 0.01
    # explicitly given: kept (RepDistiller overrode even this; the toolkit respects the user)
    assert parse_student_options(["--model_s", "ShuffleV2", "--learning_rate", "0.02"]).learning_rate == 0.02
    assert parse_teacher_options(["--model", "ShuffleV2"]).learning_rate == 0.01


def test_kd_loss_against_hand_computation():
    # two samples, three classes, T = 2: KL summed over classes, averaged over batch, times T^2
    s = torch.tensor([[1.0, 2.0, 3.0], [0.5, -1.0, 0.0]])
    t = torch.tensor([[3.0, 1.0, 0.0], [0.0, 0.0, 2.0]])
    T = 2.0
    total = 0.0
    for b in range(2):
        zs = [math.exp(v / T) for v in s[b].tolist()]
        zt = [math.exp(v / T) for v in t[b].tolist()]
        ps = [v / sum(zs) for v in zs]
        pt = [v / sum(zt) for v in zt]
        total += sum(q * (math.log(q) - math.log(p)) for p, q in zip(ps, pt))
    expected = total / 2 * T * T
    assert DistillKL(T)(s, t).item() == pytest.approx(expected, rel=1e-6)


def test_kd_distiller_terms_and_weights():
    opt = types.SimpleNamespace(kd_T=4.0)
    d = build_distiller("kd", DistillContext(opt, None, None))
    logit_s, logit_t = torch.randn(5, 10), torch.randn(5, 10)
    y = torch.randint(0, 10, (5,))
    terms = d.loss(Outputs(logit_s), Outputs(logit_t), Batch(None, y, torch.arange(5)), 1)
    assert set(terms) == {"ce", "kl", "kd"}
    assert terms["ce"].item() == pytest.approx(torch.nn.functional.cross_entropy(logit_s, y).item())
    assert terms["kl"].item() == pytest.approx(DistillKL(4.0)(logit_s, logit_t).item())
    assert terms["kd"].item() == 0.0
    # missing -r/-a/-b: the method's recipe; RepDistiller's -r default of 1 when only -a/-b given
    o = types.SimpleNamespace(gamma=None, alpha=None, beta=None)
    resolve_loss_weights(o, d.default_weights)
    assert (o.gamma, o.alpha, o.beta) == (0.1, 0.9, 0.0)
    o = types.SimpleNamespace(gamma=None, alpha=0.5, beta=None)
    resolve_loss_weights(o, d.default_weights)
    assert (o.gamma, o.alpha, o.beta) == (1.0, 0.5, 0.0)


def test_unknown_distill_lists_methods():
    with pytest.raises(ValueError) as e:
        build_distiller("nope", DistillContext(types.SimpleNamespace(), None, None))
    assert "kd" in str(e.value) and "nope" in str(e.value)


def test_accuracy_topk():
    out = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.15, 0.05], [0.2, 0.3, 0.5]])
    y = torch.tensor([1, 1, 0])
    top1, top2 = accuracy(out, y, topk=(1, 2))
    assert top1.item() == pytest.approx(100 / 3)
    assert top2.item() == pytest.approx(200 / 3)


def test_str2bool_is_a_real_boolean():
    assert str2bool("False") is False and str2bool("True") is True and str2bool("0") is False
    with pytest.raises(Exception):
        str2bool("maybe")
