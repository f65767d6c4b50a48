"""PKT: the loss against a hand computation."""
import math

import pytest
import torch

from distiller_zoo import PKT
from tests.distiller_zoo.fake_features import t64


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
