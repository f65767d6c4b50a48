"""KD (Hinton et al.): RepDistiller's KL reduction and the distiller's terms."""
import math
import types

import pytest
import torch

from distiller_zoo import KD, Batch, DistillContext, DistillKL, Outputs, build_distiller


def test_kd_loss_against_hand_computation():
    # two samples, three classes, T = 2: KL summed over classes, averaged over batch, times T^2
    s = torch.tensor([[1.0, 2.0, 3.0], [0.5, -1.0, 0.0]])
    t = torch.tensor([[3.0, 1.0, 0.0], [0.0, 0.0, 2.0]])
    T = 2.0
    total = 0.0
    for b in range(2):
        zs = [math.exp(v / T) for v in s[b].tolist()]
        zt = [math.exp(v / T) for v in t[b].tolist()]
        ps = [v / sum(zs) for v in zs]
        pt = [v / sum(zt) for v in zt]
        total += sum(q * (math.log(q) - math.log(p)) for p, q in zip(ps, pt))
    expected = total / 2 * T * T
    assert DistillKL(T)(s, t).item() == pytest.approx(expected, rel=1e-6)


def test_kd_distiller_terms_and_weights():
    d = build_distiller("kd", DistillContext(KD.options_type()(kd_T=4.0), None, None))
    logit_s, logit_t = torch.randn(5, 10), torch.randn(5, 10)
    y = torch.randint(0, 10, (5,))
    terms = d.loss(Outputs(logit_s), Outputs(logit_t), Batch(None, y, torch.arange(5)), 1)
    assert set(terms) == {"ce", "kl", "kd"}
    assert terms["ce"].item() == pytest.approx(torch.nn.functional.cross_entropy(logit_s, y).item())
    assert terms["kl"].item() == pytest.approx(DistillKL(4.0)(logit_s, logit_t).item())
    assert terms["kd"].item() == 0.0


def test_unknown_distill_lists_methods():
    with pytest.raises(ValueError) as e:
        build_distiller("nope", DistillContext(types.SimpleNamespace(), None, None))
    assert "kd" in str(e.value) and "nope" in str(e.value)
