"""BYOT: the loss against a hand computation, what it trains, and its recipe's schedule."""
import pytest
import torch
import torch.nn.functional as F

from distiller_zoo.base import Batch, DistillContext, Outputs
from distiller_zoo.BYOT import BYOT, byot_terms
from assembly.options import parse_student_options
from helper.util import lr_at, parse_epochs, scheduled_lr
from tests.methods import method_options


def _reference_loss(out, y, T, alpha, beta):
    """The reference's train.py loss, term by term, written out with explicit loops over the batch."""
    z4, z1, z2, z3, f4, f1, f2, f3 = out
    B = y.shape[0]
    ce = sum(-torch.log_softmax(z, 1)[torch.arange(B), y].mean() for z in (z4, z1, z2, z3))
    p4 = torch.softmax(z4.detach() / T, 1)
    kd = 0
    for z in (z1, z2, z3):
        per = [-(p4[b] * torch.log_softmax(z[b] / T, 0)).sum() for b in range(B)]
        kd = kd + torch.stack(per).mean() * T * T
    feat = 0
    for f in (f1, f2, f3):
        d = (f - f4.detach()) ** 2 * ((f > 0) | (f4.detach() > 0)).float()
        feat = feat + d.abs().sum()
    return (1 - alpha) * ce + alpha * kd + beta * feat, (ce, kd, feat)


def _ctx(model, **overrides):
    return DistillContext(method_options(BYOT, **{"kd_T": 3.0, **overrides}), model, None)


def test_loss_matches_a_hand_computation(r18):
    torch.manual_seed(1)
    r18.train()
    x, y = torch.randn(6, 3, 32, 32), torch.randint(0, 10, (6,))
    distiller = BYOT(_ctx(r18))
    feats, logits = r18(x, is_feat=True)
    terms = distiller.loss(Outputs(logits, list(feats)), None, Batch(x, y, torch.arange(6)), 1)
    assert set(terms) == {"ce", "kl", "kd"}
    # the loop weights ce/kl/kd with -r/-a/-b = 0.9/0.1/1e-6
    g, a, b = (BYOT.defaults[w] for w in ("gamma", "alpha", "beta"))
    assert (g, a, b) == (0.9, 0.1, 1e-6)
    total = g * terms["ce"] + a * terms["kl"] + b * terms["kd"]
    torch.manual_seed(1)  # same BN batch statistics: the reference 8-tuple of an identical forward
    ref_total, (ce, kd, feat) = _reference_loss(r18.byot_outputs(x), y, 3.0, 0.1, 1e-6)
    assert torch.allclose(terms["ce"], ce, rtol=1e-5)
    assert torch.allclose(terms["kl"], kd, rtol=1e-5)
    assert torch.allclose(terms["kd"], feat, rtol=1e-4)
    assert torch.allclose(total, ref_total, rtol=1e-5)
    # soft-target CE, not KL: it exceeds T^2 * KL by T^2 * the teacher's entropy
    z = [t.detach() for t in r18.exit_logits(x)]
    p4 = F.softmax(z[-1] / 3, 1)
    kl = sum(F.kl_div(F.log_softmax(zk / 3, 1), p4, reduction="batchmean") for zk in z[:3]) * 9
    ent = -(p4 * p4.log()).sum(1).mean() * 9 * 3
    assert torch.allclose(byot_terms(z, [torch.zeros(6, 512)] * 3, torch.zeros(6, 512), y, 3.0)["kl"], kl + ent,
                          rtol=1e-5)


def test_gradients_only_reach_what_the_reference_trains(r18):
    torch.manual_seed(2)
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    r18.zero_grad()
    distiller = BYOT(_ctx(r18))
    feats, logits = r18(x, is_feat=True)
    terms = distiller.loss(Outputs(logits, list(feats)), None, Batch(x, y, torch.arange(4)), 1)
    # the distillation and feature terms must not move the deepest classifier (its targets are detached)
    (terms["kl"] + terms["kd"]).backward()
    assert r18.fc.weight.grad is None or r18.fc.weight.grad.abs().sum() == 0
    assert r18.layer4[0].conv1.weight.grad is None or r18.layer4[0].conv1.weight.grad.abs().sum() == 0
    assert r18.middle_fc1.weight.grad.abs().sum() > 0 and r18.layer1[0].conv1.weight.grad.abs().sum() > 0


def test_per_exit_train_accuracy_is_detached_and_resets(r18):
    distiller = BYOT(_ctx(r18))
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    for _ in range(2):
        feats, logits = r18(x, is_feat=True)
        distiller.loss(Outputs(logits, list(feats)), None, Batch(x, y, torch.arange(4)), 1)
        assert not distiller._correct.requires_grad and distiller._correct.grad_fn is None
    m = distiller.epoch_metrics()
    assert sorted(m) == ["train_acc_c1", "train_acc_c2", "train_acc_c3", "train_acc_c4"]
    assert all(isinstance(v, float) and 0 <= v <= 100 for v in m.values())
    assert distiller.epoch_metrics() == {}
    assert list(distiller.state_dict()) == []  # nothing to save beyond the student


def test_needs_a_multi_exit_student():
    from models import build_model
    with pytest.raises(ValueError, match="multi-exit student"):
        BYOT(_ctx(build_model("resnet8", num_classes=10)))


@pytest.mark.parametrize("ref_epoch,lr", [(74, 0.1), (75, 0.01), (129, 0.01), (130, 0.001), (179, 0.001),
                                          (180, 1e-4), (0, 0.1), (199, 1e-4)])
def test_recipe_schedule_matches_the_reference(ref_epoch, lr):
    # the reference counts epochs from 0, this toolkit from 1: reference epoch e is toolkit epoch e + 1
    r = BYOT.defaults
    got = lr_at(ref_epoch + 1, r["learning_rate"], parse_epochs(r["lr_decay_epochs"]), r["lr_decay_rate"])
    assert got == pytest.approx(lr, rel=1e-9)


def test_reference_schedule_epoch_counts():
    # the committed reference log: 75 / 55 / 50 / 20 epochs at 0.1 / 0.01 / 0.001 / 0.0001
    r = BYOT.defaults
    lrs = [round(lr_at(e, 0.1, parse_epochs(r["lr_decay_epochs"]), 0.1), 8) for e in range(1, r["epochs"] + 1)]
    assert [lrs.count(v) for v in (0.1, 0.01, 0.001, 0.0001)] == [75, 55, 50, 20]


def byot_reference_lr(epoch, warm_up, lr=0.1, step_ratio=0.1):
    """BYOT's train.py adjust_learning_rate, transcribed (0-indexed epochs)."""
    if warm_up and epoch < 1:
        return 0.01
    if 75 <= epoch < 130:
        return lr * step_ratio
    if 130 <= epoch < 180:
        return lr * step_ratio ** 2
    if epoch >= 180:
        return lr * step_ratio ** 3
    return lr


@pytest.mark.parametrize("warm_up", [True, False], ids=["warm-up", "no warm-up"])
def test_warm_up_lr_of_every_epoch_is_the_references(warm_up):
    # the README's run with the reference's --warm-up: lr 0.01 in its epoch 0 only, then the recipe's schedule
    opt = parse_student_options(["--distill", "byot", "--model_s", "multi_resnet18_kd"]
                                + (["--warm-up"] if warm_up else []))
    assert opt.warm_up is warm_up and opt.epochs == 200
    got = [scheduled_lr(e, opt.learning_rate, opt) for e in range(1, opt.epochs + 1)]
    assert got == pytest.approx([byot_reference_lr(e, warm_up) for e in range(200)], rel=1e-12)
    assert got[:2] == ([0.01, 0.1] if warm_up else [0.1, 0.1])
