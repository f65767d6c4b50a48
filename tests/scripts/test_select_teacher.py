"""scripts/select_teacher.py: the mutual-information estimator and the ranking rule."""
import math
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                                "scripts"))
import select_teacher  # noqa: E402


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
