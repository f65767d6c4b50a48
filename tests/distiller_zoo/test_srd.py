"""SRD: the spec's worked example, the batch-statistics normalisers, the projector of pairs of different widths,
refusals, and resume of the projector from the CLI."""
import math

import pytest
import torch

from assembly.options import parse_student_options
from distiller_zoo import DistillContext, build_distiller
from distiller_zoo.SRD import batch_standardize, srd_loss
from tests.distiller_zoo.model_pairs import PAIRS, PAIR_IDS, built_pair, pair_outputs
from tests.methods import method_options, resumed_and_straight

Z_S = torch.tensor([[1.0, 2.0, 0.5], [0.2, -1.0, 1.5]])
Z_T = torch.tensor([[2.0, 1.0, 0.0], [0.0, -0.5, 2.5]])


def test_the_worked_example():
    # spec 2.6: the normalised features taken as given, the common logits (KL at tau 1 = 0.251443, no tau^2)
    s_hat, t_hat = torch.tensor([[0.5, -1.0], [1.0, 0.0]]), torch.tensor([[1.0, -1.0], [0.0, 0.5]])
    assert srd_loss(s_hat, t_hat, Z_S, Z_T).item() == pytest.approx(0.487009, rel=1e-5)
    # by hand: 2 * log(0.5^4 + 0 + 1^4 + 0.5^4) + KL_1
    assert srd_loss(s_hat, t_hat, Z_S, Z_T).item() == pytest.approx(2 * math.log(1.125) + 0.251443, rel=1e-5)
    # the feature term is a log of a sum: doubling the batch by repeating it adds 2 log 2
    twice = srd_loss(s_hat.repeat(2, 1), t_hat.repeat(2, 1), Z_S.repeat(2, 1), Z_T.repeat(2, 1))
    assert twice.item() == pytest.approx(0.487009 + 2 * math.log(2), rel=1e-5)


def test_the_normaliser_uses_batch_statistics_with_eps_1e_4():
    x = torch.tensor([[1.0, 10.0], [3.0, 10.0], [5.0, 13.0]])
    mean, var = x.mean(0), x.var(0, unbiased=False)
    assert torch.allclose(batch_standardize(x), (x - mean) / torch.sqrt(var + 1e-4))


@pytest.mark.parametrize("pair", PAIRS, ids=PAIR_IDS)
def test_the_projector_maps_the_students_pooled_feature_to_the_teachers_width(pair):
    student, teacher, d = built_pair("srd", *pair)
    out_s, out_t = pair_outputs(student, teacher, batch=4)
    d_s, d_t = out_s.feats[-1].shape[1], out_t.feats[-1].shape[1]
    assert d_s != d_t and (d.projector.in_features, d.projector.out_features) == (d_s, d_t)
    s_hat, t_hat = d.normalised_features(out_s, out_t)
    assert s_hat.shape == t_hat.shape == (4, d_t)
    # per feature, zero mean and (biased) variance var / (var + eps) over the batch
    assert torch.allclose(t_hat.mean(0), torch.zeros(d_t), atol=1e-4)
    loss = d.method_loss(out_s, out_t, None, 1)
    loss.backward()
    assert d.projector.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())
    assert set(d.state_dict()) == {"projector.weight", "projector.bias"}


def test_a_batch_of_one_keeps_only_the_kl_term():
    student, teacher, d = built_pair("srd", "wrn_40_2", "resnet8")
    out_s, out_t = pair_outputs(student, teacher, batch=1)
    loss = d.method_loss(out_s, out_t, None, 1)
    expected = torch.nn.functional.kl_div(out_s.logits.log_softmax(1), out_t.logits.softmax(1), reduction="sum")
    assert torch.isfinite(loss) and loss.item() == pytest.approx(expected.item(), rel=1e-5)
    loss.backward()
    assert torch.equal(d.projector.weight.grad, torch.zeros_like(d.projector.weight))


def test_defaults_and_refusals():
    run = parse_student_options(["--distill", "srd"])
    assert (run.gamma, run.alpha, run.beta, run.srd_exponent, run.srd_T) == (1.0, 0.0, 1.0, 4.0, 1.0)
    feats = [torch.zeros(2, 8)]
    for flag, value in (("srd_exponent", 0.0), ("srd_T", -1.0)):
        ctx = DistillContext(method_options("srd", **{flag: value}), None, None, feats, feats)
        with pytest.raises(ValueError, match=f"--{flag} must be positive"):
            build_distiller("srd", ctx)


@pytest.mark.slow
def test_resume_continues_exactly_with_the_projector(micro_cifar, tmp_path):
    straight, resumed = resumed_and_straight(micro_cifar, tmp_path, "--distill", "srd")
    assert set(resumed["distiller"]) == {"projector.weight", "projector.bias"}
    for part in ("model", "distiller"):
        for key, value in straight[part].items():
            assert torch.equal(value, resumed[part][key]), (part, key)
    assert resumed["epoch"] == 2
