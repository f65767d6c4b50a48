"""BYOT: the multi-exit ResNets, the loss against a hand computation, the schedule and the recipe."""
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from distiller_zoo.base import Batch, DistillContext, Outputs
from distiller_zoo.BYOT import BYOT, byot_terms
from helper.multihead import best_epoch_row, evaluate_exits, exits_table
from helper.recipe import apply_recipe, explicit_dests, set_normalization
from helper.util import lr_at, parse_epochs
from models.multi_resnet import BYOT_MODELS, drop_unused_downsample, multi_resnet18_kd, multi_resnet50_kd



@pytest.fixture(scope="module")
def r18():
    torch.manual_seed(0)
    return multi_resnet18_kd(num_classes=10)


def test_registered_names():
    assert set(BYOT_MODELS) == {"multi_resnet18_kd", "multi_resnet50_kd"}


@pytest.mark.parametrize("ctor,width", [(multi_resnet18_kd, 512), (multi_resnet50_kd, 2048)])
def test_reference_outputs_have_the_spec_shapes(ctor, width):
    torch.manual_seed(0)
    model = ctor(num_classes=100).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        out = model.byot_outputs(x)
        feats, logits = model(x, is_feat=True)
    assert len(out) == 8
    assert [tuple(t.shape) for t in out[:4]] == [(1, 100)] * 4
    assert [tuple(t.shape) for t in out[4:]] == [(1, width, 1, 1)] * 4
    assert all((t >= 0).all() for t in out[4:])  # post-ReLU, pooled
    assert torch.equal(logits, out[0])
    assert [tuple(f.shape[1:]) for f in feats] == [(64, 32, 32), (width // 8, 32, 32), (width // 4, 16, 16),
                                                   (width // 2, 8, 8), (width, 4, 4), (width,)]


def test_forward_forms_agree(r18):
    x = torch.randn(2, 3, 32, 32)
    r18.eval()
    with torch.no_grad():
        out = r18.byot_outputs(x)
        exits = r18.exit_logits(x)
        assert torch.equal(r18(x), out[0])
    assert torch.equal(exits[-1], out[0]) and all(torch.equal(a, b) for a, b in zip(exits[:3], out[1:4]))


def test_branch_heads_follow_the_spec(r18):
    # bottleneck 1x1 -> kxk stride k -> 1x1 with BN+ReLU after each conv, biases kept; mid = out / 4
    for k, (cin, stride) in enumerate([(64, 8), (128, 4), (256, 2)], start=1):
        seq = getattr(r18, f"bottleneck{k}_1")
        convs = [m for m in seq if isinstance(m, torch.nn.Conv2d)]
        assert [(c.in_channels, c.out_channels, c.kernel_size[0], c.stride[0]) for c in convs] == [
            (cin, 128, 1, 1), (128, 128, stride, stride), (128, 512, 1, 1)]
        assert all(c.bias is not None for c in convs)
        assert [type(m).__name__ for m in seq] == ["Conv2d", "BatchNorm2d", "ReLU"] * 3


def test_unused_downsample_modules_are_optional(r18):
    ref = multi_resnet18_kd(num_classes=10, unused_downsample=True)
    extra = set(ref.state_dict()) - set(r18.state_dict())
    assert extra and all(k.split(".")[0] in ("downsample1_1", "downsample2_1", "downsample3_1") for k in extra)
    assert set(r18.state_dict()) <= set(ref.state_dict())
    # the reference's registration order (parameters() order) is kept, minus the dead modules
    names = [n for n, _ in ref.named_parameters() if n.split(".")[0] not in ("downsample1_1", "downsample2_1",
                                                                               "downsample3_1")]
    assert names == [n for n, _ in r18.named_parameters()]
    # a reference-trained state dict (DataParallel prefix, dead modules) loads after dropping them
    sd = {"module." + k: v for k, v in ref.state_dict().items()}
    cleaned = {k[len("module."):]: v for k, v in drop_unused_downsample(sd).items()}
    r18_copy = multi_resnet18_kd(num_classes=10)
    r18_copy.load_state_dict(cleaned, strict=True)
    x = torch.randn(2, 3, 32, 32)
    ref.eval(), r18_copy.eval()
    with torch.no_grad():
        assert all(torch.allclose(a, b) for a, b in zip(ref.exit_logits(x), r18_copy.exit_logits(x)))


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


def _ctx(model, **opt):
    base = dict(kd_T=3.0)
    base.update(opt)
    return DistillContext(SimpleNamespace(**base), model, None)


def test_loss_matches_a_hand_computation(r18):
    torch.manual_seed(1)
    r18.train()
    x, y = torch.randn(6, 3, 32, 32), torch.randint(0, 10, (6,))
    distiller = BYOT(_ctx(r18))
    feats, logits = r18(x, is_feat=True)
    terms = distiller.loss(Outputs(logits, list(feats)), None, Batch(x, y, torch.arange(6)), 1)
    assert set(terms) == {"ce", "kl", "kd"}
    # the loop weights ce/kl/kd with -r/-a/-b = 0.9/0.1/1e-6
    g, a, b = BYOT.default_weights
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
    r = BYOT.recipe
    got = lr_at(ref_epoch + 1, r["learning_rate"], parse_epochs(r["lr_decay_epochs"]), r["lr_decay_rate"])
    assert got == pytest.approx(lr, rel=1e-9)


def test_reference_schedule_epoch_counts():
    # the committed reference log: 75 / 55 / 50 / 20 epochs at 0.1 / 0.01 / 0.001 / 0.0001
    r = BYOT.recipe
    lrs = [round(lr_at(e, 0.1, parse_epochs(r["lr_decay_epochs"]), 0.1), 8) for e in range(1, r["epochs"] + 1)]
    assert [lrs.count(v) for v in (0.1, 0.01, 0.001, 0.0001)] == [75, 55, 50, 20]


def test_recipe_fills_only_options_not_given():
    import argparse
    p = argparse.ArgumentParser()
    p.add_argument("--epochs", type=int, default=240)
    p.add_argument("--learning_rate", type=float, default=None)
    p.add_argument("--kd_T", type=float, default=4)
    p.add_argument("-b", "--batch_size", type=int, default=64)
    p.add_argument("--amp", nargs="?", const=True, default=False)
    argv = ["--epochs", "240", "-b", "32", "--amp"]
    opt = p.parse_args(argv)
    explicit = explicit_dests(p, argv)
    assert explicit == {"epochs", "batch_size", "amp"}
    applied = apply_recipe(opt, {"epochs": 200, "learning_rate": 0.1, "kd_T": 3.0, "batch_size": 128,
                                 "not_an_option": 1}, explicit)
    assert applied == {"learning_rate": 0.1, "kd_T": 3.0}
    assert (opt.epochs, opt.learning_rate, opt.kd_T, opt.batch_size) == (240, 0.1, 3.0, 32)


def test_byot_normalisation_constants():
    from dataset.core import DataBundle, TensorImageSet
    imgs = torch.full((2, 3, 4, 4), 255, dtype=torch.uint8)
    split = TensorImageSet(imgs, torch.zeros(2), (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761))
    data = DataBundle("cifar100", split, split.to("cpu"), 100)
    set_normalization(data, "byot")
    x = data.test.normalize(imgs)
    expect = [(1 - m) / s for m, s in zip((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))]
    assert torch.allclose(x[0, :, 0, 0], torch.tensor(expect))


def test_exit_evaluation_and_best_epoch(r18):
    from dataset.core import TensorImageSet
    torch.manual_seed(3)
    imgs = torch.randint(0, 256, (10, 3, 32, 32), dtype=torch.uint8)
    split = TensorImageSet(imgs, torch.randint(0, 10, (10,)), (0.5,) * 3, (0.25,) * 3)
    res = evaluate_exits(r18, split, SimpleNamespace(test_batch_size=4), torch.device("cpu"))
    with torch.no_grad():
        exits = r18.eval().exit_logits(split.normalize(imgs))
    for k, z in enumerate(exits, start=1):
        assert res[f"acc_c{k}"] == pytest.approx((z.argmax(1) == split.targets).float().mean().item() * 100)
    ens = torch.stack([F.softmax(z, 1) for z in exits]).mean(0).argmax(1)
    assert res["acc_ensemble"] == pytest.approx((ens == split.targets).float().mean().item() * 100)
    assert res["acc"] == res["acc_c4"]
    assert res["loss"] == pytest.approx(F.cross_entropy(exits[-1], split.targets).item(), rel=1e-5)
    rows = [{"epoch": 1, "test_acc": 5.0, "test_acc_c1": 1.0}, {"epoch": 2, "test_acc": 7.0, "test_acc_c1": 2.0},
            {"epoch": 3, "test_acc": 7.0, "test_acc_c1": 3.0}]
    assert best_epoch_row(rows)["epoch"] == 2  # first epoch of the best deepest-exit accuracy, as is_best
    assert "Classifier 1/1" in exits_table(rows[1])
    assert not math.isnan(res["acc_top5"])
