"""SP (similarity-preserving): the loss against a hand computation."""
import math

import pytest

from distiller_zoo import Similarity
from tests.distiller_zoo.fake_features import t64


def test_similarity_two_samples_by_hand():
    f_s = t64([[1., 0.], [1., 1.]])
    f_t = t64([[2., 0.], [0., 1.]])
    # Gram matrices, then each row divided by its L2 norm
    g_s = [[1., 1.], [1., 2.]]
    g_t = [[4., 0.], [0., 1.]]
    def rownorm(g):
        return [[v / math.sqrt(sum(w * w for w in row)) for v in row] for row in g]
    n_s, n_t = rownorm(g_s), rownorm(g_t)
    expected = sum((n_t[i][j] - n_s[i][j]) ** 2 for i in range(2) for j in range(2)) / 4
    out = Similarity()([f_s], [f_t])
    assert out[0].shape == (1,)  # RepDistiller shape
    assert out[0].item() == pytest.approx(expected, rel=1e-10)
