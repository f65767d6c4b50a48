"""KDrefine: logit normalisation, the loss and its option defaults."""
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from assembly.options import parse_student_options
from distiller_zoo import REGISTRY, Batch, DistillContext, Outputs
from distiller_zoo.KDrefine import KDrefine, normalize_logits
from tests.methods import method_options


def test_kdrefine_normalisation_of_a_known_vector():
    z = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0]], dtype=torch.float64)
    sigma = math.sqrt(10.0 / 4.0)  # unbiased: sum of squared deviations 10 over n-1 = 4
    for eps in (1e-7, 0.5):
        zn = normalize_logits(z, 2.0, eps)
        assert zn.mean().item() == pytest.approx(0.0, abs=1e-12)
        assert zn.std().item() == pytest.approx(2.0 / (1.0 + eps / sigma), rel=1e-12)
        expected = [2.0 * (v - 3.0) / (sigma + eps) for v in (1, 2, 3, 4, 5)]
        assert zn.flatten().tolist() == pytest.approx(expected, rel=1e-12)
    # the biased std would give 2/(1+eps/sqrt(2)) instead: the estimator matters
    assert normalize_logits(z, 2.0, 0.5).std().item() != pytest.approx(2.0 / (1.0 + 0.5 / math.sqrt(2.0)))
    # the multiplier scales the std
    assert normalize_logits(z, 3.0, 0.0).std().item() == pytest.approx(3.0, rel=1e-12)
    # differentiable through the mean and std
    zz = torch.randn(3, 7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: normalize_logits(t, 2.0, 1e-7), (zz,))


def test_kdrefine_loss_uses_normalised_logits_for_ce_and_kl():
    torch.manual_seed(0)
    options = method_options("kdrefine", kd_T=4.0, logit_multiplier=2.0, logit_eps=1e-7)
    d = REGISTRY["kdrefine"](DistillContext(options, nn.Identity(), nn.Identity()))
    z_s, z_t = torch.randn(4, 100) * 5, torch.randn(4, 100) * 3
    y = torch.tensor([1, 2, 3, 4])
    terms = d.loss(Outputs(z_s), Outputs(z_t), Batch(None, y, torch.arange(4)), 1)
    zs_n = 2 * (z_s - z_s.mean(1, keepdim=True)) / (z_s.std(1, keepdim=True) + 1e-7)
    zt_n = 2 * (z_t - z_t.mean(1, keepdim=True)) / (z_t.std(1, keepdim=True) + 1e-7)
    assert terms["ce"].item() == pytest.approx(F.cross_entropy(zs_n, y).item(), rel=1e-5)
    assert terms["ce"].item() != pytest.approx(F.cross_entropy(z_s, y).item(), rel=1e-3)
    T = 4.0
    p_t = torch.softmax(zt_n / T, 1)
    kl = (p_t * (torch.log(p_t) - torch.log_softmax(zs_n / T, 1))).sum() * T * T / 4
    assert terms["kl"].item() == pytest.approx(kl.item(), rel=1e-5)
    assert terms["kd"].item() == 0.0
    assert {w: REGISTRY["kdrefine"].defaults[w] for w in ("gamma", "alpha", "beta")} == {
        "gamma": 0.1, "alpha": 0.9, "beta": 0.0}


def test_kdrefine_options_and_learning_rate_default():
    opt = parse_student_options(["--distill", "kdrefine", "--model_s", "represnet20", "-t", "ACTDB"])
    assert opt.learning_rate == 0.01 and opt.blocktype == "AMBB"
    assert opt.logit_multiplier == 2.0 and opt.logit_eps == 1e-7
    assert parse_student_options(["--distill", "kdrefine", "--learning_rate", "0.05"]).learning_rate == 0.05
    assert parse_student_options(["--distill", "kd", "--model_s", "resnet8"]).learning_rate == 0.05
    opt = parse_student_options(["--distill", "kdrefine", "--logit_multiplier", "4", "--logit_eps", "0.1"])
    d = REGISTRY["kdrefine"](DistillContext(KDrefine.select_options(opt), nn.Identity(), nn.Identity()))
    z = torch.tensor([[0.0, 1.0, 2.0]])
    assert d.normalize(z).flatten().tolist() == pytest.approx([-4 / 1.1, 0.0, 4 / 1.1], rel=1e-6)
    with pytest.raises(ValueError, match="block_type|AMBB"):
        parse_student_options(["--distill", "kdrefine", "--blocktype", "DBB"])
