"""Teachers on ImageNet (engine/teacher.py): architectures named by torchvision's weight file names, and
--path_t torchvision's refusals (no test downloads)."""
import pytest

from engine.teacher import arch_from_file_name, arch_from_path, load_teacher, torchvision_weights


def test_torchvision_file_names_name_the_imagenet_resnets():
    assert arch_from_file_name("/w/resnet34-333f7ec4.pth", "imagenet") == "ResNet34"
    assert arch_from_file_name("resnet50-19c8e357.pth", "imagenet") == "ResNet50"
    assert arch_from_file_name("resnet34-b627a593.pth", "imagenet") == "ResNet34"  # torchvision's newer file
    assert arch_from_file_name("resnet152-b121ed2d.pth", "imagenet") is None  # not in the zoo
    assert arch_from_file_name("resnet34-333f7ec4.pth", "cifar") is None
    assert arch_from_file_name("resnet34_best.pth", "imagenet") is None
    # a run folder's name still comes first
    assert arch_from_path("save/models/ResNet18_imagenet_lr_0.2_trial_0/resnet34-333f7ec4.pth", None,
                          "imagenet") == "ResNet18"


def test_path_t_torchvision_needs_the_architecture_and_one_torchvision_has():
    with pytest.raises(ValueError, match="--path_t torchvision needs --model_t, the architecture whose torchvision "
                                         "weights to take"):
        load_teacher("torchvision", 1000, "cpu", family="imagenet")
    with pytest.raises(ValueError, match="torchvision publishes no weights for 'MobileNetV1'"):
        torchvision_weights("MobileNetV1")
