"""FitNet (hint): the loss value and the hint-layer checks."""
import pytest
import torch

from distiller_zoo import HintLoss
from tests.distiller_zoo.fake_features import build


def test_hint_value():
    a, b = torch.randn(3, 4, 2, 2), torch.randn(3, 4, 2, 2)
    expected = sum(float(x - y) ** 2 for x, y in zip(a.flatten(), b.flatten())) / a.numel()
    assert HintLoss()(a, b).item() == pytest.approx(expected, rel=1e-5)


def test_hint_layer_out_of_range_is_refused():
    with pytest.raises(ValueError):
        build("hint", "res32x4_res8x4", hint_layer=7)
    with pytest.raises(ValueError):
        build("hint", "res32x4_res8x4", hint_layer=4)  # pooled vector: no ConvReg possible
