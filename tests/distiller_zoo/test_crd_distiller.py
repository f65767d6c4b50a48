"""The CRD distiller (distiller_zoo/CRD.py): build errors, modules, state, loss and gradients."""
import types

import pytest
import torch

from distiller_zoo import build_distiller
from distiller_zoo.base import Batch, Outputs
from tests.distiller_zoo.tiny_net import TinyNet, make_ctx, decreases


def crd_ctx(n_data=40, num_classes=5, **kw):
    kw.setdefault("nce_k", 16)
    kw.setdefault("feat_dim", 8)
    return make_ctx("crd", TinyNet(), TinyNet((4, 8, 12)), n_data=n_data, num_classes=num_classes, **kw)


def test_crd_build_errors():
    ctx = crd_ctx(nce_k=33)  # 40 samples, 8 per class: 32 negatives per class
    with pytest.raises(ValueError, match=r"--nce_k 33 is too large.*without replacement.*--nce_k 32 or less"):
        build_distiller("crd", ctx)
    build_distiller("crd", crd_ctx(nce_k=32))
    ctx = crd_ctx()
    ctx.train_targets = None
    with pytest.raises(ValueError, match="train_targets"):
        build_distiller("crd", ctx)
    with pytest.raises(ValueError, match="mode"):
        build_distiller("crd", crd_ctx(mode="approx"))


def test_crd_modules_and_state():
    d = build_distiller("crd", crd_ctx())
    assert d.crd_opt.s_dim == 16 and d.crd_opt.t_dim == 12 and d.crd_opt.n_data == 40
    assert d.trainable_modules() == [d.criterion.embed_s, d.criterion.embed_t]
    trainable = {id(p) for m in d.trainable_modules() for p in m.parameters()}
    assert trainable == {id(p) for p in d.parameters()}  # the memory holds no parameters
    keys = set(d.state_dict())
    assert {"criterion.contrast.memory_v1", "criterion.contrast.memory_v2", "criterion.contrast.params"} <= keys
    assert d.criterion.contrast.memory_v1.shape == (40, 8)


def test_crd_method_loss_gradients_and_decrease():
    d = build_distiller("crd", crd_ctx())
    torch.manual_seed(0)
    f_s = torch.randn(8, 16, requires_grad=True)
    f_t = torch.randn(8, 12, requires_grad=True)
    index = torch.arange(0, 16, 2)
    y = index % 5
    batch = Batch(torch.zeros(8, 3, 8, 8), y, index)
    dummy = torch.zeros(8, 5)
    d.generator = torch.Generator().manual_seed(0)

    def loss_fn():
        return d.method_loss(Outputs(dummy, [f_s]), Outputs(dummy, [f_t]), batch, 1)

    loss = loss_fn()
    assert loss.shape == () and torch.isfinite(loss)
    loss.backward()
    assert f_s.grad is not None and f_t.grad is None
    assert all(p.grad is not None for m in d.trainable_modules() for p in m.parameters())
    decreases(loss_fn, [f_s] + list(d.parameters()), lr=0.02)


def test_crd_uses_batch_contrast_idx_when_given():
    d = build_distiller("crd", crd_ctx(nce_k=4))
    torch.manual_seed(0)
    f_s, f_t = torch.randn(2, 16), torch.randn(2, 12)
    index = torch.tensor([0, 1])
    contrast_idx = torch.tensor([[0, 1, 2, 3, 4], [1, 2, 3, 4, 5]])
    batch = types.SimpleNamespace(x=None, y=index % 5, index=index, contrast_idx=contrast_idx)
    state = {k: v.clone() for k, v in d.state_dict().items()}
    got = d.method_loss(Outputs(None, [f_s]), Outputs(None, [f_t]), batch, 1)
    d.load_state_dict(state)
    want = d.criterion(f_s, f_t, index, contrast_idx)
    assert float(got.detach()) == pytest.approx(float(want.detach()), rel=1e-6)
