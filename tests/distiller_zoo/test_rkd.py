"""RKD: distance and angle terms by hand, and the teacher kept out of the graph."""
import math

import pytest

from distiller_zoo import RKDLoss
from tests.distiller_zoo.fake_features import t64, _leaf


def smooth_l1(x):
    x = abs(x)
    return 0.5 * x * x if x < 1 else x - 0.5


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


def test_rkd_detaches_the_teacher():
    # RKD computes the teacher relations under no_grad itself; the other losses (like
    # RepDistiller's) rely on the caller passing detached teacher features
    s, t = _leaf(4, 8), _leaf(4, 8)
    RKDLoss()(s, t).backward()
    assert t.grad is None and s.grad is not None
