"""BYOT's multi-exit ResNets (models/multi_resnet.py): shapes, forward forms, heads."""
import pytest
import torch

from models.multi_resnet import BYOT_MODELS, drop_unused_downsample, multi_resnet18_kd, multi_resnet50_kd


def test_registered_names():
    assert set(BYOT_MODELS) == {"multi_resnet18_kd", "multi_resnet50_kd"}


@pytest.mark.parametrize("ctor,width", [(multi_resnet18_kd, 512), (multi_resnet50_kd, 2048)])
def test_reference_outputs_have_the_spec_shapes(ctor, width):
    torch.manual_seed(0)
    model = ctor(num_classes=100).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        out = model.byot_outputs(x)
        feats, logits = model(x, is_feat=True)
    assert len(out) == 8
    assert [tuple(t.shape) for t in out[:4]] == [(1, 100)] * 4
    assert [tuple(t.shape) for t in out[4:]] == [(1, width, 1, 1)] * 4
    assert all((t >= 0).all() for t in out[4:])  # post-ReLU, pooled
    assert torch.equal(logits, out[0])
    assert [tuple(f.shape[1:]) for f in feats] == [(64, 32, 32), (width // 8, 32, 32), (width // 4, 16, 16),
                                                   (width // 2, 8, 8), (width, 4, 4), (width,)]


def test_forward_forms_agree(r18):
    x = torch.randn(2, 3, 32, 32)
    r18.eval()
    with torch.no_grad():
        out = r18.byot_outputs(x)
        exits = r18.exit_logits(x)
        assert torch.equal(r18(x), out[0])
    assert torch.equal(exits[-1], out[0]) and all(torch.equal(a, b) for a, b in zip(exits[:3], out[1:4]))


def test_branch_heads_follow_the_spec(r18):
    # bottleneck 1x1 -> kxk stride k -> 1x1 with BN+ReLU after each conv, biases kept; mid = out / 4
    for k, (cin, stride) in enumerate([(64, 8), (128, 4), (256, 2)], start=1):
        seq = getattr(r18, f"bottleneck{k}_1")
        convs = [m for m in seq if isinstance(m, torch.nn.Conv2d)]
        assert [(c.in_channels, c.out_channels, c.kernel_size[0], c.stride[0]) for c in convs] == [
            (cin, 128, 1, 1), (128, 128, stride, stride), (128, 512, 1, 1)]
        assert all(c.bias is not None for c in convs)
        assert [type(m).__name__ for m in seq] == ["Conv2d", "BatchNorm2d", "ReLU"] * 3


def test_unused_downsample_modules_are_optional(r18):
    ref = multi_resnet18_kd(num_classes=10, unused_downsample=True)
    extra = set(ref.state_dict()) - set(r18.state_dict())
    assert extra and all(k.split(".")[0] in ("downsample1_1", "downsample2_1", "downsample3_1") for k in extra)
    assert set(r18.state_dict()) <= set(ref.state_dict())
    # the reference's registration order (parameters() order) is kept, minus the dead modules
    names = [n for n, _ in ref.named_parameters() if n.split(".")[0] not in ("downsample1_1", "downsample2_1",
                                                                               "downsample3_1")]
    assert names == [n for n, _ in r18.named_parameters()]
    # a reference-trained state dict (DataParallel prefix, dead modules) loads after dropping them
    sd = {"module." + k: v for k, v in ref.state_dict().items()}
    cleaned = {k[len("module."):]: v for k, v in drop_unused_downsample(sd).items()}
    r18_copy = multi_resnet18_kd(num_classes=10)
    r18_copy.load_state_dict(cleaned, strict=True)
    x = torch.randn(2, 3, 32, 32)
    ref.eval(), r18_copy.eval()
    with torch.no_grad():
        assert all(torch.allclose(a, b) for a, b in zip(ref.exit_logits(x), r18_copy.exit_logits(x)))
