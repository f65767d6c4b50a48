"""CC (correlation congruence): the loss against an explicit sum."""
import pytest
import torch

from distiller_zoo import Correlation


def test_correlation_value():
    f_s, f_t = torch.randn(5, 6, dtype=torch.float64), torch.randn(5, 6, dtype=torch.float64)
    d = [[abs(float(f_s[i, k] - f_t[i, k])) for k in range(6)] for i in range(5)]
    expected = sum(sum(d[i][k] * d[i + 1][k] for k in range(6)) for i in range(4)) / 4
    assert Correlation()(f_s, f_t).item() == pytest.approx(expected, rel=1e-10)
