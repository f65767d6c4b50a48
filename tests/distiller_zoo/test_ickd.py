"""ICKD-C: the loss against its formula, the distiller and the feature map it taps (ensemble teachers too)."""
import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from distiller_zoo import POST, Outputs
from distiller_zoo.ICKD import ICKD, ickd_loss
from engine.forward import forward
from engine.teacher import Teacher
from models import build_model
from tests.distiller_zoo.model_contexts import model_options, model_ctx


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
    d = ICKD(model_ctx(model_options(ICKD), student, teacher))
    emb = d.embed_s
    assert isinstance(emb.conv2d, nn.Conv2d) and emb.conv2d.kernel_size == (1, 1) and emb.conv2d.bias is None
    assert isinstance(emb.l2norm, nn.BatchNorm2d) and emb.l2norm.num_features == 64
    assert d.trainable_modules() == [emb]
    assert ICKD.defaults == {"gamma": 1.0, "alpha": 0.0, "beta": 2.5}
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        out_s, out_t = forward(student, x, POST), forward(teacher, x, POST)
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
    d = ICKD(model_ctx(model_options(ICKD), student, teacher))
    assert d.embed_s.conv2d.in_channels == 128 and d.embed_s.conv2d.out_channels == 64
    with torch.no_grad():
        out_s, out_t = forward(student, x, POST), forward(teacher, x, POST)
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
    r = ICKD(model_ctx(model_options(ICKD), build_model("resnet8"), build_model("resnet8x4")))
    assert r._tap_s is None and r._tap_t is None


def test_ickd_taps_the_feature_member_of_an_ensemble_teacher():
    from distiller_zoo.ICKD import ickd_tap
    torch.manual_seed(0)
    members = [build_model("wrn_16_1", num_classes=10).eval() for _ in range(2)]
    ens = Teacher(members, feat_index=1).eval()
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


def test_the_penultimate_map_module_is_the_models_capability():
    wrn, resnet = build_model("wrn_16_2"), build_model("resnet8")
    assert wrn.penultimate_map_module() is wrn.relu
    assert resnet.penultimate_map_module() is None
    # an ensemble teacher answers for its feature member
    members = [build_model("wrn_16_1", num_classes=10) for _ in range(2)]
    assert Teacher(members, feat_index=1).penultimate_map_module() is members[1].relu


def test_ickd_taps_whatever_module_the_model_names_and_nothing_by_architecture_name():
    torch.manual_seed(0)
    student, teacher = build_model("wrn_16_2"), build_model("resnet8x4")
    d = ICKD(model_ctx(model_options(ICKD), student, teacher))
    # WRN student: a hook on its final ReLU; resnet teacher: none (feat[-2] is the map)
    assert d._tap_s is not None and d._tap_s.handle.id in student.relu._forward_hooks
    assert d._tap_t is None
    d.remove_hooks()
    # a resnet that names a module gets that module hooked, and ICKD compares its output
    torch.manual_seed(0)
    student, teacher = build_model("resnet8"), build_model("resnet8")
    student.penultimate_map_module = lambda: student.relu  # the stem's ReLU: feat[0]
    d = ICKD(model_ctx(model_options(ICKD), student, teacher))
    assert d._tap_s is not None and d._tap_s.handle.id in student.relu._forward_hooks
    assert d._tap_t is None
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out_s, out_t = forward(student, x, POST), forward(teacher, x, POST)
        m_s, m_t = d.ickd_maps(out_s, out_t)
    assert torch.equal(m_s, out_s.feats[0]) and not torch.equal(m_s, out_s.feats[-2])
    assert torch.equal(m_t, out_t.feats[-2])
