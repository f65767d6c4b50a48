"""CheckpointKD's option-A CIFAR ResNets (models/resnet_a.py): sizes, shortcut, init and the feature contract."""
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from models import build_model, model_dict
from models.features import ZooModel
from models.resnet_a import RESNET_A_MODELS, BasicBlockA, ShortcutA

BLOCKS = {"resnet14_a": 2, "resnet20_a": 3, "resnet32_a": 5, "resnet44_a": 7, "resnet56_a": 9, "resnet110_a": 18,
          "resnet1202_a": 200}


def conv(cin, cout):
    return 9 * cin * cout


def bn(c):
    return 2 * c


def block(cin, cout):
    # two 3x3 convs and two BNs; the option-A shortcut has no parameters
    return conv(cin, cout) + bn(cout) + conv(cout, cout) + bn(cout)


def hand_count(n, classes):
    stem = conv(3, 16) + bn(16)
    stages = (n * block(16, 16) + block(16, 32) + (n - 1) * block(32, 32) + block(32, 64)
              + (n - 1) * block(64, 64))
    return stem + stages + 64 * classes + classes


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def test_the_family_is_registered_under_names_apart_from_repdistillers():
    assert list(RESNET_A_MODELS) == list(BLOCKS)
    assert all(model_dict[name] is ctor for name, ctor in RESNET_A_MODELS.items())
    # RepDistiller's names still build RepDistiller's networks (1x1-conv shortcuts, classifier 'fc')
    assert "fc.weight" in build_model("resnet20").state_dict()


@pytest.mark.parametrize("name", list(BLOCKS))
def test_parameter_count_matches_the_hand_count(name):
    model = build_model(name, num_classes=10)
    assert n_params(model) == hand_count(BLOCKS[name], 10)
    assert [len(stage) for stage in (model.layer1, model.layer2, model.layer3)] == [BLOCKS[name]] * 3


def test_hand_counts_are_the_published_sizes():
    # Idelbayev's table (CIFAR-10): ResNet20 0.27M, 32 0.46M, 44 0.66M, 56 0.85M, 110 1.7M, 1202 19.4M
    assert hand_count(3, 10) == 269_722 and hand_count(200, 10) == 19_421_274
    published = {3: "0.27", 5: "0.46", 7: "0.66", 9: "0.85", 18: "1.7", 200: "19.4"}
    for n, size in published.items():
        assert f"{hand_count(n, 10) / 1e6:.{len(size.split('.')[1])}f}" == size
    # CIFAR-100 (the classifier grows by 64 * 90 + 90)
    assert n_params(build_model("resnet20_a", num_classes=100)) == 275_572
    assert n_params(build_model("resnet110_a", num_classes=100)) == 1_733_812


def test_state_dict_has_the_reference_names_and_no_shortcut_tensors():
    state = build_model("resnet14_a", num_classes=100).state_dict()
    # stem conv + BN (5 tensors each), 6 blocks of 2 convs + 2 BNs, linear weight and bias
    assert len(state) == 6 + 6 * 12 + 2
    assert {"conv1.weight", "bn1.running_var", "layer2.0.conv1.weight", "layer3.1.bn2.bias", "linear.weight",
            "linear.bias"} <= set(state)
    assert not any("shortcut" in k or k.startswith("fc.") for k in state)


def test_shortcut_subsamples_and_pads_zero_channels_on_both_sides():
    x = torch.arange(2 * 4 * 6 * 6, dtype=torch.float32).reshape(2, 4, 6, 6)
    out = ShortcutA(pad=2)(x)
    assert out.shape == (2, 8, 3, 3)
    assert torch.equal(out[:, :2], torch.zeros(2, 2, 3, 3)) and torch.equal(out[:, 6:], torch.zeros(2, 2, 3, 3))
    # every second row and column, starting at 0
    assert torch.equal(out[:, 2:6], x[:, :, 0::2, 0::2])
    assert out[0, 2, 1, 1] == x[0, 0, 2, 2] == 14.0
    assert list(ShortcutA(2).parameters()) == []


def test_downsampling_block_adds_the_padded_input():
    torch.manual_seed(0)
    blk = BasicBlockA(16, 32, stride=2).eval()
    assert isinstance(blk.shortcut, ShortcutA) and blk.shortcut.pad == 8
    assert sum(p.numel() for p in blk.parameters()) == block(16, 32)
    x = torch.rand(2, 16, 8, 8)
    with torch.no_grad():
        residual = blk.bn2(blk.conv2(F.relu(blk.bn1(blk.conv1(x)))))
        expected = F.relu(residual + F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, 8, 8)))
        assert torch.equal(blk(x), expected)
        # with the residual branch silenced, only the shortcut passes: zeros in channels 0-7 and 24-31
        blk.bn2.weight.zero_()
        blk.bn2.bias.zero_()
        out = blk(x)
    assert torch.equal(out[:, 8:24], x[:, :, ::2, ::2])
    assert out[:, :8].abs().sum() == 0 and out[:, 24:].abs().sum() == 0
    # a block that keeps the shape has the identity shortcut; other shape changes are not option A
    assert isinstance(BasicBlockA(16, 16).shortcut, nn.Identity)
    with pytest.raises(ValueError, match="option-A shortcut needs stride 2 and planes = 2 x in_planes"):
        BasicBlockA(16, 64, stride=2)


def test_weights_are_kaiming_normal_fan_in():
    torch.manual_seed(0)
    model = build_model("resnet110_a", num_classes=100)
    # fan_in and fan_out differ here: the stem (27 vs 144), the first conv of stage 2 (144 vs 288) and the
    # classifier (64 inputs; PyTorch's default would have std 1/sqrt(3*64) = 0.072)
    for weight, fan_in in ((model.conv1.weight, 27), (model.layer2[0].conv1.weight, 144),
                           (model.layer3[0].conv1.weight, 288), (model.linear.weight, 64)):
        expected = math.sqrt(2.0 / fan_in)
        assert abs(weight.std().item() - expected) < 0.1 * expected, (weight.shape, weight.std().item())
        assert abs(weight.mean().item()) < 0.1 * expected
    assert torch.equal(model.bn1.weight, torch.ones(16)) and torch.equal(model.bn1.bias, torch.zeros(16))


def test_outputs_follow_the_zoo_contract():
    torch.manual_seed(0)
    model = build_model("resnet20_a", num_classes=100).eval()
    assert isinstance(model, ZooModel)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        logits = model(x)
        feats, logits_feat = model(x, is_feat=True)
        pre, _ = model(x, is_feat=True, preact=True)
    assert logits.shape == (2, 100) and torch.equal(logits, logits_feat)
    assert [tuple(f.shape[1:]) for f in feats] == [(16, 32, 32), (16, 32, 32), (32, 16, 16), (64, 8, 8), (64,)]
    # the reference's (logits, feature): feature is the pooled vector feats[-1], and the logits are its linear map
    assert torch.allclose(feats[-1], feats[-2].mean(dim=(2, 3)))
    assert torch.allclose(logits, model.linear(feats[-1]))
    # pre-activation stage maps: the sum before the last ReLU
    for p, f in zip(pre[1:4], feats[1:4]):
        assert (p < 0).any() and torch.equal(f, F.relu(p))
    assert model.stage_channels() == [16, 32, 64]
    assert model.penultimate_map_module() is None
    assert model.get_bn_before_relu() == [model.layer1[-1].bn2, model.layer2[-1].bn2, model.layer3[-1].bn2]
