"""ReviewKD (--distill reviewkd): the HCL against the spec's worked example, the ABFs' sizes and parameter count,
pairs of different widths and resolutions, the warm-up and the refusals."""
import pytest
import torch

from assembly.options import parse_configurations
from distiller_zoo import POST, PRE
from distiller_zoo.ReviewKD import PAIR_DEFAULTS, ReviewKD, hcl_level, hcl_loss, review_levels
from engine.forward import forward
from helper.types import Batch
from tests.distiller_zoo.fake_features import build
from tests.methods import built_method


def test_hcl_worked_example_of_the_spec():
    # o = 0.0, 0.1, ..., 1.5 as one 4x4 map, t = 0.5: base 0.275, 2x2 level 0.2325 (w 1/2), 1x1 level 0.0625 (w 1/4)
    o = torch.arange(16, dtype=torch.float32).reshape(1, 1, 4, 4) / 10
    t = torch.full_like(o, 0.5)
    assert hcl_level(o, t).item() == pytest.approx((0.275 + 0.2325 / 2 + 0.0625 / 4) / 1.75, rel=1e-6)
    assert hcl_level(o, t).item() == pytest.approx(0.2325, rel=1e-5)
    # a 1x1 level has the base term only
    assert hcl_level(torch.full((1, 1, 1, 1), 2.0), torch.ones(1, 1, 1, 1)).item() == pytest.approx(1.0)


@pytest.mark.parametrize("size,total_weight", [(8, 1.875), (4, 1.75), (2, 1.5), (1, 1.0)])
def test_hcl_pyramid_weights_sum_as_the_spec_says(size, total_weight):
    # a +-1 checkerboard against zeros: the full map's MSE is 1 and every pooled level's is 0 (each 2x2 window
    # averages to 0), so the level's value is 1 / (sum of the weights used)
    checker = (torch.arange(size)[:, None] + torch.arange(size)[None, :]) % 2 * 2.0 - 1.0
    o = checker.reshape(1, 1, size, size)
    value = hcl_level(o, torch.zeros_like(o)).item()
    if size == 1:
        assert value == pytest.approx(1.0)
    else:
        assert value == pytest.approx(1.0 / total_weight, rel=1e-6)


def test_hcl_sums_its_levels():
    a, b = torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8)
    c, d = torch.randn(2, 5, 1, 1), torch.randn(2, 5, 1, 1)
    assert hcl_loss([a, c], [b, d]).item() == pytest.approx(hcl_level(a, b).item() + hcl_level(c, d).item(),
                                                          rel=1e-6)


def test_abf_parameters_for_resnet32x4_to_resnet8x4_are_the_spec_count():
    _, _, d = built_method("reviewkd", student="resnet8x4", teacher="resnet32x4", num_classes=100)
    assert d.mid_channels == 256
    # deepest first: the pooled level, f3, f2, f1
    assert [sum(p.numel() for p in abf.parameters()) for abf in d.abfs] == [656384, 657410, 329474, 165506]
    assert sum(p.numel() for m in d.trainable_modules() for p in m.parameters()) == 1808774
    assert d.abfs[0].att_conv is None and all(abf.att_conv is not None for abf in d.abfs[1:])


@pytest.mark.parametrize("teacher,student,mid", [("wrn_40_2", "resnet8", 64), ("resnet32x4", "ShuffleV2", 512),
                                                 ("vgg13", "MobileNetV2", 512)])
def test_abf_outputs_have_the_teachers_shapes_at_every_level(teacher, student, mid):
    s, t, d = built_method("reviewkd", student=student, teacher=teacher, num_classes=100)
    assert d.mid_channels == mid
    x = torch.randn(2, 3, 32, 32)
    s.eval()
    with torch.no_grad():
        outs = d.review(forward(s, x, POST).feats)
        targets = review_levels(forward(t, x, PRE).feats)
    assert len(outs) == len(targets) == d.levels
    assert [tuple(o.shape) for o in outs] == [tuple(f.shape) for f in targets]
    # the widths come from the two networks: student in, teacher out (shallow to deep)
    s_levels = review_levels(forward(s, x, POST).feats)[-d.levels:]
    assert [abf.conv1[0].in_channels for abf in d.abfs][::-1] == [f.shape[1] for f in s_levels]


def test_the_deepest_levels_pair_up_when_the_networks_differ_in_stages():
    # vgg8 has four stage maps, resnet32x4 three: the student's shallowest one is left out
    s, t, d = built_method("reviewkd", student="vgg8", teacher="resnet32x4", num_classes=100)
    assert d.levels == 4
    assert [abf.conv1[0].in_channels for abf in d.abfs] == [512, 512, 512, 256]
    assert [abf.conv2[0].out_channels for abf in d.abfs] == [256, 256, 128, 64]
    assert d.out_sizes == [(1, 1), (8, 8), (16, 16), (32, 32)]


def test_the_loss_reads_the_teachers_pre_activation_maps_and_ramps_up():
    assert (ReviewKD.student_features, ReviewKD.teacher_features) == (POST, PRE)
    s, t, d = built_method("reviewkd", student="resnet8", teacher="resnet8", reviewkd_warmup=20)
    x = torch.randn(4, 3, 32, 32)
    batch = Batch(x, torch.zeros(4, dtype=torch.long), torch.arange(4))
    out_s, out_t = forward(s, x, POST), forward(t, x, PRE)
    full = hcl_loss(d.review(out_s.feats), review_levels(out_t.feats)).item()
    assert d.method_loss(out_s, out_t, batch, 1).item() == pytest.approx(full / 20, rel=1e-5)  # 0.05 at epoch 1
    assert d.method_loss(out_s, out_t, batch, 20).item() == pytest.approx(full, rel=1e-5)
    assert d.method_loss(out_s, out_t, batch, 30).item() == pytest.approx(full, rel=1e-5)
    assert d.warmup_factor(torch.tensor(10.0)).item() == pytest.approx(0.5)
    assert d.warmup_factor(1) == 0.05


def test_the_max_mid_option_is_honoured():
    # mdistiller ignored its MAX_MID_CHANNEL; a MobileNetV2 student's pooled width is 1280
    _, _, d = built_method("reviewkd", student="MobileNetV2", teacher="resnet8", reviewkd_max_mid=256)
    assert d.mid_channels == 256 and d.abfs[0].conv1[0].out_channels == 256


def test_per_pair_weights_of_the_authors_script_are_presets_a_flag_overrides():
    assert PAIR_DEFAULTS[("resnet56", "resnet20")] == {"beta": 0.6}
    assert ReviewKD.defaults == {"gamma": 1.0, "alpha": 0.0, "beta": 1.0}
    pair = ["--distill", "reviewkd", "--path_t", "t.pth", "--model_t", "resnet32x4"]
    run = parse_configurations(pair + ["--model_s", "resnet8x4"])[0]
    assert (run.options.gamma, run.options.alpha, run.options.beta) == (1.0, 0.0, 5.0)
    assert "resnet32x4 -> resnet8x4" in run.describe() and "beta=5.0" in run.describe()
    assert parse_configurations(pair + ["--model_s", "ShuffleV2"])[0].options.beta == 8.0
    # a pair the script does not list: mdistiller's default weight
    assert parse_configurations(pair + ["--model_s", "vgg8"])[0].options.beta == 1.0
    assert parse_configurations(pair + ["--model_s", "resnet8x4", "-b", "2"])[0].options.beta == 2.0


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="--reviewkd_warmup"):
        build("reviewkd", "res32x4_res8x4", reviewkd_warmup=-1)
    with pytest.raises(ValueError, match="--reviewkd_max_mid"):
        build("reviewkd", "res32x4_res8x4", reviewkd_max_mid=0)
