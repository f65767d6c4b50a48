"""Channels-last stays channels-last: ShuffleV2's channel shuffle and the method's own modules (issue #10)."""
from types import SimpleNamespace

import pytest
import torch

from assembly.options import parse_configurations
from assembly.student import build_student_side
from dataset.core import TensorImageSet
from engine.teacher import Teacher
from models import build_model
from models.ShuffleNetv2 import ShuffleBlock

CL = torch.channels_last


@pytest.mark.parametrize("shape", [(2, 8, 4, 4), (3, 12, 5, 7), (2, 6, 1, 1)])
def test_channel_shuffle_keeps_the_input_memory_format_and_values(shape):
    x = torch.randn(*shape)
    nchw = ShuffleBlock(2)(x)
    out = ShuffleBlock(2)(x.contiguous(memory_format=CL))
    assert out.is_contiguous(memory_format=CL)
    assert torch.equal(out, nchw)
    # by hand: output channel 2k+j is input channel j*c/2+k
    c = shape[1]
    assert torch.equal(nchw[:, 1], x[:, c // 2]) and torch.equal(nchw[:, 2], x[:, 1])
    assert nchw.is_contiguous()


def test_shufflev2_output_is_unchanged_in_channels_last():
    torch.manual_seed(0)
    model = build_model("ShuffleV2", num_classes=10).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        feats, logits = model(x, is_feat=True)
        model_cl = model.to(memory_format=CL)
        feats_cl, logits_cl = model_cl(x.contiguous(memory_format=CL), is_feat=True)
    assert torch.allclose(logits_cl, logits, rtol=1e-4, atol=1e-5)
    assert all(f.is_contiguous(memory_format=CL) for f in feats_cl if f.dim() == 4 and f.shape[-1] > 1)


def data_bundle(n=20):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    return SimpleNamespace(train=TensorImageSet(images, torch.arange(n) % 10, [0.5] * 3, [0.25] * 3),
                           num_classes=10)


@pytest.mark.parametrize("channels_last", ["1", "0"])
def test_the_distillers_modules_follow_the_networks_memory_format(channels_last):
    opt = parse_configurations(["--model_s", "resnet8", "--distill", "factor", "--path_t", "t.pth",
                                "--device", "cpu", "--channels_last", channels_last])[0].options
    teacher = Teacher.of(build_model("resnet8", num_classes=10))
    student, distiller = build_student_side(opt, data_bundle(), torch.device("cpu"), teacher)
    # (a 1x1 kernel is both NCHW- and channels-last-contiguous, so only larger kernels tell)
    kernels = [p for p in distiller.parameters() if p.dim() == 4 and p.shape[-1] > 1]
    assert kernels  # FT's paraphraser and translator
    want_cl = channels_last == "1"
    assert all(p.is_contiguous(memory_format=CL) == want_cl for p in kernels)
    conv = next(p for p in student.parameters() if p.dim() == 4 and p.shape[-1] > 1)
    assert conv.is_contiguous(memory_format=CL) == want_cl  # the same decision as the student's
