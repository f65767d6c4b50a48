"""models/util.py: the FitNet regressor (ConvReg) and the CRD/CC embeddings."""
import pytest
import torch
import torch.nn as nn

from models.util import ConvReg, Embed, LinearEmbed


@pytest.mark.parametrize("s_shape,t_shape,kind", [
    ((2, 16, 32, 32), (2, 32, 16, 16), nn.Conv2d),           # student twice as tall
    ((2, 16, 8, 8), (2, 32, 16, 16), nn.ConvTranspose2d),    # student half as tall
    ((2, 16, 8, 8), (2, 64, 8, 8), nn.Conv2d),               # same size: 1x1
    ((2, 16, 10, 10), (2, 64, 8, 8), nn.Conv2d),             # valid 3x3
])
def test_convreg_shapes_and_names(s_shape, t_shape, kind):
    reg = ConvReg(s_shape, t_shape)
    assert type(reg.conv) is kind
    out = reg(torch.randn(*s_shape))
    assert out.shape == t_shape
    assert (out >= 0).all()  # ends in ReLU
    names = set(reg.state_dict())
    assert {"conv.weight", "conv.bias", "bn.weight", "bn.bias", "bn.running_mean"} <= names
    no_relu = ConvReg(s_shape, t_shape, use_relu=False)
    assert (no_relu(torch.randn(*s_shape)) < 0).any()


def test_convreg_rejects_impossible_shapes():
    with pytest.raises(ValueError):
        ConvReg((2, 16, 4, 4), (2, 32, 16, 16))
    with pytest.raises(ValueError):
        ConvReg((2, 16), (2, 32))


def test_embeds():
    x = torch.randn(5, 8, 2, 2)
    lin = LinearEmbed(32, 7)
    assert torch.allclose(lin(x), x.reshape(5, -1) @ lin.linear.weight.t() + lin.linear.bias)
    emb = Embed(32, 7)
    y = emb(x)
    assert torch.allclose(y.norm(dim=1), torch.ones(5), atol=1e-6)
    assert set(emb.state_dict()) == {"linear.weight", "linear.bias"}
