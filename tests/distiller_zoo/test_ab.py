"""AB (activation boundaries): the loss formula, the init stage and the connector."""
import pytest
import torch
import torch.nn as nn

from distiller_zoo import PRE, ABLoss, build_distiller
from distiller_zoo.base import Batch, Outputs
from tests.distiller_zoo.tiny_net import TinyNet, make_ctx, forward_pair, snapshot, changed, run_init_stage, decreases


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
    d = build_distiller("abound", make_ctx("abound", student, teacher))
    assert d.student_features == PRE and d.teacher_features == PRE
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
    d = build_distiller("abound", make_ctx("abound", student, teacher))
    assert all(isinstance(c, nn.Identity) for c in d.connector.connectors)
    x = torch.randn(2, 3, 8, 8)
    out_s, out_t = forward_pair(student, teacher, x, True)
    terms = d.loss(out_s, out_t, Batch(x, torch.zeros(2, dtype=torch.long), torch.arange(2)), 1)
    assert float(terms["kd"]) == 0.0


def test_ab_init_loss_gradients_and_decrease():
    student, teacher = TinyNet((4, 8, 16)), TinyNet((6, 12, 24))
    d = build_distiller("abound", make_ctx("abound", student, teacher))
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
