"""models/ambb.py: whole-network fusion to the deploy form, exact in float32."""
import pytest
import torch
import torch.nn as nn

from models.ambb import AMBB, convert_to_deploy
from models.repmobilenetv2 import repmobilenetv2
from models.represnet import represnet20
from models.repvgg import repvgg8
from tests.bn_calibration import realistic_bn


@pytest.mark.parametrize("ctor", [represnet20, repvgg8, repmobilenetv2])
def test_whole_network_fusion_absolute_float32(ctor):
    torch.manual_seed(0)
    model = realistic_bn(ctor())
    kinds = {(m.duplicate1.conv.stride[0], m.groups > 1) for m in model.modules() if isinstance(m, AMBB)}
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model(x)
        convert_to_deploy(model)
        y_dep = model(x)
    assert y.dtype == torch.float32
    assert 1e-3 < y.abs().max().item() < 50.0  # O(1) outputs: the absolute bound below is meaningful
    assert (y - y_dep).abs().max().item() < 1e-5
    assert not any(isinstance(m, nn.BatchNorm2d) for n, m in model.named_modules() if "tdb_reparam" in n)
    if ctor is represnet20:
        assert kinds == {(1, False), (2, False)}
    if ctor is repmobilenetv2:
        assert {(1, True), (2, True)} <= kinds  # depthwise blocks at both strides


def test_fusion_error_is_caught_by_the_whole_network_check():
    """The criterion can fail: a kernel embedded one column off changes the outputs far beyond 1e-5."""
    torch.manual_seed(0)
    model = realistic_bn(repvgg8())
    x = torch.randn(2, 3, 32, 32)
    block = model.block0[0] if hasattr(model, "block0") else next(m for m in model.modules() if isinstance(m, AMBB))
    with torch.no_grad():
        y = model(x)
        k, b = block.get_equivalent_kernel_bias()
        convert_to_deploy(model)
        block.tdb_reparam.weight.copy_(torch.roll(k, 1, dims=3))
        assert (model(x) - y).abs().max().item() > 1e-3
