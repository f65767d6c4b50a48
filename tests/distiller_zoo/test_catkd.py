"""CAT-KD: the spec's worked example, class activation maps of pairs of different widths and resolutions, the
bias-free student classifier, the per-pair settings, refusals and one run from the CLI."""
import os

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from assembly.options import parse_configurations, parse_student_options
from distiller_zoo import DistillContext, build_distiller
from distiller_zoo.CATKD import CATKD, PAIR_SETTINGS, cat_loss, classifier_of, pooled_cams
from engine.forward import forward, teacher_outputs
from helper.types import Batch
from models import build_model
from tests.distiller_zoo.model_pairs import PAIRS, built_pair, pair_outputs
from tests.methods import distill_one_epoch, method_options


def test_the_worked_example_with_and_without_normalisation():
    # spec 2.5: CAM_s = (0..31)/32 as 1x2x4x4, CAM_t = CAM_s flipped along the width, r = 2
    cam_s = (torch.arange(32, dtype=torch.float32) / 32).reshape(1, 2, 4, 4)
    cam_t = cam_s.flip(3)
    assert cat_loss(cam_s, cam_t, 2, False).item() == pytest.approx(0.00390625, rel=1e-5)
    assert cat_loss(cam_s, cam_t, 2, True).item() == pytest.approx(0.0077043, rel=1e-5)
    # by hand: each 2x2 block mean of a row pair [a, a+1 | a+2, a+3] (+4 for the next row) is swapped with its
    # mirror, which differs by 2/32 in every position: (1/16)^2
    assert cat_loss(cam_s, cam_t, 2, False).item() == pytest.approx((2 / 32) ** 2, rel=1e-6)


@pytest.mark.parametrize("size,r", [(8, 2), (4, 4), (7, 3), (2, 4)])
def test_pooled_cams_equal_the_classifier_as_a_1x1_conv_then_pooled(size, r):
    # the reference applies the classifier as a 1x1 convolution to the map and pools the CAMs; pooling first is
    # the same linear map (also where r exceeds the map, as for MobileNetV2's 2x2 head at r = 4)
    g = torch.Generator().manual_seed(0)
    fmap, weight = torch.randn(3, 6, size, size, generator=g), torch.randn(5, 6, generator=g)
    full = F.conv2d(fmap, weight[:, :, None, None])
    assert torch.allclose(pooled_cams(fmap, weight, r), F.adaptive_avg_pool2d(full, r), atol=1e-5)


def built(teacher_name, student_name, **options):
    student, teacher, d = built_pair("catkd", teacher_name, student_name, **options)
    with torch.no_grad():  # a trained teacher's classifier has a bias (a fresh one's is initialised to 0)
        classifier_of(teacher, "teacher").bias.normal_()
    return student, teacher, d


# (teacher, student, r): pooled maps of 128/64, 256/1024 and 512/1280 channels at 8x8/8x8, 8x8/4x4 and 4x4/2x2
PAIRS = [(t, s, r) for (t, s), r in zip(PAIRS, (2, 4, 2))]


@pytest.mark.parametrize("teacher_name,student_name,r", PAIRS, ids=[f"{t}-{s}" for t, s, _ in PAIRS])
def test_cams_of_pairs_of_different_widths_and_resolutions(teacher_name, student_name, r):
    student, teacher, d = built(teacher_name, student_name, cat_resolution=r)
    out_s, out_t = pair_outputs(student, teacher, batch=4)  # the teacher's as the loop makes them
    cam_s, cam_t = d.cams(out_s, out_t)
    assert cam_s.shape == cam_t.shape == (4, 100, r, r)
    # the CAMs average to the logits: the student's exactly (its bias is zero), the teacher's without its bias
    assert torch.allclose(cam_s.mean(dim=(2, 3)), out_s.logits, atol=1e-4)
    bias_t = classifier_of(teacher, "teacher").bias
    assert bias_t.abs().sum() > 0
    assert torch.allclose(cam_t.mean(dim=(2, 3)), out_t.logits - bias_t, atol=1e-4)
    loss = cat_loss(cam_s, cam_t, r, True)
    loss.backward()
    assert cam_t.grad_fn is None and not cam_t.requires_grad
    assert classifier_of(student, "student").weight.grad.abs().sum() > 0
    assert d.state_dict() == {} and list(d.parameters()) == []


def test_the_student_classifier_is_bias_free_and_stays_so_while_the_teachers_keeps_its_bias():
    # spec 5, structural check 11
    student, teacher, d = built("resnet14", "resnet8")
    fc_s, fc_t = student.fc, teacher.fc
    assert torch.equal(fc_s.bias, torch.zeros(100)) and not fc_s.bias.requires_grad
    assert fc_t.bias.abs().sum() > 0
    assert "fc.bias" in student.state_dict()  # RepDistiller's keys: the checkpoint loads into the plain model
    optimizer = torch.optim.SGD(student.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([1, 2, 3, 4])
    student.train()
    for _ in range(2):
        out_s = forward(student, x, "post")
        out_t = teacher_outputs(teacher, x, ["post"])["post"]
        terms = d.loss(out_s, out_t, Batch(x, y, torch.arange(4)), 1)
        optimizer.zero_grad()
        (terms["ce"] + 15 * terms["kd"]).backward()
        optimizer.step()
    assert torch.equal(fc_s.bias, torch.zeros(100))


def test_per_pair_settings_and_cfg_defaults():
    assert CATKD.defaults_for("resnet32x4", "resnet8x4") == {"beta": 15.0, "cat_resolution": 2,
                                                             "cat_normalize": False}
    assert CATKD.defaults_for("resnet32x4", "ShuffleV2") == {"beta": 600.0, "cat_resolution": 4,
                                                             "cat_normalize": True}
    assert CATKD.defaults_for("vgg13", "MobileNetV2")["beta"] == 15.0
    assert CATKD.defaults_for("resnet8", "resnet8") == {} and CATKD.defaults_for(None, "resnet8") == {}
    assert len(PAIR_SETTINGS) == 11
    run = parse_student_options(["--distill", "catkd"])
    assert (run.gamma, run.alpha, run.beta, run.cat_resolution, run.cat_normalize) == (1.0, 0.0, 400.0, 2, True)
    run = parse_student_options(["--distill", "catkd", "--cat_resolution", "4", "--cat_normalize", "0"])
    assert (run.cat_resolution, run.cat_normalize) == (4, False)
    # through the parser: the pair's preset beats the cfg default and loses to a flag, and the run says where
    pair = ["--distill", "catkd", "--model_t", "resnet32x4", "--model_s", "ShuffleV2", "--path_t", "t.pth"]
    config = parse_configurations(pair)[0]
    assert (config.options.beta, config.options.cat_resolution, config.options.cat_normalize) == (600.0, 4, True)
    assert config.sources["beta"] == "--distill catkd (resnet32x4 -> ShuffleV2)"
    assert "cat_resolution=4" in config.describe()
    run = parse_configurations(pair + ["-b", "50", "--cat_resolution", "2"])[0].options
    assert (run.beta, run.cat_resolution, run.cat_normalize, run.learning_rate) == (50.0, 2, True, 0.01)


class NoClassifier(nn.Module):
    def pooled_map_module(self):
        return None

    def classifier_module(self):
        raise AttributeError("'NoClassifier' object has no attribute 'fc'")


class TwoLayerClassifier(NoClassifier):
    def classifier_module(self):
        return nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 100))


def test_refusals_name_the_reason():
    with pytest.raises(ValueError, match="--cat_resolution must be at least 1, got 0"):
        built("resnet8", "resnet8", cat_resolution=0)
    student = build_model("resnet8")
    ctx = DistillContext(method_options("catkd"), student, NoClassifier(), [], [])
    with pytest.raises(ValueError, match="needs the teacher's classifier to form class activation maps; "
                                         "NoClassifier does not name it"):
        build_distiller("catkd", ctx)
    ctx = DistillContext(method_options("catkd"), student, TwoLayerClassifier(), [], [])
    with pytest.raises(ValueError, match="it must be one linear layer; Sequential holds 2"):
        build_distiller("catkd", ctx)
    ctx = DistillContext(method_options("catkd"), student, build_model("resnet8", num_classes=10), [], [])
    with pytest.raises(ValueError, match="the student has 100 classes, the teacher 10"):
        build_distiller("catkd", ctx)


@pytest.mark.slow
def test_one_epoch_from_the_command_line_saves_a_bias_free_student(tiny_cifar, tmp_path):
    res, state = distill_one_epoch(tiny_cifar, tmp_path, "--distill", "catkd", "--cat_resolution", "4")
    assert os.path.basename(res["run_dir"]) == "S_resnet8_T_resnet8_cifar100_catkd_r_1.0_a_0.0_b_400.0_1"
    assert state["opt"]["cat_resolution"] == 4 and state["opt"]["cat_normalize"] is True
    assert torch.equal(state["model"]["fc.bias"], torch.zeros(100))
    assert state["distiller"] == {}
