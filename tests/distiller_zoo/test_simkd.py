"""SimKD (--distill simkd): projector sizes of the spec, the teacher's true classifier input as target, the
reused frozen classifier, the deployed network and its rebuild from a checkpoint entry."""
import pytest
import torch
import torch.nn.functional as F

from assembly.options import parse_student_options
from distiller_zoo import POST
from distiller_zoo.SimKD import SimKD, classify, projector
from engine.forward import forward
from helper.types import Batch
from models import build_model
from tests.methods import built_method


def _params(module):
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("s_channels,factor,count", [(256, 2, 214016), (256, 4, 70400), (256, 8, 26240),
                                                     (512, 2, 246784), (512, 4, 86784), (512, 8, 34432)])
def test_projector_parameters_of_the_spec(s_channels, factor, count):
    # resnet8x4 (256) and vgg8 (512) students of a resnet32x4 teacher (256)
    assert _params(projector(s_channels, 256, factor)) == count


def test_the_method_builds_the_spec_projector_for_resnet32x4_to_resnet8x4():
    _, _, d = built_method("simkd", student="resnet8x4", teacher="resnet32x4", num_classes=100)
    assert [_params(m) for m in d.trainable_modules()] == [214016]
    assert d.source_size is None and d.target_size is None


def _outputs(s, t, x):
    return forward(s, x, POST), forward(t, x, POST)


def test_the_teacher_map_is_pooled_to_a_smaller_student_map():
    # vgg8 (512 @ 4x4) from resnet32x4 (256 @ 8x8): the teacher's map is pooled to 4x4
    s, t, d = built_method("simkd", student="vgg8", teacher="resnet32x4", num_classes=100)
    assert d.target_size == (4, 4) and d.source_size is None
    x = torch.randn(2, 3, 32, 32)
    out_s, out_t = _outputs(s, t, x)
    assert torch.allclose(d.teacher_target(out_t), F.adaptive_avg_pool2d(out_t.feats[-2], 4))


@pytest.mark.parametrize("teacher,student,channels", [("wrn_40_2", "resnet8", 128), ("ShuffleV2", "resnet8", 1024),
                                                      ("MobileNetV2", "wrn_16_2", 1280)])
def test_the_target_is_what_the_teachers_classifier_pools(teacher, student, channels):
    # spec FIX 3: for WRN, MobileNetV2 and ShuffleV2 teachers feat[-2] is not the classifier's input; the reused
    # classifier applied to the target reproduces the teacher's own logits
    s, t, d = built_method("simkd", student=student, teacher=teacher, num_classes=100)
    x = torch.randn(2, 3, 32, 32)
    out_s, out_t = _outputs(s, t, x)
    target = d.teacher_map(out_t.feats[-2])
    assert target.shape[1] == channels == d.projector[6].out_channels
    assert torch.allclose(classify(d.classifier, target), out_t.logits, atol=1e-4)
    if student == "resnet8" and teacher == "ShuffleV2":
        # the student's 8x8 map is pooled to the teacher's 4x4 before the projector
        assert d.source_size == (4, 4)


def test_loss_terms_and_the_prediction_through_the_teachers_classifier():
    s, t, d = built_method("simkd", student="resnet8", teacher="wrn_16_2", num_classes=10)
    s.eval()
    d.eval()
    x = torch.randn(4, 3, 32, 32)
    y = torch.tensor([1, 2, 3, 4])
    out_s, out_t = _outputs(s, t, x)
    batch = Batch(x, y, torch.arange(4))
    terms, logits = d.step_loss(out_s, out_t, batch, 1)
    projected = d.projector(out_s.feats[-2])
    target = F.relu(t.bn1(out_t.feats[-2]))
    assert terms["kd"].item() == pytest.approx(F.mse_loss(projected, target).item(), rel=1e-5)
    # CE and KL on the student's own logits, as the reference (weighted 0 by SimKD's -r 0 -a 0)
    assert terms["ce"].item() == pytest.approx(F.cross_entropy(out_s.logits, y).item(), rel=1e-6)
    assert "kl" in terms
    # the training accuracy counts the deployed network's prediction
    assert torch.allclose(logits, d.deployed(s)(x), atol=1e-5)
    assert torch.allclose(logits, t.fc(projected.mean(dim=(2, 3))), atol=1e-5)
    assert d.loss(out_s, out_t, batch, 1).keys() == terms.keys()


def test_the_reused_classifier_is_a_frozen_copy_and_only_the_projector_trains():
    s, t, d = built_method("simkd", student="resnet8", teacher="resnet20", num_classes=10)
    assert d.trainable_modules() == [d.projector]
    assert d.classifier is not t.fc and torch.equal(d.classifier.weight, t.fc.weight)
    assert not any(p.requires_grad for p in d.classifier.parameters())
    x = torch.randn(2, 3, 32, 32)
    out_s, out_t = _outputs(s, t, x)
    terms, logits = d.step_loss(out_s, out_t, Batch(x, torch.tensor([0, 1]), torch.arange(2)), 1)
    (terms["kd"] + logits.sum()).backward()
    assert all(p.grad is None for p in d.classifier.parameters())
    assert all(p.grad is None for p in t.parameters())
    assert all(p.grad is not None for p in d.projector.parameters())
    # the teacher's weights are not part of the method's state
    assert set(k.split(".")[0] for k in d.state_dict()) == {"projector", "classifier"}


def test_the_deployed_network_rebuilds_from_the_checkpoint_entry():
    s, t, d = built_method("simkd", student="resnet8", teacher="ShuffleV2", num_classes=10)
    with torch.no_grad():
        for p in d.projector.parameters():
            p.add_(0.01 * torch.randn_like(p))
    entry = d.deploy_state()
    assert entry["method"] == "simkd" and entry["source_size"] == [4, 4]
    fresh = build_model("resnet8", num_classes=10)
    fresh.load_state_dict(s.state_dict())
    rebuilt = SimKD.deployed_from(fresh, entry)
    deployed = d.deployed(s)
    deployed.eval()
    rebuilt.eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), deployed(x))
    # student + projector + the teacher's classifier (1024 -> 10)
    assert _params(rebuilt) == _params(s) + _params(d.projector) + 1024 * 10 + 10


def test_defaults_and_the_factor_flag():
    opt = parse_student_options(["--distill", "simkd"])
    assert (opt.gamma, opt.alpha, opt.beta, opt.factor) == (0.0, 0.0, 1.0, 2)
    assert parse_student_options(["--distill", "simkd", "-f", "4"]).factor == 4
    _, _, d = built_method("simkd", student="resnet8x4", teacher="resnet32x4", num_classes=100, factor=8)
    assert _params(d.projector) == 26240


def test_a_factor_beyond_the_teachers_width_is_refused():
    with pytest.raises(ValueError, match="--factor must lie in 1..64"):
        built_method("simkd", student="resnet8", teacher="resnet20", factor=65)
    with pytest.raises(ValueError, match="--factor"):
        built_method("simkd", student="resnet8", teacher="resnet20", factor=0)
