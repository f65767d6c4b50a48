"""engine/forward.py: one forward serves every feature kind a step asks for, and the teacher's outputs can be
saved for backward."""
import torch

from distiller_zoo import POST, PRE
from engine.forward import forward, network_outputs, teacher_outputs
from models import build_model


def network():
    torch.manual_seed(0)
    return build_model("resnet8", num_classes=10).eval()


def test_both_feature_lists_come_from_one_forward_and_equal_the_single_list_calls():
    model, x = network(), torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        outs = network_outputs(model, x, [None, POST, PRE])
        post, pre = forward(model, x, POST), forward(model, x, PRE)
        logits = forward(model, x).logits
    assert set(outs) == {None, POST, PRE}
    assert outs[None].feats is None and torch.equal(outs[None].logits, logits)
    assert len(outs[POST].feats) == len(post.feats) and len(outs[PRE].feats) == len(pre.feats)
    assert all(torch.equal(a, b) for a, b in zip(outs[POST].feats, post.feats))
    assert all(torch.equal(a, b) for a, b in zip(outs[PRE].feats, pre.feats))
    # RepDistiller's preact maps are taken before the last ReLU: some entries are negative, unlike POST's
    assert (pre.feats[1] < 0).any() and not (post.feats[1] < 0).any()


def test_teacher_outputs_leave_inference_mode_and_share_one_copy_per_tensor():
    model, x = network(), torch.randn(2, 3, 32, 32)
    outs = teacher_outputs(model, x, [None, POST])
    assert not torch.is_inference(outs[None].logits) and not any(torch.is_inference(f) for f in outs[POST].feats)
    assert outs[None].logits is outs[POST].logits  # one copy of the logits both kinds share
    with torch.no_grad():
        assert torch.equal(outs[None].logits, model(x))
