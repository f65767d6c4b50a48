"""Feature/relation losses (FitNet, AT, SP, CC, VID, RKD, PKT, NST, KDSVD) and DKD.

Each loss is checked against a value worked out here independently (by hand for tiny inputs or
with a different formulation), then every registered distiller is built from fake features of
realistic shapes and driven for a few SGD steps.
"""
import math
import types

import pytest
import torch
import torch.nn as nn

from distiller_zoo import (KDSVD, PKT, Attention, Correlation, DKDLoss, HintLoss, NSTLoss, RKDLoss,
                           Similarity, VIDLoss, build_distiller)
from distiller_zoo.base import Batch, DistillContext, Outputs
from models.util import ConvReg, Embed, LinearEmbed


def t64(x):
    return torch.tensor(x, dtype=torch.float64)


def smooth_l1(x):
    x = abs(x)
    return 0.5 * x * x if x < 1 else x - 0.5


# ----------------------------------------------------------------------------------------------
# models/util.py
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("s_shape,t_shape,kind", [
    ((2, 16, 32, 32), (2, 32, 16, 16), nn.Conv2d),           # student twice as tall
    ((2, 16, 8, 8), (2, 32, 16, 16), nn.ConvTranspose2d),    # student half as tall
    ((2, 16, 8, 8), (2, 64, 8, 8), nn.Conv2d),               # same size: 1x1
    ((2, 16, 10, 10), (2, 64, 8, 8), nn.Conv2d),             # valid 3x3
])
def test_convreg_shapes_and_names(s_shape, t_shape, kind):
    reg = ConvReg(s_shape, t_shape)
    assert type(reg.conv) is kind
    out = reg(torch.randn(*s_shape))
    assert out.shape == t_shape
    assert (out >= 0).all()  # ends in ReLU
    names = set(reg.state_dict())
    assert {"conv.weight", "conv.bias", "bn.weight", "bn.bias", "bn.running_mean"} <= names
    no_relu = ConvReg(s_shape, t_shape, use_relu=False)
    assert (no_relu(torch.randn(*s_shape)) < 0).any()


def test_convreg_rejects_impossible_shapes():
    with pytest.raises(ValueError):
        ConvReg((2, 16, 4, 4), (2, 32, 16, 16))
    with pytest.raises(ValueError):
        ConvReg((2, 16), (2, 32))


def test_embeds():
    x = torch.randn(5, 8, 2, 2)
    lin = LinearEmbed(32, 7)
    assert torch.allclose(lin(x), x.reshape(5, -1) @ lin.linear.weight.t() + lin.linear.bias)
    emb = Embed(32, 7)
    y = emb(x)
    assert torch.allclose(y.norm(dim=1), torch.ones(5), atol=1e-6)
    assert set(emb.state_dict()) == {"linear.weight", "linear.bias"}


# ----------------------------------------------------------------------------------------------
# loss values against independent computations
# ----------------------------------------------------------------------------------------------

def test_hint_value():
    a, b = torch.randn(3, 4, 2, 2), torch.randn(3, 4, 2, 2)
    expected = sum(float(x - y) ** 2 for x, y in zip(a.flatten(), b.flatten())) / a.numel()
    assert HintLoss()(a, b).item() == pytest.approx(expected, rel=1e-5)


def test_attention_tiny_map_by_hand():
    # B=1, C=2, 2x2 maps. Attention map = channel mean of f^2, then L2-normalised.
    f_s = t64([[[[1., 2.], [0., 1.]], [[1., 0.], [2., 1.]]]])
    f_t = t64([[[[0., 1.], [1., 0.]], [[2., 1.], [1., 0.]]]])
    a_s = [(1 + 1) / 2, (4 + 0) / 2, (0 + 4) / 2, (1 + 1) / 2]          # [1, 2, 2, 1]
    a_t = [(0 + 4) / 2, (1 + 1) / 2, (1 + 1) / 2, 0.0]                   # [2, 1, 1, 0]
    n_s, n_t = math.sqrt(sum(v * v for v in a_s)), math.sqrt(sum(v * v for v in a_t))
    expected = sum((x / n_s - y / n_t) ** 2 for x, y in zip(a_s, a_t)) / 4
    losses = Attention()([f_s], [f_t])
    assert len(losses) == 1
    assert losses[0].item() == pytest.approx(expected, rel=1e-10)


def test_attention_pools_the_larger_map():
    f_s = torch.rand(2, 3, 4, 4, dtype=torch.float64)
    f_t = torch.rand(2, 5, 2, 2, dtype=torch.float64)
    pooled = f_s.reshape(2, 3, 2, 2, 2, 2).mean(dim=(3, 5))  # 2x2 average pooling by hand
    def amap(f):
        a = (f * f).sum(1).reshape(f.shape[0], -1) / f.shape[1]
        return a / a.pow(2).sum(1, keepdim=True).sqrt()
    expected = ((amap(pooled) - amap(f_t)) ** 2).sum() / (2 * 4)
    assert Attention()([f_s], [f_t])[0].item() == pytest.approx(expected.item(), rel=1e-10)
    # symmetric case: the teacher is the larger one
    assert Attention()([f_t], [f_s])[0].item() == pytest.approx(expected.item(), rel=1e-10)


def test_similarity_two_samples_by_hand():
    f_s = t64([[1., 0.], [1., 1.]])
    f_t = t64([[2., 0.], [0., 1.]])
    # Gram matrices, then each row divided by its L2 norm
    g_s = [[1., 1.], [1., 2.]]
    g_t = [[4., 0.], [0., 1.]]
    def rownorm(g):
        return [[v / math.sqrt(sum(w * w for w in row)) for v in row] for row in g]
    n_s, n_t = rownorm(g_s), rownorm(g_t)
    expected = sum((n_t[i][j] - n_s[i][j]) ** 2 for i in range(2) for j in range(2)) / 4
    out = Similarity()([f_s], [f_t])
    assert out[0].shape == (1,)  # RepDistiller shape
    assert out[0].item() == pytest.approx(expected, rel=1e-10)


def test_correlation_value():
    f_s, f_t = torch.randn(5, 6, dtype=torch.float64), torch.randn(5, 6, dtype=torch.float64)
    d = [[abs(float(f_s[i, k] - f_t[i, k])) for k in range(6)] for i in range(5)]
    expected = sum(sum(d[i][k] * d[i + 1][k] for k in range(6)) for i in range(4)) / 4
    assert Correlation()(f_s, f_t).item() == pytest.approx(expected, rel=1e-10)


def test_vid_value_and_init_variance():
    torch.manual_seed(0)
    crit = VIDLoss(3, 4, 5).double()
    var0 = torch.log1p(torch.exp(crit.log_scale)) + 1e-5
    assert torch.allclose(var0, torch.full((5,), 5.0, dtype=torch.float64))
    with torch.no_grad():
        crit.log_scale.copy_(torch.linspace(-1.0, 2.0, 5))
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    y = torch.randn(2, 5, 2, 2, dtype=torch.float64)
    w1, w2, w3 = (crit.regressor[i].weight[:, :, 0, 0] for i in (0, 2, 4))
    xp = x.reshape(2, 3, 2, 2, 2, 2).mean(dim=(3, 5))
    h = torch.einsum("oc,bchw->bohw", w1, xp).clamp(min=0)
    h = torch.einsum("oc,bchw->bohw", w2, h).clamp(min=0)
    mu = torch.einsum("oc,bchw->bohw", w3, h)
    var = torch.log(1 + torch.exp(torch.linspace(-1.0, 2.0, 5, dtype=torch.float64))) + 1e-5
    nll = 0.5 * ((mu - y) ** 2 / var[None, :, None, None] + torch.log(var)[None, :, None, None])
    assert crit(x, y).item() == pytest.approx(nll.mean().item(), rel=1e-10)


def test_rkd_three_points_by_hand():
    s = [[0., 0.], [3., 0.], [0., 4.]]      # a 3-4-5 triangle
    t = [[0., 0.], [1., 0.], [1., 1.]]
    def dists(p):
        d = [[math.dist(a, b) for b in p] for a in p]
        mean = sum(v for row in d for v in row if v > 0) / 6
        return [[v / mean for v in row] for row in d]
    def angles(p):
        out = []
        for j in range(3):            # anchor
            for i in range(3):
                for k in range(3):
                    u = [p[i][0] - p[j][0], p[i][1] - p[j][1]]
                    v = [p[k][0] - p[j][0], p[k][1] - p[j][1]]
                    nu, nv = math.hypot(*u), math.hypot(*v)
                    out.append(0.0 if nu == 0 or nv == 0 else (u[0] * v[0] + u[1] * v[1]) / (nu * nv))
        return out
    ds, dt = dists(s), dists(t)
    loss_d = sum(smooth_l1(ds[i][j] - dt[i][j]) for i in range(3) for j in range(3)) / 9
    loss_a = sum(smooth_l1(a - b) for a, b in zip(angles(s), angles(t))) / 27
    got = RKDLoss()(t64(s), t64(t)).item()
    assert got == pytest.approx(25 * loss_d + 50 * loss_a, rel=1e-6)
    assert RKDLoss(w_d=1, w_a=0)(t64(s), t64(t)).item() == pytest.approx(loss_d, rel=1e-6)


def test_pkt_two_by_two_by_hand():
    s = [[1., 0.], [1., 1.]]
    t = [[1., 0.], [0., 1.]]
    eps = 1e-7
    def cond(p):
        unit = [[v / (math.hypot(*row) + eps) for v in row] for row in p]
        sim = [[(sum(a * b for a, b in zip(unit[i], unit[j])) + 1) / 2 for j in range(2)]
               for i in range(2)]
        return [[v / sum(row) for v in row] for row in sim]
    ps, pt = cond(s), cond(t)
    expected = sum(pt[i][j] * math.log((pt[i][j] + eps) / (ps[i][j] + eps))
                   for i in range(2) for j in range(2)) / 4
    assert PKT()(t64(s), t64(t)).item() == pytest.approx(expected, rel=1e-9)
    # zero vectors give NaN-free output, as the NaN entries are replaced by zeros
    assert torch.isfinite(PKT()(torch.zeros(3, 4), torch.randn(3, 4)))


def test_nst_value_by_pairs():
    f_s = torch.randn(2, 3, 2, 2, dtype=torch.float64)
    f_t = torch.randn(2, 4, 4, 4, dtype=torch.float64)
    ft = f_t.reshape(2, 4, 2, 2, 2, 2).mean(dim=(3, 5))
    def unit(f):
        v = f.reshape(2, f.shape[1], -1)
        return v / v.norm(dim=2, keepdim=True)
    s, t = unit(f_s), unit(ft)
    def kmean(a, b):
        vals = [float(a[n, i] @ b[n, j]) ** 2
                for n in range(2) for i in range(a.shape[1]) for j in range(b.shape[1])]
        return sum(vals) / len(vals)
    expected = kmean(t, t) + kmean(s, s) - 2 * kmean(s, t)
    out = NSTLoss()([f_s], [f_t])
    assert out[0].item() == pytest.approx(expected, rel=1e-9)


def test_kdsvd_against_eigendecomposition():
    torch.manual_seed(3)
    B, C = 2, 3
    g_s = [torch.randn(B, C, 2, 2, dtype=torch.float64), torch.randn(B, C, 3, 3, dtype=torch.float64)]
    g_t = [torch.randn(B, C, 4, 4, dtype=torch.float64), torch.randn(B, C, 2, 2, dtype=torch.float64)]

    def right_vectors(f, n):
        # right singular vectors of the (HW x C) matrix = eigenvectors of its C x C Gram matrix
        m = f.reshape(f.shape[0], f.shape[1], -1)        # (B, C, HW) = M^T
        evals, evecs = torch.linalg.eigh(m @ m.transpose(1, 2))
        order = evals.argsort(dim=1, descending=True)
        return torch.stack([evecs[b][:, order[b, :n]] for b in range(f.shape[0])])

    vs, vt = [], []
    for f_s, f_t in zip(g_s, g_t):
        cand, ref = right_vectors(f_s, 4), right_vectors(f_t, 1)[:, :, 0]  # k=1; C=3 -> 3 candidates
        picked = []
        for b in range(B):
            cos = cand[b].t() @ ref[b]
            i = int(cos.abs().argmax())
            picked.append(cand[b][:, i] * torch.sign(cos[i]))
        vs.append(torch.stack(picked))     # (B, C); singular-value scale is 1 for k=1
        vt.append(ref)

    def rbf(cur, prev):
        return torch.exp(-(cur[:, :, None] - prev[:, None, :]) ** 2 / 8)

    # the overall sign of each teacher vector is arbitrary; the RBF only sees differences of
    # vectors at two stages, so compare with the sign the implementation's SVD picked
    crit = KDSVD(k=1)
    _, _, v0 = crit.svd(g_t[0], 1)
    _, _, v1 = crit.svd(g_t[1], 1)
    sgn0 = torch.sign((v0[:, :, 0] * vt[0]).sum(1, keepdim=True))
    sgn1 = torch.sign((v1[:, :, 0] * vt[1]).sum(1, keepdim=True))
    vt0, vt1, vs0, vs1 = vt[0] * sgn0, vt[1] * sgn1, vs[0] * sgn0, vs[1] * sgn1
    expected = ((rbf(vs1, vs0) - rbf(vt1, vt0)) ** 2).sum() / B
    out = crit(g_s, g_t)
    assert len(out) == 1
    assert out[0].item() == pytest.approx(expected.item(), rel=1e-7, abs=1e-12)


def test_kdsvd_rejects_non_square_maps():
    with pytest.raises(ValueError):
        KDSVD().svd(torch.randn(2, 3, 4, 2))


def test_dkd_three_classes_by_hand():
    T = 2.0
    y_s = [[1.0, 2.0, 0.5]]
    y_t = [[3.0, 0.0, 1.0]]
    target = 0

    def softmax(v):
        e = [math.exp(x / T) for x in v]
        return [x / sum(e) for x in e]

    ps, pt = softmax(y_s[0]), softmax(y_t[0])
    bs, bt = [ps[target], 1 - ps[target]], [pt[target], 1 - pt[target]]
    tckd = sum(q * math.log(q / p) for p, q in zip(bs, bt)) * T * T
    others = [c for c in range(3) if c != target]
    qs = [ps[c] / sum(ps[o] for o in others) for c in others]
    qt = [pt[c] / sum(pt[o] for o in others) for c in others]
    nckd = sum(q * math.log(q / p) for p, q in zip(qs, qt)) * T * T

    crit = DKDLoss(alpha=1.0, beta=8.0, T=T, warmup=20)
    s, t, y = t64(y_s), t64(y_t), torch.tensor([target])
    assert crit.tckd(s, t, y).item() == pytest.approx(tckd, rel=1e-9)
    assert crit.nckd(s, t, y).item() == pytest.approx(nckd, rel=1e-9)
    assert crit(s, t, y).item() == pytest.approx(tckd + 8 * nckd, rel=1e-9)
    assert crit(s, t, y, epoch=5).item() == pytest.approx(0.25 * (tckd + 8 * nckd), rel=1e-9)


def test_dkd_reduction_is_per_batch_mean():
    torch.manual_seed(0)
    s, t = torch.randn(6, 10, dtype=torch.float64), torch.randn(6, 10, dtype=torch.float64)
    y = torch.randint(0, 10, (6,))
    crit = DKDLoss()
    whole = crit(s, t, y).item()
    parts = [crit(s[i:i + 1], t[i:i + 1], y[i:i + 1]).item() for i in range(6)]
    assert whole == pytest.approx(sum(parts) / 6, rel=1e-9)


@pytest.mark.parametrize("epoch,factor", [(1, 0.05), (10, 0.5), (20, 1.0), (40, 1.0)])
def test_dkd_warmup(epoch, factor):
    crit = DKDLoss(warmup=20)
    assert crit.warmup_factor(epoch) == pytest.approx(factor)
    ctx = DistillContext(opt=make_opt(), student=nn.Identity(), teacher=nn.Identity())
    dist = build_distiller("dkd", ctx)
    torch.manual_seed(1)
    s, t = torch.randn(4, 100), torch.randn(4, 100)
    batch = Batch(x=torch.zeros(4), y=torch.randint(0, 100, (4,)), index=torch.arange(4))
    full = crit(s, t, batch.y).item()
    kd = dist.loss(Outputs(s), Outputs(t), batch, epoch)["kd"].item()
    assert kd == pytest.approx(factor * full, rel=1e-5)


# ----------------------------------------------------------------------------------------------
# gradients at loss level
# ----------------------------------------------------------------------------------------------

def _leaf(*shape):
    return torch.randn(*shape, requires_grad=True)


@pytest.mark.parametrize("name", ["hint", "at", "sp", "cc", "vid", "rkd", "pkt", "nst", "kdsvd"])
def test_loss_gradients_reach_student(name):
    torch.manual_seed(0)
    maps_s = [_leaf(4, 8, 8, 8), _leaf(4, 8, 4, 4)]
    maps_t = [torch.randn(4, 8, 8, 8), torch.randn(4, 8, 4, 4)]
    vec_s, vec_t = _leaf(4, 16), torch.randn(4, 32)
    extra = []
    if name == "hint":
        loss = HintLoss()(maps_s[0], maps_t[0])
        used = maps_s[:1]
    elif name == "at":
        loss = sum(Attention()(maps_s, maps_t))
        used = maps_s
    elif name == "sp":
        loss = sum(Similarity()(maps_s[1:], maps_t[1:])).squeeze()
        used = maps_s[1:]
    elif name == "cc":
        es, et = LinearEmbed(16, 8), LinearEmbed(32, 8)
        loss = Correlation()(es(vec_s), et(vec_t))
        used, extra = [vec_s], [es, et]
    elif name == "vid":
        crit = VIDLoss(8, 12, 12)
        loss = crit(maps_s[0], torch.randn(4, 12, 4, 4))
        used, extra = maps_s[:1], [crit]
    elif name == "rkd":
        loss = RKDLoss()(vec_s, vec_t)
        used = [vec_s]
    elif name == "pkt":
        loss = PKT()(vec_s, vec_t)
        used = [vec_s]
    elif name == "nst":
        loss = sum(NSTLoss()(maps_s, maps_t))
        used = maps_s
    else:
        loss = sum(KDSVD()(maps_s, maps_t))
        used = maps_s
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    for f in used:
        assert f.grad is not None and torch.isfinite(f.grad).all() and f.grad.abs().sum() > 0
    for m in extra:
        for p in m.parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0


def test_rkd_detaches_the_teacher():
    # RKD computes the teacher relations under no_grad itself; the other losses (like
    # RepDistiller's) rely on the caller passing detached teacher features
    s, t = _leaf(4, 8), _leaf(4, 8)
    RKDLoss()(s, t).backward()
    assert t.grad is None and s.grad is not None


# ----------------------------------------------------------------------------------------------
# registered distillers
# ----------------------------------------------------------------------------------------------

PAIRS = {
    # resnet32x4 -> resnet8x4: identical feature shapes
    "res32x4_res8x4": ([(32, 32, 32), (64, 32, 32), (128, 16, 16), (256, 8, 8), (256,)],
                       [(32, 32, 32), (64, 32, 32), (128, 16, 16), (256, 8, 8), (256,)]),
    # wrn_40_2 -> wrn_40_1: half the channels
    "wrn40x2_wrn40x1": ([(16, 32, 32), (32, 32, 32), (64, 16, 16), (128, 8, 8), (128,)],
                        [(16, 32, 32), (16, 32, 32), (32, 16, 16), (64, 8, 8), (64,)]),
    # wrn_40_2 -> a student at half the resolution (exercises pooling and the deconv regressor)
    "wrn40x2_halfres": ([(16, 32, 32), (32, 32, 32), (64, 16, 16), (128, 8, 8), (128,)],
                        [(16, 16, 16), (32, 16, 16), (64, 8, 8), (128, 4, 4), (128,)]),
}

# name: (default weights, needs_feats, SGD learning rate on the unweighted kd term). The rates
# differ by orders of magnitude because the raw losses do (hence RepDistiller's -b values).
# FitNet plateaus near 2/3: its ReLU regressor cannot reach the negative teacher values.
METHODS = {
    "hint": ((1.0, 0.0, 100.0), True, 1.0),
    "attention": ((1.0, 0.0, 1000.0), True, 1e4),
    "similarity": ((1.0, 0.0, 3000.0), True, 1000.0),
    "correlation": ((1.0, 0.0, 0.02), True, 1e-3),
    "vid": ((1.0, 0.0, 1.0), True, 10.0),
    "rkd": ((1.0, 0.0, 1.0), True, 1.0),
    "pkt": ((1.0, 0.0, 30000.0), True, 1e3),
    "nst": ((1.0, 0.0, 50.0), True, 1e5),
    "kdsvd": ((1.0, 0.0, 1.0), True, 10.0),
    "dkd": ((1.0, 0.0, 1.0), False, 1.0),
}


def make_opt(**kw):
    base = dict(kd_T=4, feat_dim=128, hint_layer=2, dkd_alpha=1.0, dkd_beta=8.0, dkd_warmup=20)
    base.update(kw)
    return types.SimpleNamespace(**base)


def fake_feats(shapes, batch, gen, requires_grad=False):
    return [torch.randn(batch, *s, generator=gen).requires_grad_(requires_grad) for s in shapes]


def build(name, pair, **opt_kw):
    t_shapes, s_shapes = PAIRS[pair]
    g = torch.Generator().manual_seed(0)
    ctx = DistillContext(opt=make_opt(**opt_kw), student=nn.Identity(), teacher=nn.Identity(),
                         feat_s=fake_feats(s_shapes, 2, g), feat_t=fake_feats(t_shapes, 2, g))
    return build_distiller(name, ctx)


def random_outputs(pair, batch=4, seed=1):
    t_shapes, s_shapes = PAIRS[pair]
    g = torch.Generator().manual_seed(seed)
    out_s = Outputs(torch.randn(batch, 100, generator=g).requires_grad_(),
                    fake_feats(s_shapes, batch, g, requires_grad=True))
    # teacher tensors require grad here on purpose: the distiller must not send any to them
    out_t = Outputs(torch.randn(batch, 100, generator=g).requires_grad_(),
                    fake_feats(t_shapes, batch, g, requires_grad=True))
    y = torch.randint(0, 100, (batch,), generator=g)
    return out_s, out_t, Batch(x=torch.zeros(batch, 3, 32, 32), y=y, index=torch.arange(batch))


def _cases():
    for name in METHODS:
        for pair in PAIRS:
            if name == "kdsvd" and pair == "wrn40x2_wrn40x1":
                continue  # unequal channels: checked separately, must be refused
            yield name, pair


def test_every_method_registered_and_importable():
    import distiller_zoo
    for cls in ("HintLoss", "Attention", "Similarity", "Correlation", "VIDLoss", "RKDLoss", "PKT",
                "NSTLoss", "KDSVD", "DKDLoss"):
        assert isinstance(getattr(distiller_zoo, cls), type)
    for name in METHODS:
        assert name in distiller_zoo.available()
        cls = distiller_zoo.REGISTRY[name]
        assert cls.default_weights == METHODS[name][0]
        assert cls.needs_feats is METHODS[name][1]


def test_kdsvd_refuses_unequal_channels():
    with pytest.raises(ValueError):
        build("kdsvd", "wrn40x2_wrn40x1")


def test_hint_layer_out_of_range_is_refused():
    with pytest.raises(ValueError):
        build("hint", "res32x4_res8x4", hint_layer=7)
    with pytest.raises(ValueError):
        build("hint", "res32x4_res8x4", hint_layer=4)  # pooled vector: no ConvReg possible


def test_trainable_modules():
    assert isinstance(build("hint", "wrn40x2_halfres").regressor.conv, nn.ConvTranspose2d)
    cc = build("correlation", "wrn40x2_wrn40x1")
    assert cc.embed_s.linear.in_features == 64 and cc.embed_t.linear.in_features == 128
    assert cc.embed_s.linear.out_features == 128
    vid = build("vid", "wrn40x2_wrn40x1")
    assert [(v.regressor[0].in_channels, v.regressor[0].out_channels, v.log_scale.numel())
            for v in vid.vid_losses] == [(16, 32, 32), (32, 64, 64), (64, 128, 128)]
    for name in ("attention", "similarity", "rkd", "pkt", "nst", "dkd"):
        d = build(name, "res32x4_res8x4")
        assert sum(p.numel() for m in d.trainable_modules() for p in m.parameters()) == 0


@pytest.mark.parametrize("name,pair", list(_cases()))
def test_distiller_terms_and_gradients(name, pair):
    torch.manual_seed(0)
    dist = build(name, pair)
    dist.train()
    out_s, out_t, batch = random_outputs(pair)
    if not dist.needs_feats:
        out_s.feats = out_t.feats = None
    terms = dist.loss(out_s, out_t, batch, epoch=30)
    assert set(terms) == {"ce", "kl", "kd"}
    for v in terms.values():
        assert v.dim() == 0 and torch.isfinite(v)
    assert terms["kd"].requires_grad
    terms["kd"].backward()

    student = [out_s.logits] if name == "dkd" else [f for f in out_s.feats if f.grad is not None]
    assert student and all(f.grad.abs().sum() > 0 and torch.isfinite(f.grad).all() for f in student)
    teacher = [out_t.logits] + (out_t.feats or [])
    assert all(f.grad is None for f in teacher)
    for m in dist.trainable_modules():
        for p in m.parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all()


@pytest.mark.parametrize("name,pair", list(_cases()))
def test_distiller_sgd_decreases_kd(name, pair):
    torch.manual_seed(0)
    dist = build(name, pair)
    dist.train()
    out_s, out_t, batch = random_outputs(pair)
    if not dist.needs_feats:
        out_s.feats = out_t.feats = None
    leaves = [out_s.logits] + (out_s.feats or [])
    params = leaves + [p for m in dist.trainable_modules() for p in m.parameters()]
    opt = torch.optim.SGD(params, lr=METHODS[name][2], momentum=0.9)
    history = []
    for _ in range(30):
        kd = dist.loss(out_s, out_t, batch, epoch=30)["kd"]
        opt.zero_grad()
        kd.backward()
        opt.step()
        history.append(kd.item())
    assert all(math.isfinite(v) for v in history)
    assert history[-1] < 0.9 * history[0], history
