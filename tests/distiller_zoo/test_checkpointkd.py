"""CheckpointKD: the loss convention and the recipe's schedule against the reference."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from distiller_zoo.base import Batch, DistillContext, Outputs
from distiller_zoo.CheckpointKD import CheckpointKD
from distiller_zoo.KD import KD
from helper.util import lr_at, parse_epochs
from tests.methods import method_options


def _loss(distiller_cls, s, t, y, gamma, alpha, beta, **opt):
    o = method_options(distiller_cls, kd_T=5.0, **opt)
    d = distiller_cls(DistillContext(o, nn.Identity(), nn.Identity()))
    terms = d.loss(Outputs(s), Outputs(t), Batch(None, y, None), 1)
    w = {"ce": gamma, "kl": alpha, "kd": beta}  # engine.step.loss_weights
    return sum(w.get(k, 1.0) * v for k, v in terms.items())


def test_loss_convention_matches_the_reference():
    torch.manual_seed(0)
    s, t, y = torch.randn(8, 10) * 3, torch.randn(8, 10) * 3, torch.randint(0, 10, (8,))
    T, a = 5.0, 0.5
    # CheckpointKD student.py: alpha*CE + (1-alpha) * kl_div(log_softmax(s/T), softmax(t/T), batchmean) * T*T
    ref = a * F.cross_entropy(s, y) + (1 - a) * F.kl_div(F.log_softmax(s / T, 1), F.softmax(t / T, 1),
                                                         reduction="batchmean") * T * T
    assert torch.allclose(_loss(KD, s, t, y, 0.5, 0.5, 0.0), ref, rtol=1e-6)
    weights = tuple(CheckpointKD.defaults[w] for w in ("gamma", "alpha", "beta"))
    assert weights == (0.5, 0.5, 0.0) and CheckpointKD.defaults["kd_T"] == 5.0
    assert torch.allclose(_loss(CheckpointKD, s, t, y, *weights), ref, rtol=1e-6)
    # --teacher_scale: the student is not softened and the factor is T
    ref_scale = a * F.cross_entropy(s, y) + (1 - a) * F.kl_div(F.log_softmax(s, 1), F.softmax(t / T, 1),
                                                               reduction="batchmean") * T
    assert torch.allclose(_loss(KD, s, t, y, 0.5, 0.5, 0.0, teacher_scale=True), ref_scale, rtol=1e-6)


@pytest.mark.parametrize("ref_epoch,lr", [(0, 0.1), (59, 0.1), (60, 0.01), (119, 0.01), (120, 0.001), (179, 0.001),
                                          (180, 1e-4), (199, 1e-4)])
def test_recipe_schedule_is_the_reference_steplr(ref_epoch, lr):
    r = CheckpointKD.defaults
    assert lr_at(ref_epoch + 1, r["learning_rate"], parse_epochs(r["lr_decay_epochs"]), 0.1) == pytest.approx(lr)
    assert 0.1 * 0.1 ** (ref_epoch // 60) == pytest.approx(lr)  # StepLR(60, 0.1) in closed form
