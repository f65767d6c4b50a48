"""ICKD-C, KDrefine and EMKD milestone checking: losses against formulas written out independently."""
import math
import types

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import train_student
from distiller_zoo import REGISTRY, Batch, DistillContext, MilestoneChecking, Outputs
from distiller_zoo.ICKD import ICKD, ickd_loss
from distiller_zoo.KDrefine import normalize_logits
from distiller_zoo.milestone import num_stages, stage_weights
from helper.loops import forward, loss_weights
from models import build_model



def _opt(**kw):
    base = dict(kd_T=4.0, logit_multiplier=2.0, logit_eps=1e-7, mc_weight=0.001, B1_weight=1.0, B2_weight=1.0,
                B3_weight=1.0, B4_weight=1.0, hint_layer=2, feat_dim=16)
    base.update(kw)
    return types.SimpleNamespace(**base)


def _ctx(opt, student, teacher, preact=False):
    probe = torch.randn(2, 3, 32, 32)
    student.eval()
    teacher.eval()
    with torch.no_grad():
        fs, _ = student(probe, is_feat=True, preact=preact)
        ft, _ = teacher(probe, is_feat=True, preact=preact)
    return DistillContext(opt, student, teacher, list(fs), list(ft), num_classes=100)


# ------------------------------------------------------------------------------------------- KDrefine

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
    opt = _opt(logit_multiplier=2.0, logit_eps=1e-7)
    d = REGISTRY["kdrefine"](DistillContext(opt, nn.Identity(), nn.Identity()))
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
    assert REGISTRY["kdrefine"].default_weights == (0.1, 0.9, 0.0)


def test_kdrefine_options_and_learning_rate_default():
    opt = train_student.parse_options(["--distill", "kdrefine", "--model_s", "represnet20", "-t", "ACTDB"])
    assert opt.learning_rate == 0.01 and opt.blocktype == "AMBB"
    assert opt.logit_multiplier == 2.0 and opt.logit_eps == 1e-7
    assert train_student.parse_options(["--distill", "kdrefine", "--learning_rate", "0.05"]).learning_rate == 0.05
    assert train_student.parse_options(["--distill", "kd", "--model_s", "resnet8"]).learning_rate == 0.05
    opt = train_student.parse_options(["--distill", "kdrefine", "--logit_multiplier", "4", "--logit_eps", "0.1"])
    d = REGISTRY["kdrefine"](DistillContext(opt, nn.Identity(), nn.Identity()))
    z = torch.tensor([[0.0, 1.0, 2.0]])
    assert d.normalize(z).flatten().tolist() == pytest.approx([-4 / 1.1, 0.0, 4 / 1.1], rel=1e-6)
    with pytest.raises(ValueError, match="block_type|AMBB"):
        train_student.parse_options(["--distill", "kdrefine", "--blocktype", "DBB"])


# ------------------------------------------------------------------------------------------- ICKD

def _ickd_reference(f_s, f_t):
    """Written out with loops: Gram rows, L2 row normalisation (eps 1e-12), squared difference / (C*B)."""
    s, t = f_s.detach().double().numpy(), f_t.detach().double().numpy()
    b, c = t.shape[:2]
    total = 0.0
    for n in range(b):
        a_s, a_t = s[n].reshape(c, -1), t[n].reshape(c, -1)
        for i in range(c):
            row_s = np.array([np.dot(a_s[i], a_s[j]) for j in range(c)])
            row_t = np.array([np.dot(a_t[i], a_t[j]) for j in range(c)])
            row_s /= max(np.sqrt((row_s ** 2).sum()), 1e-12)
            row_t /= max(np.sqrt((row_t ** 2).sum()), 1e-12)
            total += ((row_s - row_t) ** 2).sum()
    return total / (c * b)


def test_ickd_loss_matches_formula_and_bounds():
    torch.manual_seed(0)
    f_s, f_t = torch.randn(2, 3, 2, 2), torch.randn(2, 3, 2, 2)
    assert ickd_loss(f_s, f_t).item() == pytest.approx(_ickd_reference(f_s, f_t), rel=1e-5)
    # spatial sizes may differ: only the C x C Gram matrices are compared
    f_t2 = torch.randn(2, 3, 4, 4)
    assert ickd_loss(f_s, f_t2).item() == pytest.approx(_ickd_reference(f_s, f_t2), rel=1e-5)
    assert ickd_loss(f_t, f_t).item() == pytest.approx(0.0, abs=1e-7)
    assert ickd_loss(f_t * 7.0, f_t).item() == pytest.approx(0.0, abs=1e-6)  # row normalisation: scale-free
    worst = 0.0
    for seed in range(20):
        g = torch.Generator().manual_seed(seed)
        a = torch.randn(4, 6, 3, 3, generator=g)
        b = torch.randn(4, 6, 3, 3, generator=g) * torch.sign(torch.randn(4, 6, 1, 1, generator=g))
        worst = max(worst, ickd_loss(a, b).item())
    # channels with disjoint supports against all-equal channels: far from the identity structure
    a = torch.zeros(1, 4, 4, 1)
    for i in range(4):
        a[0, i, i] = 1.0
    b = torch.ones(1, 4, 4, 1)
    b[0, 1::2] *= -1
    worst = max(worst, ickd_loss(a, b).item())
    assert 0.0 < worst <= 4.0 + 1e-6
    with pytest.raises(ValueError, match="channels"):
        ickd_loss(torch.randn(2, 3, 2, 2), torch.randn(2, 4, 2, 2))


def test_ickd_distiller_embedding_zero_loss_and_trainable():
    torch.manual_seed(0)
    student, teacher = build_model("resnet8"), build_model("resnet14")
    d = ICKD(_ctx(_opt(), student, teacher))
    emb = d.embed_s
    assert isinstance(emb.conv2d, nn.Conv2d) and emb.conv2d.kernel_size == (1, 1) and emb.conv2d.bias is None
    assert isinstance(emb.l2norm, nn.BatchNorm2d) and emb.l2norm.num_features == 64
    assert d.trainable_modules() == [emb]
    assert ICKD.default_weights == (1.0, 0.0, 2.5)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        out_s, out_t = forward(student, x, True), forward(teacher, x, True)
    # an embedding that reproduces the teacher map exactly gives zero loss
    with torch.no_grad():
        emb.conv2d.weight.copy_(torch.eye(64).view(64, 64, 1, 1))
    emb.eval()
    same = Outputs(out_t.logits, [f.clone() for f in out_t.feats])
    assert d.method_loss(same, out_t, None, 1).item() == pytest.approx(0.0, abs=1e-6)
    emb.train()
    loss = d.method_loss(out_s, out_t, None, 1)
    assert 0.0 < loss.item() <= 4.0
    loss.backward()
    assert emb.conv2d.weight.grad is not None and emb.conv2d.weight.grad.abs().sum() > 0


def test_ickd_uses_post_bn_relu_map_for_wrn_without_changing_feature_lists():
    torch.manual_seed(0)
    student, teacher = build_model("wrn_16_2"), build_model("wrn_16_1")
    x = torch.randn(2, 3, 32, 32)
    student.eval()
    teacher.eval()
    with torch.no_grad():
        before, _ = student(x, is_feat=True)
    d = ICKD(_ctx(_opt(), student, teacher))
    assert d.embed_s.conv2d.in_channels == 128 and d.embed_s.conv2d.out_channels == 64
    with torch.no_grad():
        out_s, out_t = forward(student, x, True), forward(teacher, x, True)
        m_s, m_t = d.ickd_maps(out_s, out_t)
        expected_s = F.relu(student.bn1(out_s.feats[3]))
        expected_t = F.relu(teacher.bn1(out_t.feats[3]))
    assert m_s.shape == (2, 128, 8, 8) and m_t.shape == (2, 64, 8, 8)
    assert torch.allclose(m_s, expected_s, atol=1e-6) and torch.allclose(m_t, expected_t, atol=1e-6)
    # every other method still sees RepDistiller's WRN features: feat[-2] is the raw block3 output
    assert len(out_s.feats) == len(before) == 5
    for a, b in zip(out_s.feats, before):
        assert torch.equal(a, b)
    assert (out_s.feats[-2] < 0).any() and not torch.equal(out_s.feats[-2], m_s)
    # the loss is computed on the tapped maps
    with torch.no_grad():
        expected = ickd_loss(d.embed_s(m_s), m_t)
        assert d.method_loss(out_s, out_t, None, 1).item() == pytest.approx(expected.item(), rel=1e-6)
    # for a CIFAR ResNet the map is feat[-2] itself
    r = ICKD(_ctx(_opt(), build_model("resnet8"), build_model("resnet8x4")))
    assert r._tap_s is None and r._tap_t is None


# ------------------------------------------------------------------------------------------- EMKD MC

def test_mc_stage_weights():
    assert stage_weights(build_model("myresnet20", block_depth=[3, 7, 2]), [1] * 4) == pytest.approx([1, 3 / 7, 1.5])
    assert stage_weights(build_model("myresnet110"), [1] * 4) == [1.0, 1.0, 1.0]
    assert stage_weights(build_model("mywrn_16_2", block_depth=[1, 2, 4]), [1] * 4) == [2.0, 1.0, 0.5]
    assert stage_weights(build_model("resnet20"), [0.5, 2, 3, 4]) == [0.5, 2.0, 3.0]
    assert num_stages(build_model("resnet20")) == 3 and num_stages(build_model("ResNet50")) == 4


def _mc_reference(fs, ft, T):
    """(T^2 / B) * sum over b, h, w of KL(softmax_c(t / T) || softmax_c(s / T)), with explicit loops."""
    s, t = fs.detach().double().numpy(), ft.detach().double().numpy()
    b, c, h, w = s.shape
    total = 0.0
    for n in range(b):
        for i in range(h):
            for j in range(w):
                ls, lt = s[n, :, i, j] / T, t[n, :, i, j] / T
                ls = ls - ls.max() - np.log(np.exp(ls - ls.max()).sum())
                lt = lt - lt.max() - np.log(np.exp(lt - lt.max()).sum())
                total += (np.exp(lt) * (lt - ls)).sum()
    return total * T * T / b


def test_mc_value_matches_formula_and_is_added_to_kd():
    torch.manual_seed(0)
    student = build_model("myresnet20", block_depth=[3, 7, 2])
    teacher = build_model("resnet14")
    opt = _opt(mc_weight=0.01, kd_T=4.0, gamma=1.0, alpha=0.0, beta=0.8)
    ctx = _ctx(opt, student, teacher)
    inner = REGISTRY["kd"](ctx)
    d = MilestoneChecking(inner, ctx)
    assert d.stage_weights == pytest.approx([1, 3 / 7, 1.5]) and d.needs_feats
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([0, 1])
    with torch.no_grad():
        out_s, out_t = forward(student, x, True), forward(teacher, x, True)
    batch = Batch(x, y, torch.arange(2))
    terms = d.loss(out_s, out_t, batch, 1)
    plain = inner.loss(out_s, out_t, batch, 1)
    expected = 0.01 * sum(w * _mc_reference(out_s.feats[i], out_t.feats[i], 4.0)
                          for i, w in zip((1, 2, 3), (1.0, 3 / 7, 1.5)))
    assert expected > 0
    assert (terms["kd"] - plain["kd"]).item() == pytest.approx(expected, rel=1e-4)
    assert terms["ce"].item() == pytest.approx(plain["ce"].item()) and terms["kl"].item() == pytest.approx(
        plain["kl"].item())
    # the loop scales the kd term, MC included, with -b (EMKD folds MC into loss_kd)
    assert loss_weights(opt)["kd"] == 0.8


def test_mc_keeps_inner_modules_and_stops_on_shape_mismatch():
    torch.manual_seed(0)
    student, teacher = build_model("myresnet20"), build_model("resnet8")
    ctx = _ctx(_opt(), student, teacher)
    inner = REGISTRY["hint"](ctx)
    d = MilestoneChecking(inner, ctx)
    assert d.trainable_modules() == inner.trainable_modules() and len(d.trainable_modules()) > 0
    assert all(k.startswith("inner.") for k in d.state_dict())
    assert d.default_weights == inner.default_weights
    pctx = _ctx(_opt(), student, teacher, preact=True)
    assert MilestoneChecking(REGISTRY["abound"](pctx), pctx).needs_preact
    bad = _ctx(_opt(), build_model("myresnet20"), build_model("resnet8x4"))
    with pytest.raises(ValueError, match="identical shape.*stage 1"):
        MilestoneChecking(REGISTRY["kd"](bad), bad)
    with pytest.raises(ValueError, match="identical shape"):
        wctx = _ctx(_opt(), build_model("wrn_16_1"), build_model("wrn_16_2"))
        MilestoneChecking(REGISTRY["kd"](wctx), wctx)


def test_mc_wraps_every_registered_method():
    from dataset import TensorImageSet
    torch.manual_seed(0)
    # self-distillation methods (needs_teacher False) have no teacher stages to check against
    names = [n for n in sorted(REGISTRY) if n != "ce" and getattr(REGISTRY[n], "needs_teacher", True)]
    assert {"kd", "crd", "hint", "abound", "fsp", "ickd", "kdrefine"} <= set(names)
    student, teacher = build_model("myresnet8", block_depth=[1, 2, 1]), build_model("resnet8")
    imgs = torch.randint(0, 256, (24, 3, 32, 32), dtype=torch.uint8)
    split = TensorImageSet(imgs, torch.arange(24) % 12, (0.5,) * 3, (0.25,) * 3)
    batch = next(split.train_batches(6, 0, 1, augment=False))
    for name in names:
        cls = REGISTRY[name]
        opt = train_student.parse_options(["--distill", name, "--model_s", "myresnet8", "--nce_k", "8",
                                           "--feat_dim", "16", "--mc", "1", "--mc_weight", "0.5"])
        train_student.resolve_loss_weights(opt, cls.default_weights)
        ctx = _ctx(opt, student, teacher, preact=cls.needs_preact)
        ctx.train_targets = split.targets
        inner = cls(ctx)
        d = MilestoneChecking(inner, ctx)
        assert d.stage_weights == [1.0, 0.5, 1.0], name
        student.train()
        out_s = forward(student, batch.x, True, d.needs_preact)
        with torch.no_grad():
            out_t = forward(teacher, batch.x, True, d.needs_preact)
        terms = d.loss(out_s, out_t, batch, 1)
        mc = 0.5 * d.mc_loss(out_s, out_t)
        assert mc.item() > 0 and torch.isfinite(terms["kd"]), name
        total = sum(loss_weights(opt)[k] * v for k, v in terms.items())
        total.backward()
        assert all(p.grad is not None for p in student.parameters() if p.requires_grad), name
        student.zero_grad(set_to_none=True)


def test_mc_needs_a_teacher():
    student = build_model("myresnet8")
    ctx = DistillContext(_opt(), student, None, None, None, num_classes=100)
    with pytest.raises(ValueError, match="without a teacher"):
        MilestoneChecking(REGISTRY["kd"](ctx), ctx)
