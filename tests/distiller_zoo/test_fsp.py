"""FSP: the loss formula, build errors and the init stage."""
import pytest
import torch

from distiller_zoo import FSP, build_distiller
from distiller_zoo.base import Batch, Outputs
from tests.distiller_zoo.tiny_net import TinyNet, make_ctx, forward_pair, snapshot, changed, run_init_stage, decreases


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
        build_distiller("fsp", make_ctx("fsp", TinyNet((4, 8, 16)), TinyNet((4, 8, 32))))
    with pytest.raises(ValueError, match="another method"):
        FSP([(2, 4, 8, 8), (2, 4, 4, 4)], [(2, 4, 8, 8), (2, 4, 4, 4), (2, 4, 2, 2)])
    with pytest.raises(ValueError, match="taller and the other wider"):
        FSP([(2, 4, 8, 4), (2, 4, 4, 8)], [(2, 4, 8, 4), (2, 4, 4, 8)])
    with pytest.raises(ValueError, match="4-D"):
        FSP([(2, 4, 8, 8), (2, 4)], [(2, 4, 8, 8), (2, 4)])


def test_fsp_init_stage_trains_student_features_only():
    student, teacher = TinyNet(), TinyNet()
    d = build_distiller("fsp", make_ctx("fsp", student, teacher))
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
    d = build_distiller("fsp", make_ctx("fsp", TinyNet(), TinyNet()))
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
