"""AB, FT, FSP (two-stage methods) and the CRD distiller: loss values, gradients, init stages, build errors."""
import itertools
import math
import types

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import distiller_zoo
from distiller_zoo import ABLoss, FactorTransfer, FSP, build_distiller
from distiller_zoo.base import Batch, DistillContext, Outputs
from models.connectors import Connector, Paraphraser, Translator


class TinyNet(nn.Module):
    """Three conv stages (8x8 -> 4x4 -> 2x2 on 8x8 inputs) + pooled vector, RepDistiller's feature contract."""

    def __init__(self, widths=(4, 8, 16), num_classes=5):
        super().__init__()
        w0, w1, w2 = widths
        self.conv1 = nn.Conv2d(3, w0, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(w0)
        self.layer1 = nn.Conv2d(w0, w1, 3, stride=2, padding=1)
        self.layer2 = nn.Conv2d(w1, w2, 3, stride=2, padding=1)
        self.fc = nn.Linear(w2, num_classes)

    def get_feat_modules(self):
        return nn.ModuleList([self.conv1, self.bn1, self.layer1, self.layer2])

    def forward(self, x, is_feat=False, preact=False):
        p0 = self.bn1(self.conv1(x))
        f0 = F.relu(p0)
        p1 = self.layer1(f0)
        f1 = F.relu(p1)
        p2 = self.layer2(f1)
        f2 = F.relu(p2)
        pooled = f2.mean(dim=(2, 3))
        logits = self.fc(pooled)
        if not is_feat:
            return logits
        return ([p0, p1, p2, pooled] if preact else [f0, f1, f2, pooled]), logits


def make_ctx(student, teacher, n_data=40, num_classes=5, **opt_kw):
    opt = types.SimpleNamespace(kd_T=4, learning_rate=0.05, model_s="tiny", **opt_kw)
    x = torch.randn(2, 3, 8, 8)
    student.eval()
    teacher.eval()
    with torch.no_grad():
        feat_s, _ = student(x, is_feat=True)
        feat_t, _ = teacher(x, is_feat=True)
    targets = torch.arange(n_data) % num_classes
    return DistillContext(opt=opt, student=student, teacher=teacher, feat_s=feat_s, feat_t=feat_t,
                          train_targets=targets, num_classes=num_classes)


def forward_pair(student, teacher, x, preact):
    feat_s, logit_s = student(x, is_feat=True, preact=preact)
    with torch.no_grad():
        feat_t, logit_t = teacher(x, is_feat=True, preact=preact)
    return Outputs(logit_s, feat_s), Outputs(logit_t, [f.detach() for f in feat_t])


def snapshot(*modules):
    return {(i, n): p.detach().clone() for i, m in enumerate(modules) for n, p in m.named_parameters()}


def changed(before, *modules):
    out = set()
    for i, m in enumerate(modules):
        for n, p in m.named_parameters():
            if not torch.equal(before[(i, n)], p.detach()):
                out.add((i, n))
    return out


def run_init_stage(d, student, teacher, steps=3):
    params = list(itertools.chain.from_iterable(m.parameters() for m in d.init_modules(student)))
    opt = torch.optim.SGD(params, lr=0.05, momentum=0.9)
    torch.manual_seed(1)
    x = torch.randn(6, 3, 8, 8)
    for _ in range(steps):
        out_s, out_t = forward_pair(student, teacher, x, d.needs_preact)
        loss = d.init_loss(out_s, out_t, Batch(x, torch.zeros(6, dtype=torch.long), torch.arange(6)))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return loss


def decreases(loss_fn, params, steps=40, lr=0.05):
    opt = torch.optim.Adam(params, lr=lr)
    values = []
    for _ in range(steps):
        loss = loss_fn()
        values.append(float(loss.detach()))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert all(math.isfinite(v) for v in values)
    assert values[-1] < values[0], values
    return values


def test_registered_and_exported():
    for name in ("abound", "factor", "fsp", "crd"):
        assert name in distiller_zoo.available()
    assert distiller_zoo.REGISTRY["abound"].default_weights == (1.0, 0.0, 1.0)
    assert distiller_zoo.REGISTRY["factor"].default_weights == (1.0, 0.0, 200.0)
    assert distiller_zoo.REGISTRY["fsp"].default_weights == (1.0, 0.0, 50.0)
    assert distiller_zoo.REGISTRY["crd"].default_weights == (1.0, 0.0, 0.8)


# --------------------------------------------------------------------------------------------- AB
def ab_reference(g_s, g_t, margin=1.0):
    n, bsz, total = len(g_s), g_s[0].shape[0], 0.0
    for i, (s, t) in enumerate(zip(g_s, g_t)):
        term = 0.0
        for a, b in zip(s.flatten().tolist(), t.flatten().tolist()):
            if b > 0 and a <= margin:
                term += (a - margin) ** 2
            elif b <= 0 and a > -margin:
                term += (a + margin) ** 2
        total += 2.0 ** (i - n + 1) * term / bsz * 3 / 1000
    return total


def test_ab_loss_matches_formula():
    torch.manual_seed(0)
    g_s = [torch.randn(3, 2, 4, 4) * 2, torch.randn(3, 4, 2, 2) * 2]
    g_t = [torch.randn(3, 2, 4, 4), torch.randn(3, 4, 2, 2)]
    terms = ABLoss(2)(g_s, g_t)
    assert len(terms) == 2
    assert float(sum(terms)) == pytest.approx(ab_reference(g_s, g_t), rel=1e-5)
    assert float(sum(ABLoss(2, margin=0.5)(g_s, g_t))) == pytest.approx(ab_reference(g_s, g_t, 0.5), rel=1e-5)


def test_ab_init_stage_trains_connector_and_student_features_only():
    student, teacher = TinyNet((4, 8, 16)), TinyNet((6, 12, 24))
    d = build_distiller("abound", make_ctx(student, teacher))
    assert d.needs_preact and d.needs_feats
    mods = d.init_modules(student)
    assert mods[0] is d.connector
    assert list(mods[1]) == list(student.get_feat_modules())
    assert d.trainable_modules() == []
    before = snapshot(student, teacher, d)
    loss = run_init_stage(d, student, teacher)
    assert torch.isfinite(loss)
    ch = changed(before, student, teacher, d)
    expected = {(0, n) for n, _ in student.named_parameters() if not n.startswith("fc.")}
    expected |= {(2, n) for n, _ in d.named_parameters()}
    assert ch == expected
    assert all(p.grad is None for p in teacher.parameters())


def test_ab_connector_identity_when_shapes_agree_and_main_loss_zero():
    student, teacher = TinyNet(), TinyNet()
    d = build_distiller("abound", make_ctx(student, teacher))
    assert all(isinstance(c, nn.Identity) for c in d.connector.connectors)
    x = torch.randn(2, 3, 8, 8)
    out_s, out_t = forward_pair(student, teacher, x, True)
    terms = d.loss(out_s, out_t, Batch(x, torch.zeros(2, dtype=torch.long), torch.arange(2)), 1)
    assert float(terms["kd"]) == 0.0


def test_ab_init_loss_gradients_and_decrease():
    student, teacher = TinyNet((4, 8, 16)), TinyNet((6, 12, 24))
    d = build_distiller("abound", make_ctx(student, teacher))
    torch.manual_seed(0)
    g_s = [torch.randn(4, 8, 4, 4, requires_grad=True), torch.randn(4, 16, 2, 2, requires_grad=True)]
    g_t = [torch.randn(4, 12, 4, 4, requires_grad=True), torch.randn(4, 24, 2, 2, requires_grad=True)]
    dummy = torch.zeros(4, 5)

    def loss_fn():
        feats_s = [g_s[0], g_s[0], g_s[1], dummy]  # only feat[1:-1] is read
        feats_t = [g_t[0], g_t[0], g_t[1], dummy]
        return d.init_loss(Outputs(dummy, feats_s), Outputs(dummy, feats_t), None)

    loss_fn().backward()
    assert all(g.grad is not None for g in g_s)
    assert all(g.grad is None for g in g_t)
    assert all(p.grad is not None for p in d.connector.parameters())
    decreases(loss_fn, g_s + list(d.connector.parameters()))


# --------------------------------------------------------------------------------------------- FT
def factor_reference(f, p1=2):
    q = (f ** p1).mean(dim=1).reshape(f.shape[0], -1)
    return q / q.norm(dim=1, keepdim=True)


def test_factor_transfer_matches_formula():
    torch.manual_seed(0)
    f_s, f_t = torch.randn(3, 5, 4, 4), torch.randn(3, 6, 4, 4)
    ref = (factor_reference(f_s) - factor_reference(f_t)).abs().mean()
    assert float(FactorTransfer()(f_s, f_t)) == pytest.approx(float(ref), rel=1e-5)
    ref2 = ((factor_reference(f_s) - factor_reference(f_t)) ** 2).mean()
    assert float(FactorTransfer(p2=2)(f_s, f_t)) == pytest.approx(float(ref2), rel=1e-5)
    # larger student map: 2x2 block averages down to the teacher's 2x2 grid
    big = torch.randn(3, 5, 4, 4)
    small_t = torch.randn(3, 6, 2, 2)
    pooled = big.reshape(3, 5, 2, 2, 2, 2).mean(dim=(3, 5))
    ref3 = (factor_reference(pooled) - factor_reference(small_t)).abs().mean()
    assert float(FactorTransfer()(big, small_t)) == pytest.approx(float(ref3), rel=1e-5)


def test_ft_modules_shapes_and_state_dict_keys():
    para = Paraphraser((2, 16, 4, 4))
    assert para(torch.randn(2, 16, 4, 4), is_factor=True).shape == (2, 8, 4, 4)
    factor, rec = para(torch.randn(2, 16, 4, 4))
    assert factor.shape == (2, 8, 4, 4) and rec.shape == (2, 16, 4, 4)
    assert set(para.state_dict()) == {f"{p}.{i}.{w}" for p in ("encoder", "decoder") for i in (0, 3, 6)
                                      for w in ("weight", "bias")}
    trans = Translator((2, 4, 4, 4), (2, 16, 4, 4))
    assert trans(torch.randn(2, 4, 4, 4)).shape == (2, 8, 4, 4)
    assert "encoder.1.running_mean" in trans.state_dict() and "encoder.7.weight" in trans.state_dict()
    bn_para = Paraphraser((2, 16, 4, 4), use_bn=True)
    assert "decoder.4.running_var" in bn_para.state_dict()


def test_ft_init_stage_trains_paraphraser_only():
    student, teacher = TinyNet(), TinyNet((4, 8, 12))
    d = build_distiller("factor", make_ctx(student, teacher))
    assert d.init_modules(student) == [d.paraphraser]
    assert d.trainable_modules() == [d.translator]
    before = snapshot(student, teacher, d.paraphraser, d.translator)
    run_init_stage(d, student, teacher)
    ch = changed(before, student, teacher, d.paraphraser, d.translator)
    assert ch == {(2, n) for n, _ in d.paraphraser.named_parameters()}


def test_ft_init_loss_is_reconstruction_mse_and_decreases():
    student, teacher = TinyNet(), TinyNet((4, 8, 12))
    d = build_distiller("factor", make_ctx(student, teacher))
    torch.manual_seed(0)
    f_t = torch.randn(4, 12, 2, 2).relu()
    dummy = torch.zeros(4, 5)
    out_t = Outputs(dummy, [None, None, f_t, dummy])
    with torch.no_grad():
        _, rec = d.paraphraser(f_t)
        assert float(d.init_loss(None, out_t, None)) == pytest.approx(float(((rec - f_t) ** 2).mean()), rel=1e-5)
    decreases(lambda: d.init_loss(None, out_t, None), list(d.paraphraser.parameters()), lr=0.01)


def test_ft_init_lr_rule():
    d = build_distiller("factor", make_ctx(TinyNet(), TinyNet()))
    for name, lr in (("resnet8x4", 0.01), ("wrn_16_2", 0.01), ("vgg8", 0.05), ("ShuffleV1", 0.05),
                     ("ResNet50", 0.05)):
        assert d.init_lr(types.SimpleNamespace(model_s=name, learning_rate=0.05)) == lr


def test_ft_main_stage_loss_gradients_and_decrease():
    student, teacher = TinyNet(), TinyNet((4, 8, 12))
    d = build_distiller("factor", make_ctx(student, teacher))
    torch.manual_seed(0)
    f_s = torch.randn(4, 16, 2, 2, requires_grad=True)
    f_t = torch.randn(4, 12, 2, 2, requires_grad=True)
    dummy = torch.zeros(4, 5)

    def loss_fn():
        return d.method_loss(Outputs(dummy, [None, None, f_s, dummy]), Outputs(dummy, [None, None, f_t, dummy]),
                             None, 1)

    d.train()
    loss = loss_fn()
    assert not d.paraphraser.training  # frozen in the main stage, as RepDistiller
    with torch.no_grad():
        ref = FactorTransfer()(d.translator(f_s), d.paraphraser(f_t, is_factor=True))
    assert float(loss.detach()) == pytest.approx(float(ref), rel=1e-5)
    loss.backward()
    assert f_s.grad is not None and f_t.grad is None
    assert all(p.grad is not None for p in d.translator.parameters())
    assert all(p.grad is None for p in d.paraphraser.parameters())
    decreases(loss_fn, [f_s] + list(d.translator.parameters()), lr=0.01)


# --------------------------------------------------------------------------------------------- FSP
def fsp_reference(feats):
    mats = []
    for bot, top in zip(feats[:-1], feats[1:]):
        h = min(bot.shape[2], top.shape[2])
        if bot.shape[2] > h:
            r = bot.shape[2] // h
            bot = bot.reshape(bot.shape[0], bot.shape[1], h, r, h, r).mean(dim=(3, 5))
        if top.shape[2] > h:
            r = top.shape[2] // h
            top = top.reshape(top.shape[0], top.shape[1], h, r, h, r).mean(dim=(3, 5))
        B, Ci, Cj = bot.shape[0], bot.shape[1], top.shape[1]
        g = torch.zeros(B, Ci, Cj)
        for b in range(B):
            for i in range(Ci):
                for j in range(Cj):
                    g[b, i, j] = (bot[b, i] * top[b, j]).sum() / (h * h)
        mats.append(g)
    return mats


def test_fsp_matches_formula():
    torch.manual_seed(0)
    shapes = [(2, 3, 4, 4), (2, 4, 4, 4), (2, 5, 2, 2)]
    g_s = [torch.randn(*s) for s in shapes]
    g_t = [torch.randn(*s) for s in shapes]
    losses = FSP(shapes, shapes)(g_s, g_t)
    ref = [((a - b) ** 2).mean() for a, b in zip(fsp_reference(g_s), fsp_reference(g_t))]
    assert len(losses) == 2
    for got, want in zip(losses, ref):
        assert float(got) == pytest.approx(float(want), rel=1e-5)


def test_fsp_resolution_difference_between_student_and_teacher_is_fine():
    s_shapes = [(2, 3, 8, 8), (2, 4, 4, 4)]
    t_shapes = [(2, 3, 4, 4), (2, 4, 4, 4)]
    losses = FSP(s_shapes, t_shapes)([torch.randn(*s) for s in s_shapes], [torch.randn(*t) for t in t_shapes])
    assert losses[0].shape == () and torch.isfinite(losses[0])


def test_fsp_build_errors():
    with pytest.raises(ValueError, match=r"num of channels not equal \(error in FSP\)"):
        build_distiller("fsp", make_ctx(TinyNet((4, 8, 16)), TinyNet((4, 8, 32))))
    with pytest.raises(ValueError, match="another method"):
        FSP([(2, 4, 8, 8), (2, 4, 4, 4)], [(2, 4, 8, 8), (2, 4, 4, 4), (2, 4, 2, 2)])
    with pytest.raises(ValueError, match="taller and the other wider"):
        FSP([(2, 4, 8, 4), (2, 4, 4, 8)], [(2, 4, 8, 4), (2, 4, 4, 8)])
    with pytest.raises(ValueError, match="4-D"):
        FSP([(2, 4, 8, 8), (2, 4)], [(2, 4, 8, 8), (2, 4)])


def test_fsp_init_stage_trains_student_features_only():
    student, teacher = TinyNet(), TinyNet()
    d = build_distiller("fsp", make_ctx(student, teacher))
    mods = d.init_modules(student)
    assert len(mods) == 1 and list(mods[0]) == list(student.get_feat_modules())
    assert d.trainable_modules() == []
    before = snapshot(student, teacher)
    run_init_stage(d, student, teacher)
    ch = changed(before, student, teacher)
    assert ch == {(0, n) for n, _ in student.named_parameters() if not n.startswith("fc.")}
    x = torch.randn(2, 3, 8, 8)
    out_s, out_t = forward_pair(student, teacher, x, False)
    assert float(d.loss(out_s, out_t, Batch(x, torch.zeros(2, dtype=torch.long), torch.arange(2)), 1)["kd"]) == 0


def test_fsp_init_loss_gradients_and_decrease():
    d = build_distiller("fsp", make_ctx(TinyNet(), TinyNet()))
    torch.manual_seed(0)
    shapes = [(4, 4, 8, 8), (4, 8, 4, 4), (4, 16, 2, 2)]
    g_s = [torch.randn(*s, requires_grad=True) for s in shapes]
    g_t = [torch.randn(*s, requires_grad=True) for s in shapes]
    dummy = torch.zeros(4, 5)

    def loss_fn():
        return d.init_loss(Outputs(dummy, g_s + [dummy]), Outputs(dummy, g_t + [dummy]), None)

    loss_fn().backward()
    assert all(g.grad is not None for g in g_s) and all(g.grad is None for g in g_t)
    decreases(loss_fn, g_s, lr=0.02)


def test_connector_convreg_when_shapes_differ():
    conn = Connector([(2, 4, 4, 4), (2, 8, 2, 2)], [(2, 6, 4, 4), (2, 8, 2, 2)])
    out = conn([torch.randn(2, 4, 4, 4), torch.randn(2, 8, 2, 2)])
    assert out[0].shape == (2, 6, 4, 4) and out[1].shape == (2, 8, 2, 2)
    assert {"connectors.0.conv.weight", "connectors.0.bn.running_mean"} <= set(conn.state_dict())
    with pytest.raises(ValueError):
        Connector([(2, 4, 4, 4)], [])


# --------------------------------------------------------------------------------------------- CRD
def crd_ctx(n_data=40, num_classes=5, **kw):
    kw.setdefault("nce_k", 16)
    kw.setdefault("feat_dim", 8)
    return make_ctx(TinyNet(), TinyNet((4, 8, 12)), n_data=n_data, num_classes=num_classes, **kw)


def test_crd_build_errors():
    ctx = crd_ctx(nce_k=33)  # 40 samples, 8 per class: 32 negatives per class
    with pytest.raises(ValueError, match=r"--nce_k 33 is too large.*without replacement.*--nce_k 32 or less"):
        build_distiller("crd", ctx)
    build_distiller("crd", crd_ctx(nce_k=32))
    ctx = crd_ctx()
    ctx.train_targets = None
    with pytest.raises(ValueError, match="train_targets"):
        build_distiller("crd", ctx)
    with pytest.raises(ValueError, match="mode"):
        build_distiller("crd", crd_ctx(mode="approx"))


def test_crd_modules_and_state():
    d = build_distiller("crd", crd_ctx())
    assert d.crd_opt.s_dim == 16 and d.crd_opt.t_dim == 12 and d.crd_opt.n_data == 40
    assert d.trainable_modules() == [d.criterion.embed_s, d.criterion.embed_t]
    trainable = {id(p) for m in d.trainable_modules() for p in m.parameters()}
    assert trainable == {id(p) for p in d.parameters()}  # the memory holds no parameters
    keys = set(d.state_dict())
    assert {"criterion.contrast.memory_v1", "criterion.contrast.memory_v2", "criterion.contrast.params"} <= keys
    assert d.criterion.contrast.memory_v1.shape == (40, 8)


def test_crd_method_loss_gradients_and_decrease():
    d = build_distiller("crd", crd_ctx())
    torch.manual_seed(0)
    f_s = torch.randn(8, 16, requires_grad=True)
    f_t = torch.randn(8, 12, requires_grad=True)
    index = torch.arange(0, 16, 2)
    y = index % 5
    batch = Batch(torch.zeros(8, 3, 8, 8), y, index)
    dummy = torch.zeros(8, 5)
    d.generator = torch.Generator().manual_seed(0)

    def loss_fn():
        return d.method_loss(Outputs(dummy, [f_s]), Outputs(dummy, [f_t]), batch, 1)

    loss = loss_fn()
    assert loss.shape == () and torch.isfinite(loss)
    loss.backward()
    assert f_s.grad is not None and f_t.grad is None
    assert all(p.grad is not None for m in d.trainable_modules() for p in m.parameters())
    decreases(loss_fn, [f_s] + list(d.parameters()), lr=0.02)


def test_crd_uses_batch_contrast_idx_when_given():
    d = build_distiller("crd", crd_ctx(nce_k=4))
    torch.manual_seed(0)
    f_s, f_t = torch.randn(2, 16), torch.randn(2, 12)
    index = torch.tensor([0, 1])
    contrast_idx = torch.tensor([[0, 1, 2, 3, 4], [1, 2, 3, 4, 5]])
    batch = types.SimpleNamespace(x=None, y=index % 5, index=index, contrast_idx=contrast_idx)
    state = {k: v.clone() for k, v in d.state_dict().items()}
    got = d.method_loss(Outputs(None, [f_s]), Outputs(None, [f_t]), batch, 1)
    d.load_state_dict(state)
    want = d.criterion(f_s, f_t, index, contrast_idx)
    assert float(got.detach()) == pytest.approx(float(want.detach()), rel=1e-6)
