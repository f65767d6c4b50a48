"""AT (attention transfer): the loss against hand computations."""
import math

import pytest
import torch

from distiller_zoo import Attention
from tests.distiller_zoo.fake_features import t64


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
