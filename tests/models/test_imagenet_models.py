"""The ImageNet family (models/imagenet.py): torchvision's ResNets with its keys, mdistiller's MobileNetV1, the
feature contract, and which family a data set's names mean (spec 3.1, 3.2, 5)."""
import pytest
import torch
import torchvision

from dataset import input_family
from models import IMAGENET, build_model, imagenet_model_dict, model_dict
from models.imagenet import ImageNetResNet, MobileNetV1
from models.resnetv2 import ResNet as CifarResNet

# spec 3.1/3.2 (equal to torchvision's counts), 1000 classes
PARAMS = {"ResNet18": 11_689_512, "ResNet34": 21_797_672, "ResNet50": 25_557_032, "ResNet101": 44_549_160,
          "MobileNetV1": 4_231_976}
STATE_ENTRIES = {"ResNet18": 122, "ResNet34": 218, "ResNet50": 320, "ResNet101": 626}
TORCHVISION = {"ResNet18": "resnet18", "ResNet34": "resnet34", "ResNet50": "resnet50", "ResNet101": "resnet101"}


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_parameter_counts_are_the_spec_ones(name):
    model = build_model(name, 1000, family=IMAGENET)
    assert sum(p.numel() for p in model.parameters()) == PARAMS[name]


@pytest.mark.parametrize("name", ["ResNet18", "ResNet50"])
def test_torchvision_state_dicts_load_strictly_and_compute_the_same(name):
    torch.manual_seed(0)
    reference = getattr(torchvision.models, TORCHVISION[name])(weights=None).eval()
    model = build_model(name, 1000, family=IMAGENET).eval()
    assert len(model.state_dict()) == STATE_ENTRIES[name]
    model.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        feats, logits = model(x, is_feat=True)
        assert torch.equal(model(x), reference(x))
    assert torch.equal(logits, reference(x))


def test_resnet_feature_lists_follow_mdistiller():
    model = build_model("ResNet34", 10, family=IMAGENET).eval()
    with torch.no_grad():
        post, _ = model(torch.randn(2, 3, 224, 224), is_feat=True)
        pre, _ = model(torch.randn(2, 3, 224, 224), is_feat=True, preact=True)
    assert [tuple(f.shape[1:]) for f in post] == [(64, 112, 112), (64, 56, 56), (128, 28, 28), (256, 14, 14),
                                                   (512, 7, 7), (512,)]
    # the stage maps before their last ReLU have negatives; the stem entry is post-ReLU as in mdistiller
    assert [bool((f < 0).any()) for f in pre[:-1]] == [False, True, True, True, True]
    assert all(bool((f >= 0).all()) for f in post)
    # true widths (mdistiller's [256, 512, 1024, 2048] for every depth is its bug), and layer2..4's last BN only
    assert model.stage_channels() == [64, 128, 256, 512]
    assert model.get_bn_before_relu() == [model.layer2[-1].bn2, model.layer3[-1].bn2, model.layer4[-1].bn2]
    bottleneck = build_model("ResNet50", 10, family=IMAGENET)
    assert bottleneck.stage_channels() == [256, 512, 1024, 2048]
    assert bottleneck.get_bn_before_relu()[0] is bottleneck.layer2[-1].bn3


def test_mobilenetv1_taps_at_56_28_14_7_with_128_to_1024_channels():
    model = build_model("MobileNetV1", 1000, family=IMAGENET).eval()
    with torch.no_grad():
        post, logits = model(torch.randn(2, 3, 224, 224), is_feat=True)
        pre, _ = model(torch.randn(2, 3, 224, 224), is_feat=True, preact=True)
    assert [tuple(f.shape[1:]) for f in post[1:-1]] == [(128, 56, 56), (256, 28, 28), (512, 14, 14), (1024, 7, 7)]
    assert tuple(post[0].shape[1:]) == (64, 112, 112) and tuple(post[-1].shape[1:]) == (1024,)
    assert logits.shape == (2, 1000)
    assert all(bool((f < 0).any()) for f in pre[1:-1])
    assert model.stage_channels() == [128, 256, 512, 1024]
    assert model.get_bn_before_relu() == [model.model[i][4] for i in (3, 5, 11, 13)]
    # mdistiller's keys: model.{0..13}.{0..5}.* and fc
    keys = model.state_dict()
    assert "model.13.4.running_var" in keys and "fc.weight" in keys and not any(k.startswith("model.14") for k in keys)


def test_the_data_set_decides_which_resnet50_a_name_means():
    assert input_family("cifar100") == "cifar" and input_family("imagenet") == input_family("tiny_imagenet") == IMAGENET
    assert isinstance(build_model("ResNet50", 100), CifarResNet)
    assert isinstance(build_model("ResNet50", 100, family=IMAGENET), ImageNetResNet)
    # CIFAR names stay available next to the ImageNet ones, and the CIFAR registry gained no name
    assert type(build_model("resnet8", 10, family=IMAGENET)).__module__ == "models.resnet"
    assert "MobileNetV1" not in model_dict and set(imagenet_model_dict) == set(PARAMS)
    assert isinstance(build_model("MobileNetV1", 5, family=IMAGENET), MobileNetV1)


def test_an_imagenet_name_on_a_cifar_data_set_says_which_data_set_it_needs():
    with pytest.raises(ValueError, match="'MobileNetV1' is an ImageNet model; it needs --dataset imagenet"):
        build_model("MobileNetV1", 100)
