"""CheckpointKD: ensemble teachers, the loss convention, teacher BN mode, snapshot paths, selection maths."""
import math
import os
import sys
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from distiller_zoo.base import Batch, DistillContext, Outputs
from distiller_zoo.CheckpointKD import CheckpointKD
from distiller_zoo.KD import KD
from helper.checkpoint import save_checkpoint, snapshot_paths
from helper.ensemble import EnsembleTeacher, reference_train_bn_epochs, resolve_teacher_paths, teacher_tag
from helper.util import lr_at, parse_epochs
from models import build_model
from models.mobilenetv2_widths import MOBILENETV2_WIDTH_MODELS

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                                "scripts"))
import select_teacher  # noqa: E402



def _members(n=3, seed=0):
    torch.manual_seed(seed)
    return [build_model("resnet8", num_classes=10).eval() for _ in range(n)]


def test_ensemble_logits_are_the_mean_of_the_members():
    members = _members()
    x = torch.randn(4, 3, 32, 32)
    ens = EnsembleTeacher(members).eval()
    with torch.no_grad():
        zs = [m(x) for m in members]
        assert torch.allclose(ens(x), sum(zs) / 3, atol=1e-6)
        feats, logits = ens(x, is_feat=True)
        f0, _ = members[0](x, is_feat=True)
        assert torch.allclose(logits, sum(zs) / 3, atol=1e-6)
        assert all(torch.equal(a, b) for a, b in zip(feats, f0))  # the first teacher's features
        ens2 = EnsembleTeacher(members, weights=[1, 0, 3], feat_index=2).eval()
        feats2, logits2 = ens2(x, is_feat=True)
        assert torch.allclose(logits2, 0.25 * zs[0] + 0.75 * zs[2], atol=1e-6)
        assert torch.equal(feats2[-1], members[2](x, is_feat=True)[0][-1])
    with pytest.raises(ValueError, match="3 teacher checkpoints"):
        EnsembleTeacher(members, weights=[1, 1])
    with pytest.raises(ValueError, match="out of range"):
        EnsembleTeacher(members, feat_index=3)


def _loss(distiller_cls, s, t, y, gamma, alpha, beta, **opt):
    o = SimpleNamespace(kd_T=5.0, **opt)
    d = distiller_cls(DistillContext(o, nn.Identity(), nn.Identity()))
    terms = d.loss(Outputs(s), Outputs(t), Batch(None, y, None), 1)
    w = {"ce": gamma, "kl": alpha, "kd": beta}  # helper.loops.loss_weights
    return sum(w.get(k, 1.0) * v for k, v in terms.items())


def test_loss_convention_matches_the_reference():
    torch.manual_seed(0)
    s, t, y = torch.randn(8, 10) * 3, torch.randn(8, 10) * 3, torch.randint(0, 10, (8,))
    T, a = 5.0, 0.5
    # CheckpointKD student.py: alpha*CE + (1-alpha) * kl_div(log_softmax(s/T), softmax(t/T), batchmean) * T*T
    ref = a * F.cross_entropy(s, y) + (1 - a) * F.kl_div(F.log_softmax(s / T, 1), F.softmax(t / T, 1),
                                                         reduction="batchmean") * T * T
    assert torch.allclose(_loss(KD, s, t, y, 0.5, 0.5, 0.0), ref, rtol=1e-6)
    assert CheckpointKD.default_weights == (0.5, 0.5, 0.0) and CheckpointKD.recipe["kd_T"] == 5.0
    assert torch.allclose(_loss(CheckpointKD, s, t, y, *CheckpointKD.default_weights), ref, rtol=1e-6)
    # --teacher_scale: the student is not softened and the factor is T
    ref_scale = a * F.cross_entropy(s, y) + (1 - a) * F.kl_div(F.log_softmax(s, 1), F.softmax(t / T, 1),
                                                               reduction="batchmean") * T
    assert torch.allclose(_loss(KD, s, t, y, 0.5, 0.5, 0.0, teacher_scale=True), ref_scale, rtol=1e-6)


@pytest.mark.parametrize("ref_epoch,lr", [(0, 0.1), (59, 0.1), (60, 0.01), (119, 0.01), (120, 0.001), (179, 0.001),
                                          (180, 1e-4), (199, 1e-4)])
def test_recipe_schedule_is_the_reference_steplr(ref_epoch, lr):
    r = CheckpointKD.recipe
    assert lr_at(ref_epoch + 1, r["learning_rate"], parse_epochs(r["lr_decay_epochs"]), 0.1) == pytest.approx(lr)
    assert 0.1 * 0.1 ** (ref_epoch // 60) == pytest.approx(lr)  # StepLR(60, 0.1) in closed form


def _bn_stats(model):
    return torch.cat([m.running_mean.clone() for m in model.modules() if isinstance(m, nn.BatchNorm2d)])


@pytest.mark.parametrize("mode,epoch,epochs,changes", [("eval", 1, 200, False), ("train", 1, 200, True),
                                                       ("train", 191, 200, True), ("train", 192, 200, False),
                                                       ("train", 1, 5, True), ("train", 2, 5, False),
                                                       ("train_always", 200, 200, True)])
def test_teacher_bn_mode(mode, epoch, epochs, changes):
    members = _members(2)
    ens = EnsembleTeacher(members, bn_mode=mode)
    ens.eval()  # what the loop does at the start of every epoch ...
    ens.begin_epoch(epoch, epochs)  # ... followed by this
    before = [_bn_stats(m) for m in members]
    with torch.no_grad():
        ens(torch.randn(4, 3, 32, 32) + 2)
    after = [_bn_stats(m) for m in members]
    assert all((not torch.equal(a, b)) == changes for a, b in zip(before, after))
    ens.eval()  # evaluation always uses running statistics
    assert not any(m.training for m in ens.modules())


def test_reference_bn_switch_epoch():
    # reference: first validation (-> teacher.eval()) after 0-indexed epoch E-10 (E >= 12), else after epoch 0
    assert reference_train_bn_epochs(200) == 191 and reference_train_bn_epochs(12) == 3
    assert reference_train_bn_epochs(11) == 1 and reference_train_bn_epochs(1) == 1


def test_resolve_teacher_paths(tmp_path):
    run = tmp_path / "wrn_40_2_cifar100_lr_0.1_decay_0.0005_trial_0"
    run.mkdir()
    for e in (20, 40, 60):
        save_checkpoint({"epoch": e, "model": {}}, str(run / f"ckpt_epoch_{e}.pth"))
    assert [e for e, _ in snapshot_paths(str(run))] == [20, 40, 60]
    assert resolve_teacher_paths(str(run), "60,20") == [str(run / "ckpt_epoch_60.pth"), str(run / "ckpt_epoch_20.pth")]
    # a file inside the run folder works as well
    assert resolve_teacher_paths(str(run / "ckpt_epoch_40.pth"), "40") == [str(run / "ckpt_epoch_40.pth")]
    assert resolve_teacher_paths("a.pth,b.pth") == ["a.pth", "b.pth"]
    with pytest.raises(FileNotFoundError, match="epochs there: 20, 40, 60"):
        resolve_teacher_paths(str(run), "80")
    with pytest.raises(ValueError, match="single run folder"):
        resolve_teacher_paths("a.pth,b.pth", "20")
    with pytest.raises(ValueError, match="--path_t is required"):
        resolve_teacher_paths(None)
    opt = SimpleNamespace(teacher_epochs="60,120", teacher_bn="eval")
    assert teacher_tag(["wrn_40_2"] * 2, [60, 120], ["a", "b"], opt) == "wrn_40_2_ep60-120"
    opt = SimpleNamespace(teacher_epochs=None, teacher_bn="train")
    assert teacher_tag(["resnet110"] * 2, [200, 200], ["a", "b"], opt) == "resnet110x2_bntrain"
    assert teacher_tag(["resnet110"], [240], ["a"], SimpleNamespace(teacher_epochs=None, teacher_bn="eval")) is None


@pytest.mark.parametrize("name,stem,stages", [
    ("mobilenetv2_075", 24, [12, 18, 24, 48, 72, 120, 240]),
    ("mobilenetv2_05", 16, [8, 12, 16, 32, 48, 80, 160]),
    ("mobilenetv2_035", 11, [5, 8, 11, 22, 33, 56, 112]),
    ("mobilenetv2", 32, [16, 24, 32, 64, 96, 160, 320])])
def test_mobilenetv2_widths(name, stem, stages):
    model = MOBILENETV2_WIDTH_MODELS[name](num_classes=100)
    assert model.conv1[0].out_channels == stem
    assert [s[-1].conv[-1].num_features for s in model.blocks] == stages
    assert model.last_channel == 1280 and model.classifier[0].out_features == 100
    feats, logits = model(torch.randn(1, 3, 32, 32), is_feat=True)
    assert tuple(feats[-1].shape) == (1, 1280) and tuple(feats[-2].shape[2:]) == (2, 2)


def test_mobilenetv2_05_is_repdistillers_mobilenetv2():
    a, b = MOBILENETV2_WIDTH_MODELS["mobilenetv2_05"](), build_model("MobileNetV2", num_classes=100)
    assert {k: v.shape for k, v in a.state_dict().items()} == {k: v.shape for k, v in b.state_dict().items()}


def test_mutual_information_estimator():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(2000) % 2
    x = torch.randn(2000, 1, generator=g) + (2 * y - 1)[:, None].float()
    # two unit Gaussians at -1 and +1: I(X;Y) = 0.3368 nats (numerical integration)
    assert select_teacher.knn_mutual_information(x, y, k=3) == pytest.approx(0.3368, abs=0.03)
    assert select_teacher.knn_mutual_information(torch.randn(2000, 4, generator=g), y, k=3) < 0.02
    y10 = torch.arange(500) % 10
    sep = torch.randn(500, 4, generator=g) * 0.01 + y10[:, None].float()
    assert select_teacher.knn_mutual_information(sep, y10) == pytest.approx(math.log(10), abs=0.05)


def test_ranking_rule():
    rows = [dict(epoch=e, acc=a, nll=1.0, ece=0.1, entropy=h, mi_nats=m * math.log(10), mi=m)
            for e, a, h, m in [(20, 30.0, 0.9, 0.3), (100, 80.0, 0.6, 0.8), (200, 99.0, 0.2, 0.95),
                               (40, 50.0, 0.99, 0.9)]]
    ordered = select_teacher.rank([dict(r) for r in rows])
    # epoch 40 has the best mi*entropy but < 0.8 x the best accuracy: ranked after the eligible ones
    assert [r["epoch"] for r in ordered] == [100, 200, 40, 20]
    assert ordered[0]["score"] == pytest.approx(0.48)
    assert [r["epoch"] for r in select_teacher.rank([dict(r) for r in rows], "acc")][:2] == [200, 100]
    assert "(low acc)" in select_teacher.table(ordered)


def test_ickd_taps_the_feature_member_of_an_ensemble_teacher():
    from distiller_zoo.ICKD import ickd_tap
    torch.manual_seed(0)
    members = [build_model("wrn_16_1", num_classes=10).eval() for _ in range(2)]
    ens = EnsembleTeacher(members, feat_index=1).eval()
    tap = ickd_tap(ens)
    x = torch.randn(2, 3, 32, 32)
    assert tap is not None
    with torch.no_grad():
        ens(x, is_feat=True)
        got = tap.value
        tap.remove()  # the hook must not see the reference computation below
        m = members[1]
        expect = F.relu(m.bn1(m(x, is_feat=True)[0][-2]))
    assert got is not None and torch.allclose(got, expect)
