"""Fake teacher/student features of realistic shapes, and distillers built on them without a network."""
import torch
import torch.nn as nn

from distiller_zoo import build_distiller
from distiller_zoo.base import Batch, DistillContext, Outputs
from tests.methods import options_among


def t64(x):
    return torch.tensor(x, dtype=torch.float64)


def _leaf(*shape):
    return torch.randn(*shape, requires_grad=True)


PAIRS = {
    # resnet32x4 -> resnet8x4: identical feature shapes
    "res32x4_res8x4": ([(32, 32, 32), (64, 32, 32), (128, 16, 16), (256, 8, 8), (256,)],
                       [(32, 32, 32), (64, 32, 32), (128, 16, 16), (256, 8, 8), (256,)]),
    # wrn_40_2 -> wrn_40_1: half the channels
    "wrn40x2_wrn40x1": ([(16, 32, 32), (32, 32, 32), (64, 16, 16), (128, 8, 8), (128,)],
                        [(16, 32, 32), (16, 32, 32), (32, 16, 16), (64, 8, 8), (64,)]),
    # wrn_40_2 -> a student at half the resolution (exercises pooling and the deconv regressor)
    "wrn40x2_halfres": ([(16, 32, 32), (32, 32, 32), (64, 16, 16), (128, 8, 8), (128,)],
                        [(16, 16, 16), (32, 16, 16), (64, 8, 8), (128, 4, 4), (128,)]),
}


# one set of values for every method built here; each takes the options it declares
SHARED_VALUES = dict(kd_T=4, feat_dim=128, hint_layer=2, dkd_alpha=1.0, dkd_beta=8.0, dkd_warmup=20)


def fake_options(name, **kw):
    return options_among(name, **{**SHARED_VALUES, **kw})


def fake_feats(shapes, batch, gen, requires_grad=False):
    return [torch.randn(batch, *s, generator=gen).requires_grad_(requires_grad) for s in shapes]


def build(name, pair, **opt_kw):
    t_shapes, s_shapes = PAIRS[pair]
    g = torch.Generator().manual_seed(0)
    ctx = DistillContext(options=fake_options(name, **opt_kw), student=nn.Identity(), teacher=nn.Identity(),
                         feat_s=fake_feats(s_shapes, 2, g), feat_t=fake_feats(t_shapes, 2, g))
    return build_distiller(name, ctx)


def random_outputs(pair, batch=4, seed=1):
    t_shapes, s_shapes = PAIRS[pair]
    g = torch.Generator().manual_seed(seed)
    out_s = Outputs(torch.randn(batch, 100, generator=g).requires_grad_(),
                    fake_feats(s_shapes, batch, g, requires_grad=True))
    # teacher tensors require grad here on purpose: the distiller must not send any to them
    out_t = Outputs(torch.randn(batch, 100, generator=g).requires_grad_(),
                    fake_feats(t_shapes, batch, g, requires_grad=True))
    y = torch.randint(0, 100, (batch,), generator=g)
    return out_s, out_t, Batch(x=torch.zeros(batch, 3, 32, 32), y=y, index=torch.arange(batch))
