"""OFD (--distill ofd): margins and the partial L2 against the spec's worked examples, stage pairing and weights,
connector sizes, ShuffleNet teachers, the teacher's train-mode default and the refusals."""
import pytest
import torch
import torch.nn.functional as F

from assembly.options import parse_configurations, parse_student_options
from distiller_zoo import PRE
from distiller_zoo.base import DistillContext
from distiller_zoo.OFD import OFD, ofd_elementwise, ofd_margin
from engine.forward import forward
from helper.types import Batch
from models import build_model
from tests.methods import built_method


def test_margins_of_the_spec():
    weight = torch.tensor([1.0, 0.5, 2.0, 0.1])
    bias = torch.tensor([0.0, 1.0, -1.0, 1.0])
    # E[x | x < 0] of N(bias, weight^2); the last has P(x < 0) = Phi(-10) <= 0.001, so -3 * 0.1
    assert ofd_margin(weight, bias).tolist() == pytest.approx([-0.797885, -0.186608, -2.018321, -0.3], abs=1e-6)
    # the sign of the BN weight does not matter; a zero weight is the constant bias
    assert ofd_margin(torch.tensor([-1.0]), torch.tensor([0.0])).item() == pytest.approx(-0.797885, abs=1e-6)
    assert ofd_margin(torch.tensor([0.0, 0.0]), torch.tensor([-0.5, 2.0])).tolist() == [-0.5, 0.0]


def test_partial_l2_of_the_spec():
    m = torch.tensor(-0.797885)
    s = torch.tensor([-1.0, 0.5, -0.2, 0.3, 1.0])
    t = torch.tensor([-2.0, -2.0, -0.5, -0.1, 0.4])
    # (s, t) = (-1, -2): both below the margin, nothing; (0.5, -2): pulled down to the margin; (-0.2, -0.5),
    # (0.3, -0.1): above a negative target between margin and 0; (1, 0.4): positive target, plain L2
    assert ofd_elementwise(s, t, m).tolist() == pytest.approx([0.0, 1.684505, 0.09, 0.16, 0.36], abs=1e-6)
    # below a non-positive target nothing is asked
    assert ofd_elementwise(torch.tensor([-0.6]), torch.tensor([-0.5]), m).item() == 0.0


def test_connector_parameters_for_resnet32x4_to_resnet8x4_are_the_spec_count():
    _, _, d = built_method("ofd", student="resnet8x4", teacher="resnet32x4", num_classes=100)
    assert sum(p.numel() for m in d.trainable_modules() for p in m.parameters()) == 86912
    assert d.stage_weights == [0.25, 0.5, 1.0]


def test_the_loss_sums_the_weighted_stages_of_pooled_teacher_maps():
    # vgg8's maps (16, 8, 4, 4 pixels) against resnet32x4's (32, 16, 8): its deepest three, teacher pooled
    s, t, d = built_method("ofd", student="vgg8", teacher="resnet32x4", num_classes=100)
    assert d.stages == 3
    x = torch.randn(3, 3, 32, 32)
    s.eval()
    out_s, out_t = forward(s, x, PRE), forward(t, x, PRE)
    d.eval()
    expected = 0.0
    for i, (w, s_map, t_map) in enumerate(zip([0.25, 0.5, 1.0], out_s.feats[2:-1], out_t.feats[1:-1])):
        source = d.connectors[i](s_map)
        target = F.adaptive_avg_pool2d(t_map, source.shape[-2:])
        expected += w * ofd_elementwise(source, target, d.margins[i]).sum().item() / 3
    batch = Batch(x, torch.zeros(3, dtype=torch.long), torch.arange(3))
    assert d.method_loss(out_s, out_t, batch, 1).item() == pytest.approx(expected, rel=1e-5)


def test_margins_come_from_the_teachers_last_bns_by_the_last_k_rule():
    # ResNet50 names four BNs (layer1..4); with a three-stage student the deepest three pair up (spec FIX 4)
    _, t, d = built_method("ofd", student="resnet8", teacher="ResNet50", num_classes=100)
    bns = t.get_bn_before_relu()[-3:]
    for margin, bn in zip(d.margins, bns):
        assert torch.equal(margin.flatten(), ofd_margin(bn.weight, bn.bias))
    assert [c[0].out_channels for c in d.connectors] == [512, 1024, 2048]


def test_imagenet_resnets_distill_the_three_stages_whose_bns_the_teacher_names():
    # mdistiller's ImageNet ResNet names the BNs of layer2..4: OFD distills those three stages of four
    teacher = build_model("ResNet34", num_classes=1000, family="imagenet")
    student = build_model("ResNet18", num_classes=1000, family="imagenet")
    torch.manual_seed(0)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        feat_s, feat_t = forward(student.eval(), x, PRE).feats, forward(teacher.eval(), x, PRE).feats
    d = OFD(DistillContext(OFD.select_options(parse_student_options(["--distill", "ofd"])), student, teacher,
                           list(feat_s), list(feat_t), num_classes=1000, device=torch.device("cpu")))
    assert d.stages == 3 and d.stage_weights == [0.25, 0.5, 1.0]
    assert [c[0].out_channels for c in d.connectors] == [128, 256, 512]
    for margin, bn in zip(d.margins, teacher.get_bn_before_relu()):
        assert torch.equal(margin.flatten(), ofd_margin(bn.weight, bn.bias))


@pytest.mark.parametrize("teacher,student", [("wrn_40_2", "resnet8"), ("resnet32x4", "ShuffleV2"),
                                             ("vgg13", "MobileNetV2"), ("ShuffleV1", "resnet8"),
                                             ("ShuffleV2", "wrn_16_2")])
def test_pairs_of_different_widths_and_resolutions(teacher, student):
    s, t, d = built_method("ofd", student=student, teacher=teacher, num_classes=100)
    x = torch.randn(2, 3, 32, 32)
    out_s, out_t = forward(s, x, PRE), forward(t, x, PRE)
    t_maps = out_t.feats[1:-1][-d.stages:]
    s_maps = out_s.feats[1:-1][-d.stages:]
    assert [c[0].in_channels for c in d.connectors] == [f.shape[1] for f in s_maps]
    assert [c[0].out_channels for c in d.connectors] == [f.shape[1] for f in t_maps]
    assert [m.shape[1] for m in d.margins] == [f.shape[1] for f in t_maps]
    loss = d.method_loss(out_s, out_t, Batch(x, torch.zeros(2, dtype=torch.long), torch.arange(2)), 1)
    assert torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    assert all(p.grad is not None for c in d.connectors for p in c.parameters())


def test_shufflenetv2_teacher_margins_cover_the_bn_half_only():
    # ShuffleV2 (mdistiller's issue #34): each stage map is the kept half (post-ReLU, margin 0), then bn3's half
    _, t, d = built_method("ofd", student="resnet8", teacher="ShuffleV2", num_classes=100)
    for margin, bn, offset in zip(d.margins, t.get_bn_before_relu(), t.bn_channel_offsets()):
        flat = margin.flatten()
        assert torch.equal(flat[:offset], torch.zeros(offset))
        assert torch.equal(flat[offset:], ofd_margin(bn.weight, bn.bias))
        assert (flat[offset:] < 0).all()


def test_rep_teachers_serve_through_their_plain_conv_bn_and_an_ambb_one_is_refused():
    # repmobilenetv2's blocks end in a 1x1 ConvBN (its BN); represnet20 with --blocktype base likewise
    _, t, d = built_method("ofd", student="resnet8", teacher="repmobilenetv2", num_classes=100)
    for margin, bn in zip(d.margins, t.get_bn_before_relu()[-3:]):
        assert isinstance(bn, torch.nn.BatchNorm2d) and torch.equal(margin.flatten(), ofd_margin(bn.weight, bn.bias))
    base = build_model("represnet20", block_type="base")
    assert all(isinstance(bn, torch.nn.BatchNorm2d) for bn in base.get_bn_before_relu())
    # an AMBB block adds five branches' BNs: no single BN to take the margins from
    with pytest.raises(ValueError, match="ends its stages in AMBB blocks .* --blocktype base"):
        built_method("ofd", student="resnet8", teacher="represnet20")


def test_the_teacher_stays_in_train_mode_by_default_and_a_flag_overrides():
    assert (OFD.student_features, OFD.teacher_features) == (PRE, PRE)
    assert parse_student_options(["--distill", "ofd"]).teacher_bn == "train_always"
    opt = parse_student_options(["--distill", "ofd", "--teacher_bn", "eval"])
    assert opt.teacher_bn == "eval" and opt.beta == 1e-3
    # side by side the teacher is shared, so its mode must agree
    with pytest.raises(SystemExit, match="--teacher_bn"):
        parse_configurations(["--distill", "ofd,kd", "--path_t", "t.pth"])
    assert len(parse_configurations(["--distill", "ofd,kd", "--path_t", "t.pth", "--teacher_bn", "eval"])) == 2
