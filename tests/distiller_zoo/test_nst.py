"""NST: the loss against an explicit sum over pairs."""
import pytest
import torch

from distiller_zoo import NSTLoss


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
