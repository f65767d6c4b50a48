"""The 22 RepDistiller CIFAR architectures: sizes, feature lists, checkpoint naming, registry.

Parameter counts, feature shapes and state_dict names below are RepDistiller's; they are what
its published checkpoints need in order to load with ``strict=True``.
"""
import functools

import pytest
import torch
import torch.nn as nn

from models import build_model, model_dict


N_PARAMS = {
    "resnet8": 83_892, "resnet14": 181_108, "resnet20": 278_324, "resnet32": 472_756,
    "resnet44": 667_188, "resnet56": 861_620, "resnet110": 1_736_564,
    "resnet8x4": 1_233_540, "resnet32x4": 7_433_860, "ResNet50": 23_705_252,
    "wrn_16_1": 180_916, "wrn_16_2": 703_284, "wrn_40_1": 569_780, "wrn_40_2": 2_255_156,
    "vgg8": 3_965_028, "vgg11": 9_277_284, "vgg13": 9_462_180, "vgg16": 14_774_436,
    "vgg19": 20_086_692, "MobileNetV2": 812_836, "ShuffleV1": 949_258, "ShuffleV2": 1_355_528,
}

# Number of state_dict entries (parameters + BN buffers) of RepDistiller's models: a checkpoint
# only loads strictly if not one tensor is missing or extra.
N_STATE = {
    "resnet8": 56, "resnet14": 92, "resnet20": 128, "resnet32": 200, "resnet44": 272,
    "resnet56": 344, "resnet110": 668, "resnet8x4": 62, "resnet32x4": 206, "ResNet50": 320,
    "wrn_16_1": 82, "wrn_16_2": 83, "wrn_40_1": 226, "wrn_40_2": 227, "vgg8": 37, "vgg11": 58,
    "vgg13": 72, "vgg16": 93, "vgg19": 114, "MobileNetV2": 320, "ShuffleV1": 296,
    "ShuffleV2": 338,
}

FEAT_SHAPES = {
    "resnet20": [(16, 32, 32), (16, 32, 32), (32, 16, 16), (64, 8, 8), (64,)],
    "resnet32x4": [(32, 32, 32), (64, 32, 32), (128, 16, 16), (256, 8, 8), (256,)],
    "ResNet50": [(64, 32, 32), (256, 32, 32), (512, 16, 16), (1024, 8, 8), (2048, 4, 4), (2048,)],
    "wrn_40_2": [(16, 32, 32), (32, 32, 32), (64, 16, 16), (128, 8, 8), (128,)],
    "vgg13": [(64, 32, 32), (128, 16, 16), (256, 8, 8), (512, 4, 4), (512, 4, 4), (512,)],
    "MobileNetV2": [(16, 16, 16), (12, 16, 16), (16, 8, 8), (48, 4, 4), (160, 2, 2), (1280,)],
    "ShuffleV1": [(24, 32, 32), (240, 16, 16), (480, 8, 8), (960, 4, 4), (960,)],
    "ShuffleV2": [(24, 32, 32), (116, 16, 16), (232, 8, 8), (464, 4, 4), (1024,)],
}

# Models whose stage features (and pooled vector) are taken after a ReLU.
POST_RELU = [n for n in N_PARAMS if n.startswith(("resnet", "ResNet", "vgg", "Shuffle"))]

ALL = sorted(N_PARAMS)


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def batch(seed=0, n=2, size=32):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


@functools.lru_cache(maxsize=None)
def eval_model(name, num_classes=100):
    """Shared eval-mode instance (eval forwards leave it untouched)."""
    torch.manual_seed(0)
    return build_model(name, num_classes=num_classes).eval()


@functools.lru_cache(maxsize=None)
def eval_outputs(name, num_classes=100, preact=False):
    with torch.no_grad():
        return eval_model(name, num_classes)(batch(), is_feat=True, preact=preact)


def shapes(feats):
    return [tuple(f.shape[1:]) for f in feats]


# ------------------------------------------------------------------------------- registry

def test_registry_has_the_repdistiller_names():
    # a plain dict, so that other families can be added with ``model_dict.update``
    assert type(model_dict) is dict
    assert set(N_PARAMS) <= set(model_dict)


def test_build_model_unknown_name_lists_valid_names():
    with pytest.raises(ValueError) as info:
        build_model("nope")
    msg = str(info.value)
    assert "'nope'" in msg
    assert "resnet8x4" in msg and "ShuffleV2" in msg
    assert msg.endswith("valid names: " + ", ".join(sorted(model_dict)))


def test_build_model_sees_later_registrations():
    model_dict["tiny_extra"] = lambda num_classes=100: nn.Linear(3, num_classes)
    try:
        assert build_model("tiny_extra", num_classes=7).out_features == 7
        with pytest.raises(ValueError, match="tiny_extra"):
            build_model("still_unknown")
    finally:
        del model_dict["tiny_extra"]


@pytest.mark.parametrize("name", ALL)
def test_parameter_count(name):
    model = build_model(name)  # num_classes defaults to 100
    assert n_params(model) == N_PARAMS[name]
    assert len(model.state_dict()) == N_STATE[name]


# ------------------------------------------------------------------------- forward contract

@pytest.mark.parametrize("name", sorted(FEAT_SHAPES))
def test_feature_shapes(name):
    feats, logits = eval_outputs(name)
    assert shapes(feats) == FEAT_SHAPES[name]
    assert tuple(logits.shape) == (2, 100)


@pytest.mark.parametrize("name", ALL)
def test_forward_contract_10_classes(name):
    with torch.no_grad():
        plain = eval_model(name, 10)(batch())
    feats, logits = eval_outputs(name, 10)
    feats_pre, logits_pre = eval_outputs(name, 10, preact=True)
    assert torch.is_tensor(plain) and tuple(plain.shape) == (2, 10)
    assert torch.equal(plain, logits) and torch.equal(plain, logits_pre)
    assert len(feats) >= 5
    assert feats[-1].dim() == 2 and feats[-1].shape[0] == 2
    assert all(f.dim() == 4 and f.shape[0] == 2 for f in feats[:-1])
    assert shapes(feats_pre) == shapes(feats)
    # the pooled vector is the classifier input, whatever preact says
    assert torch.equal(feats_pre[-1], feats[-1])


@pytest.mark.parametrize("name", ["resnet8", "wrn_16_1", "vgg8", "MobileNetV2", "ShuffleV2"])
def test_other_input_sizes_still_pool_globally(name):
    with torch.no_grad():
        feats, logits = eval_model(name)(batch(size=64), is_feat=True)
    assert tuple(logits.shape) == (2, 100) and feats[-1].dim() == 2


def test_resnet20_preact_features_are_the_sums_before_relu():
    post, _ = eval_outputs("resnet20")
    pre, _ = eval_outputs("resnet20", preact=True)
    assert torch.equal(pre[0], post[0]) and torch.equal(pre[-1], post[-1])
    for f_pre, f_post in zip(pre[1:4], post[1:4]):
        assert not torch.equal(f_pre, f_post)
        assert (f_pre < 0).any()
        assert (f_post >= 0).all()
        assert torch.equal(torch.relu(f_pre), f_post)


@pytest.mark.parametrize("name", ["resnet8x4", "ResNet50", "vgg8", "ShuffleV1"])
def test_preact_features_relu_to_post_features(name):
    post, _ = eval_outputs(name)
    pre, _ = eval_outputs(name, preact=True)
    for f_pre, f_post in list(zip(pre, post))[1:-1]:
        assert (f_pre < 0).any()
        assert torch.equal(torch.relu(f_pre), f_post)


def test_shufflev2_preact_is_the_unshuffled_concat():
    # RepDistiller takes the pre-activation before the final channel shuffle, so a ReLU alone
    # does not map it onto the stage output; ReLU followed by the shuffle does.
    from models.ShuffleNetv2 import ShuffleBlock

    post, _ = eval_outputs("ShuffleV2")
    pre, _ = eval_outputs("ShuffleV2", preact=True)
    for f_pre, f_post in list(zip(pre, post))[1:-1]:
        assert (f_pre < 0).any() and (f_post >= 0).all()
        assert not torch.equal(torch.relu(f_pre), f_post)
        assert torch.equal(ShuffleBlock(2)(torch.relu(f_pre)), f_post)


@pytest.mark.parametrize("name", POST_RELU)
def test_post_relu_features_are_non_negative(name):
    feats, _ = eval_outputs(name, 10)  # shares the forward of the contract test
    assert all((f >= 0).all() for f in feats)


def test_wrn_features_are_raw_block_outputs_and_preact_reapplies_next_bn():
    model = eval_model("wrn_40_2")
    post, _ = eval_outputs("wrn_40_2")
    pre, _ = eval_outputs("wrn_40_2", preact=True)
    assert any((f < 0).any() for f in post[1:4])  # not post-ReLU
    assert (post[-1] >= 0).all()  # pooled after the head's BN-ReLU
    assert torch.equal(pre[0], post[0])
    with torch.no_grad():
        expected = [model.block2.layer[0].bn1(post[1]), model.block3.layer[0].bn1(post[2]),
                    model.bn1(post[3])]
    for got, want in zip(pre[1:4], expected):
        assert torch.equal(got, want)


def test_mobilenetv2_ignores_preact():
    post, _ = eval_outputs("MobileNetV2")
    pre, _ = eval_outputs("MobileNetV2", preact=True)
    assert all(torch.equal(a, b) for a, b in zip(pre, post))


# ---------------------------------------------------------------------- checkpoint naming

STATE_SPOTS = {
    "resnet8": {
        "conv1.weight": (16, 3, 3, 3), "bn1.running_mean": (16,),
        "layer1.0.conv1.weight": (16, 16, 3, 3), "layer1.0.bn2.num_batches_tracked": (),
        "layer2.0.downsample.0.weight": (32, 16, 1, 1), "layer2.0.downsample.1.running_var": (32,),
        "fc.weight": (100, 64), "fc.bias": (100,),
    },
    "resnet20": {
        "layer2.0.downsample.0.weight": (32, 16, 1, 1), "layer3.0.downsample.1.weight": (64,),
        "layer3.2.bn2.weight": (64,),
    },
    "resnet8x4": {"layer1.0.downsample.0.weight": (64, 32, 1, 1), "fc.weight": (100, 256)},
    "ResNet50": {
        "conv1.weight": (64, 3, 3, 3), "layer1.0.shortcut.0.weight": (256, 64, 1, 1),
        "layer1.0.shortcut.1.running_mean": (256,), "layer4.2.bn3.weight": (2048,),
        "linear.weight": (100, 2048),
    },
    "wrn_40_2": {
        "conv1.weight": (16, 3, 3, 3), "block1.layer.0.bn1.weight": (16,),
        "block1.layer.0.convShortcut.weight": (32, 16, 1, 1),
        "block3.layer.5.conv2.weight": (128, 128, 3, 3), "bn1.running_var": (128,),
        "fc.weight": (100, 128),
    },
    "wrn_16_1": {"block2.layer.0.convShortcut.weight": (32, 16, 1, 1)},
    "vgg13": {
        "block0.0.weight": (64, 3, 3, 3), "block0.0.bias": (64,), "block0.1.running_mean": (64,),
        "block0.3.weight": (64, 64, 3, 3), "block0.4.weight": (64,),
        "block4.4.weight": (512,), "classifier.weight": (100, 512),
    },
    "MobileNetV2": {
        "conv1.0.weight": (16, 3, 3, 3), "conv1.1.weight": (16,),
        # the t=1 block keeps its 1x1 expansion conv
        "blocks.0.0.conv.0.weight": (16, 16, 1, 1), "blocks.0.0.conv.3.weight": (16, 1, 3, 3),
        "blocks.0.0.conv.7.running_var": (8,), "blocks.6.0.conv.6.weight": (160, 480, 1, 1),
        "conv2.0.weight": (1280, 160, 1, 1), "classifier.0.weight": (100, 1280),
    },
    "ShuffleV1": {
        # the unit after the 24-channel stem has a dense first 1x1, later ones are 3-grouped
        "layer1.0.conv1.weight": (54, 24, 1, 1), "layer2.0.conv1.weight": (60, 80, 1, 1),
        "layer3.3.bn3.weight": (960,), "linear.weight": (100, 960),
    },
    "ShuffleV2": {
        "layer1.0.conv5.weight": (58, 58, 1, 1), "layer1.3.bn3.weight": (58,),
        "layer3.3.conv3.weight": (232, 232, 1, 1), "conv2.weight": (1024, 464, 1, 1),
        "bn2.running_mean": (1024,), "linear.weight": (100, 1024),
    },
}

STATE_ABSENT = {
    "resnet8": ["layer1.0.downsample.0.weight", "layer1.1.conv1.weight"],
    "resnet20": ["layer1.0.downsample.0.weight", "layer2.1.downsample.0.weight"],
    "ResNet50": ["layer1.1.shortcut.0.weight", "fc.weight"],
    "wrn_40_2": ["block1.layer.1.convShortcut.weight", "block1.layer.0.convShortcut.bias"],
    "wrn_16_1": ["block1.layer.0.convShortcut.weight"],
    "vgg13": ["block0.5.weight", "classifier.0.weight"],
    "MobileNetV2": ["classifier.weight"],
    "ShuffleV1": ["fc.weight"],
    "ShuffleV2": ["fc.weight"],
}


@pytest.mark.parametrize("name", sorted(STATE_SPOTS))
def test_state_dict_names_match_repdistiller(name):
    sd = build_model(name).state_dict()
    for key, shape in STATE_SPOTS[name].items():
        assert key in sd, key
        assert tuple(sd[key].shape) == shape, key
    for key in STATE_ABSENT.get(name, []):
        assert key not in sd, key


# one model per family (and per block layout); the names and shapes of all 22 are pinned by
# the parameter / state_dict counts and the spot checks above
ROUND_TRIP = ["resnet8", "resnet8x4", "ResNet50", "wrn_16_2", "vgg8", "MobileNetV2", "ShuffleV1",
              "ShuffleV2"]


@pytest.mark.parametrize("name", ROUND_TRIP)
def test_state_dict_round_trip_is_exact(name):
    torch.manual_seed(1)
    src = build_model(name)
    with torch.no_grad():
        src.train()(batch(seed=1))  # move the BN running stats off their defaults
    torch.manual_seed(2)
    dst = build_model(name).eval()
    src.eval()
    x = batch(seed=3)
    with torch.no_grad():
        want = src(x)
        assert not torch.equal(dst(x), want)
        missing = dst.load_state_dict(src.state_dict(), strict=True)
        assert not missing.missing_keys and not missing.unexpected_keys
        assert torch.equal(dst(x), want)


# ---------------------------------------------------------------- helpers used by methods

FEAT_MODULE_COUNTS = {"resnet20": 6, "resnet8x4": 6, "ResNet50": 6, "wrn_40_2": 4, "vgg13": 10,
                      "MobileNetV2": 2, "ShuffleV1": 5, "ShuffleV2": 5}
BN_WIDTHS = {"resnet20": [16, 32, 64], "resnet8x4": [64, 128, 256],
             "ResNet50": [256, 512, 1024, 2048], "wrn_40_2": [32, 64, 128],
             "vgg13": [128, 256, 512, 512], "MobileNetV2": [12, 16, 48, 160], "ShuffleV1": [240, 480, 960],
             "ShuffleV2": [58, 116, 232]}


@pytest.mark.parametrize("name", sorted(FEAT_MODULE_COUNTS))
def test_get_feat_modules(name):
    model = eval_model(name)
    mods = model.get_feat_modules()
    assert isinstance(mods, nn.ModuleList) and len(mods) == FEAT_MODULE_COUNTS[name]
    own = {id(m) for m in model.modules()}
    assert all(id(m) in own for m in mods)  # the model's own modules, not copies


@pytest.mark.parametrize("name", sorted(BN_WIDTHS))
def test_get_bn_before_relu(name):
    model = eval_model(name)
    bns = model.get_bn_before_relu()
    assert all(isinstance(b, nn.BatchNorm2d) for b in bns)
    assert [b.num_features for b in bns] == BN_WIDTHS[name]
    own = {id(m) for m in model.modules()}
    assert all(id(b) in own for b in bns)


def test_get_bn_before_relu_points_at_stage_ends():
    r = eval_model("resnet20")
    assert r.get_bn_before_relu() == [r.layer1[-1].bn2, r.layer2[-1].bn2, r.layer3[-1].bn2]
    w = eval_model("wrn_40_2")
    assert w.get_bn_before_relu() == [w.block2.layer[0].bn1, w.block3.layer[0].bn1, w.bn1]


def test_shufflenet_bns_are_the_last_units_bn3():
    for name in ("ShuffleV1", "ShuffleV2"):
        m = eval_model(name)
        assert m.get_bn_before_relu() == [m.layer1[-1].bn3, m.layer2[-1].bn3, m.layer3[-1].bn3]


# ---------------------------------------------------------------------- initialisation

def _std_ratio(conv):
    fan_out = conv.out_channels * conv.kernel_size[0] * conv.kernel_size[1]
    return conv.weight.std().item() / (2.0 / fan_out) ** 0.5


@pytest.mark.parametrize("name,conv_path", [("resnet32x4", "layer3.0.conv2"),
                                            ("wrn_40_2", "block3.layer.1.conv1"),
                                            ("vgg13", "block3.0"),
                                            ("ResNet50", "layer3.0.conv2")])
def test_convs_use_fan_out_he_init(name, conv_path):
    torch.manual_seed(0)
    model = build_model(name)
    assert abs(_std_ratio(model.get_submodule(conv_path)) - 1) < 0.05
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)


def test_classifier_init_per_family():
    torch.manual_seed(0)
    vgg = build_model("vgg13")
    assert torch.all(vgg.classifier.bias == 0) and abs(vgg.classifier.weight.std().item() - 0.01) < 1e-3
    assert torch.all(vgg.block0[0].bias == 0)
    mob = build_model("MobileNetV2")
    assert torch.all(mob.classifier[0].bias == 0)
    assert abs(mob.classifier[0].weight.std().item() - 0.01) < 1e-3
    assert torch.all(build_model("wrn_16_1").fc.bias == 0)
    # CIFAR ResNets keep PyTorch's default Linear init (non-zero bias)
    assert build_model("resnet8").fc.bias.abs().sum() > 0


def test_same_seed_gives_same_weights():
    torch.manual_seed(7)
    a = build_model("resnet20").state_dict()
    torch.manual_seed(7)
    b = build_model("resnet20").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------- wiring checkpoints depend on

def test_wrn_projection_shortcut_reads_the_activated_input():
    from models.wrn import BasicBlock

    torch.manual_seed(0)
    block = BasicBlock(16, 32, stride=2).eval()
    with torch.no_grad():
        for bn in (block.bn1, block.bn2):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.bias.uniform_(-0.5, 0.5)
        x = torch.randn(2, 16, 8, 8)
        a = torch.relu(block.bn1(x))
        branch = block.conv2(torch.relu(block.bn2(block.conv1(a))))
        assert torch.allclose(block(x), block.convShortcut(a) + branch, atol=1e-6)
        assert not torch.allclose(block(x), block.convShortcut(x) + branch, atol=1e-3)


def test_vgg_pools_before_block4_only_for_64px_inputs():
    with torch.no_grad():
        feats32, _ = eval_outputs("vgg8")
        feats64, _ = eval_model("vgg8")(batch(size=64), is_feat=True)
    assert shapes(feats32)[3:5] == [(512, 4, 4), (512, 4, 4)]
    assert shapes(feats64)[3:5] == [(512, 8, 8), (512, 4, 4)]


@pytest.mark.parametrize("name,family", [("resnet20", "cifar"), ("wrn_16_2", "cifar"), ("MobileNetV2", "cifar"),
                                         ("resnet20_a", "cifar"), ("multi_resnet18_kd", "cifar"),
                                         ("ResNet18", "imagenet"), ("ResNet50", "imagenet"),
                                         ("MobileNetV1", "imagenet")])
def test_feat_modules_hold_every_weight_the_stage_maps_depend_on_and_not_the_classifier(name, family):
    # FSP's and AB's init stage trains exactly these modules (RepDistiller's get_feat_modules)
    torch.manual_seed(0)
    model = build_model(name, num_classes=10, family=family)
    size = 64 if family == "imagenet" else 32
    feats, _ = model(torch.randn(2, 3, size, size), is_feat=True)
    sum(f.sum() for f in feats[1:-1]).backward()
    trained = {id(p) for p in model.get_feat_modules().parameters()}
    needed = {id(p) for p in model.parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert needed <= trained
    assert not {id(p) for p in model.classifier_module().parameters()} & trained
