"""VID: the initial variance and the loss against an independent computation."""
import pytest
import torch

from distiller_zoo import VIDLoss


def test_vid_value_and_init_variance():
    torch.manual_seed(0)
    crit = VIDLoss(3, 4, 5).double()
    var0 = torch.log1p(torch.exp(crit.log_scale)) + 1e-5
    assert torch.allclose(var0, torch.full((5,), 5.0, dtype=torch.float64))
    with torch.no_grad():
        crit.log_scale.copy_(torch.linspace(-1.0, 2.0, 5))
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    y = torch.randn(2, 5, 2, 2, dtype=torch.float64)
    w1, w2, w3 = (crit.regressor[i].weight[:, :, 0, 0] for i in (0, 2, 4))
    xp = x.reshape(2, 3, 2, 2, 2, 2).mean(dim=(3, 5))
    h = torch.einsum("oc,bchw->bohw", w1, xp).clamp(min=0)
    h = torch.einsum("oc,bchw->bohw", w2, h).clamp(min=0)
    mu = torch.einsum("oc,bchw->bohw", w3, h)
    var = torch.log(1 + torch.exp(torch.linspace(-1.0, 2.0, 5, dtype=torch.float64))) + 1e-5
    nll = 0.5 * ((mu - y) ** 2 / var[None, :, None, None] + torch.log(var)[None, :, None, None])
    assert crit(x, y).item() == pytest.approx(nll.mean().item(), rel=1e-10)
