"""Every loss computes in float32 whatever precision the networks ran in (issue #10, the CUDA path).

Called directly with bf16 (channels-last) inputs and no autocast, each RepDistiller-compatible loss upcasts
on entry: a float32 result equal to the loss of the upcast inputs and close to the float32 loss. Under
autocast, the training step runs the method's loss with autocast off on float32 outputs.
"""
import copy
from types import SimpleNamespace

import pytest
import torch

from crd.criterion import CRDLoss
from distiller_zoo import (ABLoss, Attention, Correlation, DistillKL, DKDLoss, FactorTransfer, FSP, HintLoss, KDSVD,
                           NSTLoss, PKT, RKDLoss, Similarity, VIDLoss, ickd_loss, kd_kl, milestone_loss,
                           normalize_logits)
from distiller_zoo.base import Batch, Outputs, float32_outputs
from engine.step import StudentStep
from tests.methods import built_method

B = 8


def maps(*shapes, seed=0):
    """Non-negative (post-ReLU-like) feature maps in channels-last, as the networks produce them on CUDA."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, *s, generator=g).relu().contiguous(memory_format=torch.channels_last) for s in shapes]


def vectors(dim, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, dim, generator=g)


def total(result):
    return sum(result) if isinstance(result, (list, tuple)) else result


def crd_loss():
    torch.manual_seed(0)
    return CRDLoss(SimpleNamespace(s_dim=16, t_dim=24, feat_dim=8, n_data=40, nce_k=5, nce_t=0.07, nce_m=0.5))


TARGET = torch.arange(B) % 10
CRD_IDX = torch.arange(B)
CRD_CONTRAST = (torch.arange(B)[:, None] + torch.arange(6)[None, :] * 3) % 40

# name -> (loss callable, float32 inputs); a fresh deep copy of the callable (modules with state: a fresh
# module) is used for each evaluation
CASES = {
    "DistillKL": (DistillKL(4), [vectors(10, 1), vectors(10, 2)]),
    "kd_kl": (lambda s, t: kd_kl(s, t, 4.0), [vectors(10, 1), vectors(10, 2)]),
    "HintLoss": (HintLoss(), maps((16, 4, 4), (16, 4, 4))),
    "Attention": (lambda s, t: Attention()([s], [t]), maps((16, 8, 8), (32, 4, 4))),
    "Similarity": (lambda s, t: Similarity()([s], [t]), maps((16, 4, 4), (32, 4, 4))),
    "Correlation": (Correlation(), [vectors(16, 1), vectors(16, 2)]),
    "VIDLoss": (VIDLoss(16, 24, 24), maps((16, 4, 4), (24, 4, 4))),
    "RKDLoss": (RKDLoss(), [vectors(16, 1), vectors(24, 2)]),
    "PKT": (PKT(), [vectors(16, 1), vectors(16, 2)]),
    "ABLoss": (lambda s1, s2, t1, t2: ABLoss(2)([s1, s2], [t1, t2]),
               [m - 0.5 for m in maps((8, 8, 8), (16, 4, 4), (8, 8, 8), (16, 4, 4))]),
    "FactorTransfer": (FactorTransfer(), maps((16, 8, 8), (16, 4, 4))),
    "KDSVD": (lambda s1, s2, t1, t2: KDSVD(1)([s1, s2], [t1, t2]), maps((8, 8, 8), (8, 4, 4), (8, 8, 8), (8, 4, 4))),
    "FSP": (lambda s1, s2, t1, t2: FSP([s1.shape, s2.shape], [t1.shape, t2.shape])([s1, s2], [t1, t2]),
            maps((8, 8, 8), (16, 4, 4), (8, 8, 8), (16, 4, 4))),
    "NSTLoss": (lambda s, t: NSTLoss()([s], [t]), maps((16, 8, 8), (24, 4, 4))),
    "CRDLoss": (lambda s, t: crd_loss()(s, t, CRD_IDX, CRD_CONTRAST), [vectors(16, 1), vectors(24, 2)]),
    "DKDLoss": (lambda s, t: DKDLoss()(s, t, TARGET, 30), [vectors(10, 1), vectors(10, 2)]),
    "ickd_loss": (ickd_loss, maps((16, 4, 4), (16, 8, 8))),
    "normalize_logits": (lambda z: normalize_logits(z).square().mean(), [vectors(10, 1) * 3]),
    "milestone_loss": (lambda s1, t1: milestone_loss([None, s1], [None, t1], [1.0], 4.0), maps((16, 4, 4), (16, 4, 4))),
}


def evaluate(name, inputs):
    fn, _ = CASES[name]
    return total(copy.deepcopy(fn)(*inputs))


@pytest.mark.parametrize("name", sorted(CASES))
def test_bf16_inputs_give_a_float32_loss_close_to_the_float32_one(name):
    inputs = CASES[name][1]
    low = [x.to(torch.bfloat16) for x in inputs]
    assert all(x.is_contiguous(memory_format=torch.channels_last) for x in low if x.dim() == 4)
    got = evaluate(name, low)
    assert got.dtype == torch.float32
    # computed entirely in float32 from the upcast inputs: the same number as the loss of those inputs
    upcast = evaluate(name, [x.float() for x in low])
    assert torch.equal(got, upcast)
    reference = evaluate(name, inputs)
    assert got.item() == pytest.approx(reference.item(), rel=3e-2, abs=1e-4)


# float32 modules (VID, CRD) and the functions that already cast to float32 themselves
DOWNCASTS_FLOAT64 = {"VIDLoss", "CRDLoss", "ickd_loss", "milestone_loss"}


@pytest.mark.parametrize("name", sorted(set(CASES) - DOWNCASTS_FLOAT64))
def test_the_upcast_leaves_float64_inputs_in_float64(name):
    # only lower precisions are upcast: the float64 hand computations of the per-method tests stay exact
    inputs = CASES[name][1]
    assert evaluate(name, [x.double() for x in inputs]).dtype == torch.float64


def test_float32_outputs_pass_float32_tensors_through_as_the_same_objects():
    out = Outputs(torch.randn(2, 3), [torch.randn(2, 4, 2, 2), torch.randn(2, 4)])
    same = float32_outputs(out)
    assert same.logits is out.logits and all(a is b for a, b in zip(same.feats, out.feats))
    low = float32_outputs(Outputs(out.logits.bfloat16(), [f.bfloat16() for f in out.feats]))
    assert low.logits.dtype == torch.float32 and all(f.dtype == torch.float32 for f in low.feats)


def test_ickd_under_cpu_autocast_computes_its_gram_matrices_in_float32():
    # CPU (as CUDA) autocast runs bmm in bf16, so ICKD's Gram matrices came out bf16 despite .float()
    student, teacher, ickd = built_method("ickd")
    x = torch.randn(4, 3, 32, 32)
    seen = {}
    method_loss = ickd.loss

    def recording_loss(out_s, out_t, batch, epoch):
        seen.update(autocast=torch.is_autocast_enabled("cpu"), logits=out_s.logits.dtype,
                    feats={f.dtype for f in out_s.feats + out_t.feats})
        return method_loss(out_s, out_t, batch, epoch)

    ickd.loss = recording_loss
    step = StudentStep(student, ickd)
    with torch.no_grad():
        f_t, z_t = teacher(x, is_feat=True)
    batch = Batch(x, torch.arange(4) % 10, torch.arange(4))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out_t = Outputs(z_t.bfloat16(), [f.bfloat16() for f in f_t])
        loss, terms, _ = step(x, out_t, batch, 1, {"ce": 1.0, "kl": 0.0, "kd": 2.5})
    assert seen == {"autocast": False, "logits": torch.float32, "feats": {torch.float32}}
    assert terms["kd"].dtype == torch.float32 and loss.dtype == torch.float32
    # the same number as the loss of the upcast outputs computed without any autocast
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        f_s, z_s = student(x, is_feat=True)
    out_s = Outputs(z_s.float(), [f.float() for f in f_s])
    expected = ickd.loss(out_s, Outputs(z_t.bfloat16().float(), [f.bfloat16().float() for f in f_t]), batch, 1)
    assert terms["kd"].item() == pytest.approx(expected["kd"].item(), rel=1e-6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = method_loss(Outputs(z_s, list(f_s)), out_t, batch, 1)  # the old call: Gram matrices in bf16
    assert mixed["kd"].item() != pytest.approx(expected["kd"].item(), rel=1e-6)
