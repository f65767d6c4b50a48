"""engine/teacher.py: ensemble teachers, teacher BN mode, snapshot paths and tags."""
import pytest
import torch
import torch.nn as nn

from helper.checkpoint import save_checkpoint, snapshot_paths
from engine.teacher import Teacher, reference_train_bn_epochs, resolve_teacher_paths, teacher_name_from_path, teacher_tag
from models import build_model


def _members(n=3, seed=0):
    torch.manual_seed(seed)
    return [build_model("resnet8", num_classes=10).eval() for _ in range(n)]


def test_ensemble_logits_are_the_mean_of_the_members():
    members = _members()
    x = torch.randn(4, 3, 32, 32)
    ens = Teacher(members).eval()
    with torch.no_grad():
        zs = [m(x) for m in members]
        assert torch.allclose(ens(x), sum(zs) / 3, atol=1e-6)
        feats, logits = ens(x, is_feat=True)
        f0, _ = members[0](x, is_feat=True)
        assert torch.allclose(logits, sum(zs) / 3, atol=1e-6)
        assert all(torch.equal(a, b) for a, b in zip(feats, f0))  # the first teacher's features
        ens2 = Teacher(members, weights=[1, 0, 3], feat_index=2).eval()
        feats2, logits2 = ens2(x, is_feat=True)
        assert torch.allclose(logits2, 0.25 * zs[0] + 0.75 * zs[2], atol=1e-6)
        assert torch.equal(feats2[-1], members[2](x, is_feat=True)[0][-1])
    with pytest.raises(ValueError, match="3 teacher checkpoints"):
        Teacher(members, weights=[1, 1])
    with pytest.raises(ValueError, match="out of range"):
        Teacher(members, feat_index=3)


def _bn_stats(model):
    return torch.cat([m.running_mean.clone() for m in model.modules() if isinstance(m, nn.BatchNorm2d)])


@pytest.mark.parametrize("mode,epoch,epochs,changes", [("eval", 1, 200, False), ("train", 1, 200, True),
                                                       ("train", 191, 200, True), ("train", 192, 200, False),
                                                       ("train", 1, 5, True), ("train", 2, 5, False),
                                                       ("train_always", 200, 200, True)])
def test_teacher_bn_mode(mode, epoch, epochs, changes):
    members = _members(2)
    ens = Teacher(members, bn_mode=mode)
    ens.train()  # whatever mode it was left in: the loop's begin_epoch starts from eval mode
    ens.begin_epoch(epoch, epochs)
    before = [_bn_stats(m) for m in members]
    with torch.no_grad():
        ens(torch.randn(4, 3, 32, 32) + 2)
    after = [_bn_stats(m) for m in members]
    assert all((not torch.equal(a, b)) == changes for a, b in zip(before, after))
    ens.eval()  # evaluation always uses running statistics
    assert not any(m.training for m in ens.modules())


def test_reference_bn_switch_epoch():
    # reference: first validation (-> teacher.eval()) after 0-indexed epoch E-10 (E >= 12), else after epoch 0
    assert reference_train_bn_epochs(200) == 191 and reference_train_bn_epochs(12) == 3
    assert reference_train_bn_epochs(11) == 1 and reference_train_bn_epochs(1) == 1


def test_resolve_teacher_paths(tmp_path):
    run = tmp_path / "wrn_40_2_cifar100_lr_0.1_decay_0.0005_trial_0"
    run.mkdir()
    for e in (20, 40, 60):
        save_checkpoint({"epoch": e, "model": {}}, str(run / f"ckpt_epoch_{e}.pth"))
    assert [e for e, _ in snapshot_paths(str(run))] == [20, 40, 60]
    assert resolve_teacher_paths(str(run), "60,20") == [str(run / "ckpt_epoch_60.pth"), str(run / "ckpt_epoch_20.pth")]
    # a file inside the run folder works as well
    assert resolve_teacher_paths(str(run / "ckpt_epoch_40.pth"), "40") == [str(run / "ckpt_epoch_40.pth")]
    assert resolve_teacher_paths("a.pth,b.pth") == ["a.pth", "b.pth"]
    with pytest.raises(FileNotFoundError, match="epochs there: 20, 40, 60"):
        resolve_teacher_paths(str(run), "80")
    with pytest.raises(ValueError, match="single run folder"):
        resolve_teacher_paths("a.pth,b.pth", "20")
    with pytest.raises(ValueError, match="--path_t is required"):
        resolve_teacher_paths(None)
    # (archs, epochs, number of --path_t checkpoints, given by --teacher_epochs, --teacher_bn)
    assert teacher_tag(["wrn_40_2"] * 2, [60, 120], 2, True, "eval") == "wrn_40_2_ep60-120"
    assert teacher_tag(["resnet110"] * 2, [200, 200], 2, False, "train") == "resnet110x2_bntrain"
    assert teacher_tag(["resnet110"], [240], 1, False, "eval") is None


def test_one_network_is_a_teacher_with_one_member():
    model = _members(1)[0]
    teacher = Teacher.of(model)
    assert Teacher.of(teacher) is teacher and Teacher.of(None) is None
    assert list(teacher.members) == [model] and teacher.feature_model is model
    assert teacher.arch == "ResNet" and teacher.tag is None and teacher.label == "ResNet"
    assert not teacher.stateful and Teacher([model], bn_mode="train").stateful
    assert Teacher([model], names=["resnet8"], tag="resnet8_ep240").label == "resnet8_ep240"
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(teacher(x), model(x))  # one member: its logits, not re-weighted


@pytest.mark.parametrize("path,name", [
    ("save/models/resnet32x4_vanilla/ckpt_epoch_240.pth", "resnet32x4"),
    ("save/models/wrn_40_2_vanilla/ckpt_epoch_240.pth", "wrn_40_2"),
    ("save/models/ResNet50_vanilla/ckpt_epoch_240.pth", "ResNet50"),
    ("save/models/mywrn_16_2_cifar100_lr_0.05_decay_0.0005_trial_0/ckpt_epoch_240.pth", "mywrn_16_2"),
    ("save/models/MobileNetV2_cifar100_lr_0.01_decay_0.0005_trial_0/MobileNetV2_best.pth", "MobileNetV2"),
    ("save/models/resnet110_cifar100_lr_0.05_decay_0.0005_trial_0/ckpt_epoch_240.pth", "resnet110"),
])
def test_teacher_name_parsing(path, name):
    assert teacher_name_from_path(path) == name


def test_teacher_name_unparseable_suggests_model_t():
    with pytest.raises(ValueError, match="--model_t"):
        teacher_name_from_path("save/mystery/ckpt.pth")


def test_teacher_label_is_the_loaded_teacher_s_without_loading_weights(tmp_path):
    from engine.teacher import load_teacher, teacher_label
    run = tmp_path / "resnet8_digits_lr_0.05_decay_0.0005_trial_0"
    other = tmp_path / "resnet8_digits_lr_0.05_decay_0.0005_trial_1"
    state = build_model("resnet8", num_classes=10).state_dict()
    for folder in (run, other):
        for epoch in (1, 2):
            save_checkpoint({"epoch": epoch, "model": state}, str(folder / f"ckpt_epoch_{epoch}.pth"))
    cases = [dict(path_t=str(run / "ckpt_epoch_2.pth")),  # RepDistiller's: the architecture
             dict(path_t=str(run), teacher_epochs="1"),  # a snapshot: resnet8_ep1
             dict(path_t=str(run), teacher_epochs="1,2"),  # a snapshot ensemble: resnet8_ep1-2
             dict(path_t=f"{run}/ckpt_epoch_2.pth,{other}/ckpt_epoch_2.pth"),  # equal epochs: resnet8x2
             dict(path_t=str(run / "ckpt_epoch_1.pth"), teacher_bn="train")]
    labels = [teacher_label(**case) for case in cases]
    assert labels == ["resnet8", "resnet8_ep1", "resnet8_ep1-2", "resnet8x2", "resnet8_ep1_bntrain"]
    assert labels == [load_teacher(num_classes=10, device="cpu", **case).label for case in cases]
    with pytest.raises(FileNotFoundError, match="no snapshot of epoch 3"):
        teacher_label(str(run), teacher_epochs="3")
