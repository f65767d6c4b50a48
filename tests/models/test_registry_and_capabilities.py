"""models/registry.py (decorator registration, declared arch options) and the capabilities every zoo model
answers (models/features.py): num_stages, stage_channels, features, penultimate_map_module,
get_bn_before_relu, bn_channel_offsets, classifier_module, pooled_map."""
import subprocess
import sys

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import models
from models import accepts, arch_options, build_model, model_dict, register_model
from models import registry
from models.extra import EXTRA_MODELS
from models.features import FeatureMaps, ZooModel
from models.mobilenetv2_widths import MOBILENETV2_WIDTH_MODELS
from models.multi_resnet import BYOT_MODELS
from models.resnet_a import RESNET_A_MODELS

ALL_NAMES = {
    "resnet8", "resnet14", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "resnet8x4",
    "resnet32x4", "ResNet50", "wrn_16_1", "wrn_16_2", "wrn_40_1", "wrn_40_2", "vgg8", "vgg11", "vgg13",
    "vgg16", "vgg19", "MobileNetV2", "ShuffleV1", "ShuffleV2", "represnet20", "represnet32", "represnet8x4",
    "repvgg8", "repmobilenetv2", "myresnet8", "myresnet14", "myresnet20", "myresnet32", "myresnet44",
    "myresnet56", "myresnet110", "myresnet8x4", "myresnet32x4", "mywrn_10_2", "mywrn_16_1", "mywrn_16_2",
    "mywrn_40_1", "mywrn_40_2", "multi_resnet18_kd", "multi_resnet50_kd", "mobilenetv2_035",
    "mobilenetv2_05", "mobilenetv2_075", "mobilenetv2", "resnet14_a", "resnet20_a", "resnet32_a", "resnet44_a",
    "resnet56_a", "resnet110_a", "resnet1202_a",
}


def _unregister(name):
    model_dict.pop(name, None)
    registry._arch_options.pop(name, None)


# ---------------------------------------------------------------- registry

def test_model_dict_is_a_plain_dict_with_every_name():
    assert type(model_dict) is dict
    assert set(model_dict) == ALL_NAMES
    assert model_dict is registry.model_dict


def test_the_decorator_registers_a_new_name_that_build_model_finds():
    seen = {}

    @register_model("tmp_probe_net", arch_options=("deploy",))
    def tmp_probe_net(num_classes=100, **kwargs):
        seen.update(kwargs, num_classes=num_classes)
        return nn.Linear(3, num_classes)

    try:
        assert model_dict["tmp_probe_net"] is tmp_probe_net
        net = build_model("tmp_probe_net", num_classes=7, deploy=True, block_type="AMBB", block_depth=[1, 1, 1])
        assert net.out_features == 7
        # only the declared option arrives, never the undeclared ones
        assert seen == {"num_classes": 7, "deploy": True}
        seen.clear()
        build_model("tmp_probe_net", deploy=None, width=2)
        assert seen == {"num_classes": 100, "width": 2}
    finally:
        _unregister("tmp_probe_net")
    assert "tmp_probe_net" not in model_dict


def test_options_come_from_the_declaration_not_the_signature():
    seen = {}

    @register_model("tmp_sig_net")
    def tmp_sig_net(num_classes=100, deploy="default"):
        seen["deploy"] = deploy
        return nn.Linear(3, num_classes)

    try:
        build_model("tmp_sig_net", deploy=True)
        assert seen["deploy"] == "default"
        assert not accepts(tmp_sig_net, "deploy")
    finally:
        _unregister("tmp_sig_net")


def test_a_second_constructor_under_a_taken_name_is_refused():
    with pytest.raises(ValueError, match=r"'resnet8' is already registered to models\.resnet\.resnet8"):
        register_model("resnet8")(lambda num_classes=100: nn.Linear(3, num_classes))
    assert model_dict["resnet8"] is models.resnet.resnet8
    # re-registering the very same constructor changes nothing
    register_model("resnet8")(models.resnet.resnet8)
    assert arch_options("resnet8") == ()


def test_an_unknown_arch_option_is_refused_at_registration():
    with pytest.raises(ValueError, match=r"unknown arch option\(s\) \['width'\]; valid: block_type, deploy, "
                                         r"block_depth"):
        register_model("tmp_bad", arch_options=("width",))
    assert "tmp_bad" not in model_dict


def test_arch_options_reach_only_the_families_that_declare_them():
    assert arch_options("represnet20") == ("block_type", "deploy")
    assert arch_options("repvgg8") == ("block_type", "deploy")
    assert arch_options("myresnet8") == ("block_depth",)
    assert arch_options("mywrn_16_2") == ("block_depth",)
    assert arch_options("resnet8") == () and arch_options("multi_resnet18_kd") == ()

    rep = build_model("represnet20", num_classes=10, deploy=True, block_type="AMBB", block_depth=[1, 1, 1])
    assert rep.deploy is True and rep.fc.out_features == 10
    # resnet8's ResNet would raise TypeError on any of these keywords
    plain = build_model("resnet8", deploy=True, block_type="AMBB", block_depth=[1, 1, 1])
    assert type(plain).__name__ == "ResNet"
    my = build_model("myresnet8", block_depth=[1, 2, 1], deploy=True)
    assert my.block_depth == [1, 2, 1] and len(my.layer2) == 2


def test_accepts_reads_the_declared_options():
    assert accepts("represnet20", "deploy") and accepts(model_dict["represnet20"], "deploy")
    assert accepts(model_dict["mywrn_40_2"], "block_depth")
    assert not accepts(model_dict["resnet8"], "deploy")
    assert not accepts(lambda num_classes=100, deploy=False: None, "deploy")
    assert not accepts("no_such_model", "deploy")
    assert sorted(n for n, c in model_dict.items() if accepts(c, "deploy")) == [
        "repmobilenetv2", "represnet20", "represnet32", "represnet8x4", "repvgg8"]


def test_unknown_name_error_names_the_valid_ones():
    expected = "unknown model 'resnet9'; valid names: " + ", ".join(sorted(model_dict))
    with pytest.raises(ValueError) as err:
        arch_options("resnet9")
    assert str(err.value) == expected
    with pytest.raises(ValueError) as err:
        build_model("resnet9")
    assert str(err.value) == expected


def test_the_family_dicts_are_views_of_the_registry():
    assert set(BYOT_MODELS) == {"multi_resnet18_kd", "multi_resnet50_kd"}
    assert set(RESNET_A_MODELS) == {n for n in ALL_NAMES if n.endswith("_a")}
    assert list(MOBILENETV2_WIDTH_MODELS) == ["mobilenetv2_035", "mobilenetv2_05", "mobilenetv2_075", "mobilenetv2"]
    assert set(EXTRA_MODELS) == {n for n in ALL_NAMES if n.startswith(("rep", "my"))}
    assert all(model_dict[n] is c for view in (BYOT_MODELS, MOBILENETV2_WIDTH_MODELS, EXTRA_MODELS, RESNET_A_MODELS)
               for n, c in view.items())
    assert models.OPTIONAL_ARCH_KWARGS == ("block_type", "deploy", "block_depth")


def test_util_and_connectors_import_without_each_other():
    code = ("import sys, models.connectors; loaded = 'models.util' in sys.modules;"
            "import models.util as u, models.conv_reg as c;"
            "print(loaded, u.ConvReg is c.ConvReg, u.Connector is models.connectors.Connector)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "True", "True"]
    from models.util import Connector, ConvReg, Embed, LinearEmbed, Normalize, Paraphraser, Translator  # noqa
    conn = Connector([(1, 8, 4, 4)], [(1, 16, 4, 4)])
    assert set(conn.state_dict()) >= {"connectors.0.conv.weight", "connectors.0.bn.running_var"}


# ---------------------------------------------------------------- capabilities

# One model per family: name, constructor kwargs, num_stages milestone checking has always used.
FAMILIES = [
    ("resnet8", {}, 3),
    ("ResNet50", {}, 4),
    ("wrn_16_1", {}, 3),
    ("vgg8", {}, 3),
    ("MobileNetV2", {}, 3),
    ("mobilenetv2_035", {}, 3),
    ("ShuffleV1", {}, 3),
    ("ShuffleV2", {}, 3),
    ("represnet20", {}, 3),
    ("repvgg8", {}, 3),
    ("repmobilenetv2", {}, 3),
    ("myresnet8", {"block_depth": [1, 2, 1]}, 3),
    ("mywrn_10_2", {"block_depth": [2, 1, 1]}, 3),
    ("multi_resnet18_kd", {}, 3),
    ("resnet14_a", {}, 3),
]
SLOW = {"ResNet50", "multi_resnet18_kd"}
IDS = [f[0] for f in FAMILIES]


def _model(name, kwargs):
    torch.manual_seed(0)
    return build_model(name, num_classes=10, **kwargs)


@pytest.mark.parametrize("name,kwargs,stages", FAMILIES, ids=IDS)
def test_num_stages_and_stage_channels_match_a_forward(name, kwargs, stages):
    model = _model(name, kwargs).eval()
    assert isinstance(model, ZooModel)
    assert model.num_stages == stages
    with torch.no_grad():
        maps = model.features(torch.randn(2, 3, 32, 32))
    assert isinstance(maps, FeatureMaps) and maps.logits.shape == (2, 10)
    assert len(maps.post) >= stages + 2
    assert model.stage_channels() == [f.shape[1] for f in maps.post[1:stages + 1]]
    # the declared widths cover every stage map of the list, not only the compared ones
    assert list(model.stage_widths) == [f.shape[1] for f in maps.post[1:-1]]


def test_block_depth_sets_num_stages():
    model = build_model("myresnet20", block_depth="3,7,2")
    assert model.num_stages == len(model.block_depth) == 3
    assert model.stage_channels() == [16, 32, 64]


def _assert_same(a, b):
    assert len(a) == len(b)
    for p, q in zip(a, b):
        assert p.dtype == q.dtype == torch.float32 and torch.equal(p, q)


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("name,kwargs,stages", FAMILIES, ids=IDS)
def test_features_equal_both_forwards_bitwise(name, kwargs, stages, train):
    model = _model(name, kwargs).train(train)
    # the slow ones on a smaller input (all of them pool adaptively or over the whole map)
    size = 8 if name in SLOW else 32
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        maps = model.features(x)
        post, logits_post = model(x, is_feat=True, preact=False)
        pre, logits_pre = model(x, is_feat=True, preact=True)
        logits = model(x)
    _assert_same([maps.logits], [logits])
    _assert_same([logits_post, logits_pre], [logits, logits])
    _assert_same(maps.post, post)
    _assert_same(maps.pre, pre)
    assert maps.post[-1] is maps.pre[-1]


def test_pre_activation_maps_survive_the_relu():
    model = _model("resnet8", {}).eval()
    with torch.no_grad():
        maps = model.features(torch.randn(2, 3, 32, 32))
    assert (maps.pre[3] < 0).any()
    assert torch.equal(maps.post[3], F.relu(maps.pre[3]))


@pytest.mark.parametrize("name,kwargs", [("wrn_16_1", {}), ("mywrn_10_2", {"block_depth": [1, 1, 1]})])
def test_wrn_penultimate_map_is_its_head_relu(name, kwargs):
    model = _model(name, kwargs).eval()
    module = model.penultimate_map_module()
    assert module is model.relu
    tapped = []
    handle = module.register_forward_hook(lambda m, i, o: tapped.append(o.clone()))
    try:
        with torch.no_grad():
            feats, _ = model(torch.randn(2, 3, 32, 32), is_feat=True)
            expected = F.relu(model.bn1(feats[-2]))
    finally:
        handle.remove()
    assert len(tapped) == 1 and torch.equal(tapped[0], expected)
    assert not torch.equal(feats[-2], expected)


@pytest.mark.parametrize("name,kwargs,stages", [f for f in FAMILIES if not f[0].startswith(("wrn", "mywrn"))],
                         ids=[i for i in IDS if not i.startswith(("wrn", "mywrn"))])
def test_other_families_use_feat_minus_2(name, kwargs, stages):
    assert _model(name, kwargs).penultimate_map_module() is None


BN_COUNTS = {"resnet8": 3, "ResNet50": 4, "wrn_16_1": 3, "vgg8": 4, "MobileNetV2": 4, "mobilenetv2_035": 4,
             "ShuffleV1": 3, "ShuffleV2": 3, "represnet20": 3, "repvgg8": 4, "repmobilenetv2": 4, "myresnet8": 3,
             "mywrn_10_2": 3, "multi_resnet18_kd": 4, "resnet14_a": 3}


@pytest.mark.parametrize("name,kwargs,stages", FAMILIES, ids=IDS)
def test_get_bn_before_relu(name, kwargs, stages):
    model = _model(name, kwargs)
    bns = model.get_bn_before_relu()
    assert len(bns) == BN_COUNTS[name]
    own = set(map(id, model.modules()))
    assert all(isinstance(m, nn.Module) and id(m) in own for m in bns)
    assert len(model.bn_channel_offsets()) == len(bns)


@pytest.mark.parametrize("name", ["ShuffleV1", "ShuffleV2"])
def test_shufflenet_bns_produce_the_pre_activation_channels_they_claim(name):
    # the maps are pre[-1-k:-1] for the k BNs; BN output channels at the stated offset feed those maps directly:
    # with the BN's output replaced by a constant, exactly those channels move
    model = _model(name, {}).eval()
    x = torch.randn(2, 3, 32, 32)
    bns, offsets = model.get_bn_before_relu(), model.bn_channel_offsets()
    with torch.no_grad():
        base = model.features(x).pre[1:-1]
    for i, (bn, offset) in enumerate(zip(bns, offsets)):
        handle = bn.register_forward_hook(lambda m, inp, out: out + 1000.0)
        try:
            with torch.no_grad():
                moved = model.features(x).pre[1:-1][i]
        finally:
            handle.remove()
        changed = (moved - base[i]).abs().amax(dim=(0, 2, 3)) > 100
        expected = torch.zeros(base[i].shape[1], dtype=torch.bool)
        expected[offset:offset + bn.num_features] = True
        assert torch.equal(changed, expected), (i, offset)
        if offset:  # the channels no BN produces come from a ReLU: never negative
            assert (base[i][:, :offset] >= 0).all()
    assert offsets == ([0, 0, 0] if name == "ShuffleV1" else [58, 116, 232])


@pytest.mark.parametrize("name,kwargs,stages", FAMILIES, ids=IDS)
def test_the_classifier_of_the_pooled_map_gives_the_logits(name, kwargs, stages):
    # classifier_module(global average of pooled_map(feat[-2])) is the model's own forward (what SimKD reuses)
    model = _model(name, kwargs).eval()
    with torch.no_grad():
        feats, logits = model(torch.randn(2, 3, 32, 32), is_feat=True)
        pooled = F.adaptive_avg_pool2d(model.pooled_map(feats[-2]), 1).flatten(1)
        assert torch.allclose(pooled, feats[-1], atol=1e-5)
        assert torch.allclose(model.classifier_module()(pooled), logits, atol=1e-5)


def test_multi_resnet_bns_are_the_last_blocks_of_each_stage():
    model = build_model("multi_resnet18_kd")
    assert model.get_bn_before_relu() == [model.layer1[-1].bn2, model.layer2[-1].bn2, model.layer3[-1].bn2,
                                          model.layer4[-1].bn2]


class _TinyNet(ZooModel, nn.Module):
    """A new family that only writes ``features``: everything else is the mixin's default."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 5, 3, padding=1)
        self.fc = nn.Linear(5, 4)

    def features(self, x):
        f0 = self.conv(x)
        f1 = F.relu(f0[:, :, ::2, ::2])
        f2 = F.relu(f1[:, :3, ::2, ::2])
        f3 = F.relu(f2[:, :2, ::2, ::2])
        v = torch.flatten(F.adaptive_avg_pool2d(f1, 1), 1)
        return FeatureMaps(self.fc(v), [f0, f1, f2, f3, v], [f0, f1, f2, f3, v])


def test_a_new_family_gets_the_defaults():
    net = _TinyNet().train()
    assert net.num_stages == 3
    assert net.stage_channels() == [5, 3, 2]
    assert net.training  # the probe forward left the mode alone
    assert net.penultimate_map_module() is None
    with pytest.raises(NotImplementedError, match="_TinyNet does not name the BNs before its stage ReLUs"):
        net.get_bn_before_relu()
    assert net.classifier_module() is net.fc
    f = torch.randn(1, 2, 4, 4)
    assert net.pooled_map(f) is f
    x = torch.randn(1, 3, 8, 8)
    assert torch.equal(net(x), net.features(x).logits)


# the channels of the map each family pools into feat[-1], where it is not feat[-2]'s
POOLED_MAP_CHANNELS = {"MobileNetV2": 1280, "mobilenetv2_035": 1280, "repmobilenetv2": 1280, "ShuffleV2": 1024,
                       "wrn_16_1": 64, "mywrn_10_2": 128}


@pytest.mark.parametrize("name,kwargs,stages", FAMILIES, ids=IDS)
def test_the_pooled_map_module_gives_the_forwards_own_pooled_map(name, kwargs, stages):
    # CAT-KD taps it (a student in train mode must not run its head twice); pooled_map(feat[-2]) recomputes it
    model = _model(name, kwargs).eval()
    module = model.pooled_map_module()
    tapped = []
    handle = module.register_forward_hook(lambda m, i, o: tapped.append(o.clone())) if module is not None else None
    size = 8 if name in SLOW else 32
    try:
        with torch.no_grad():
            feats, _ = model(torch.randn(2, 3, size, size), is_feat=True)
            recomputed = model.pooled_map(feats[-2])
    finally:
        if handle is not None:
            handle.remove()
    assert (module is not None) == (name in POOLED_MAP_CHANNELS)
    assert len(tapped) == (2 if name in ("MobileNetV2", "mobilenetv2_035", "repmobilenetv2") else int(bool(module)))
    pooled_map = tapped[0] if module is not None else feats[-2]
    assert pooled_map.dim() == 4 and pooled_map.shape[1] == POOLED_MAP_CHANNELS.get(name, feats[-2].shape[1])
    assert torch.allclose(pooled_map.mean(dim=(2, 3)), feats[-1], atol=1e-6)
    assert torch.allclose(pooled_map, recomputed, atol=1e-6)


def test_a_new_family_pools_feat_minus_2_unless_it_says_otherwise():
    assert _TinyNet().pooled_map_module() is None
