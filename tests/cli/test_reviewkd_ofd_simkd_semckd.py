"""ReviewKD, OFD, SimKD and SemCKD through train_student.py: an interrupted and resumed run equals an uninterrupted
one, the method's modules included; OFD's teacher trains in train mode and is resumed with the run; a SimKD
checkpoint is evaluated by validation.py and --test 1 as the network it deploys."""
import os

import pytest
import torch

import train_student
import validation
from helper.checkpoint import load_checkpoint, save_checkpoint
from models import build_model
from tests.conftest import cpu_args

METHODS = ["reviewkd", "ofd", "simkd", "semckd"]


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("teacher") / "resnet8_vanilla" / "ckpt_epoch_1.pth")
    torch.manual_seed(0)
    save_checkpoint({"model": build_model("resnet8", num_classes=100).state_dict()}, path)
    return path


def distill(data_root, save_dir, path_t, method, epochs, *extra):
    # 24 training images in batches of 8
    return train_student.main(["--path_t", path_t, "--model_s", "resnet8", "--distill", method]
                              + cpu_args(data_root, save_dir, epochs=epochs, batch_size=8) + list(extra))


def last(result):
    return load_checkpoint(os.path.join(result["run_dir"], "resnet8_last.pth"))


def assert_same(a, b, what):
    assert a.keys() == b.keys(), what
    for k in a:
        assert torch.equal(a[k], b[k]), f"{what}: {k}"


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_a_resumed_run_equals_an_uninterrupted_one(micro_cifar, tmp_path, teacher_file, method):
    straight = distill(micro_cifar, tmp_path / "straight", teacher_file, method, 2)
    one = last(distill(micro_cifar, tmp_path / "killed", teacher_file, method, 1))
    resumed = distill(micro_cifar, tmp_path / "killed", teacher_file, method, 2, "--resume", "auto")
    a, b = last(straight), last(resumed)
    assert a["epoch"] == b["epoch"] == 2 and one["epoch"] == 1
    assert_same(a["model"], b["model"], "student")
    assert_same(a["distiller"], b["distiller"], "the method's modules")
    # the method's modules trained in the second epoch (the comparison is not of untouched initial values)
    moved = [k for k in a["distiller"] if a["distiller"][k].is_floating_point()
             and not torch.equal(a["distiller"][k], one["distiller"][k])]
    assert moved
    assert resumed["last_acc"] == straight["last_acc"]


@pytest.mark.slow
def test_ofd_distils_from_a_train_mode_teacher_and_resumes_its_statistics(micro_cifar, tmp_path, teacher_file):
    straight = distill(micro_cifar, tmp_path / "straight", teacher_file, "ofd", 2)
    # the default --teacher_bn train_always names the run folder and stores the teacher's moving statistics
    assert (os.path.basename(straight["run_dir"])
            == "S_resnet8_T_resnet8_bntrainalways_cifar100_ofd_r_1.0_a_0.0_b_0.001_1")
    a = last(straight)
    start = load_checkpoint(teacher_file)["model"]
    assert not torch.equal(a["teacher"]["members.0.bn1.running_mean"], start["bn1.running_mean"])
    distill(micro_cifar, tmp_path / "killed", teacher_file, "ofd", 1)
    b = last(distill(micro_cifar, tmp_path / "killed", teacher_file, "ofd", 2, "--resume", "auto"))
    assert_same(a["teacher"], b["teacher"], "teacher")
    assert_same(a["model"], b["model"], "student")
    # margins are buffers of the method, constant: the teacher's BN weights did not change
    assert torch.equal(a["distiller"]["margin0"], b["distiller"]["margin0"])


@pytest.mark.slow
def test_a_simkd_checkpoint_is_evaluated_as_the_network_it_deploys(micro_cifar, tmp_path, teacher_file, capsys):
    res = distill(micro_cifar, tmp_path, teacher_file, "simkd", 1)
    state = last(res)
    # RepDistiller's format stays: 'model' is the student's own state dict
    student = build_model("resnet8", num_classes=100)
    student.load_state_dict(state["model"], strict=True)
    deploy = state["deploy"]
    assert deploy["method"] == "simkd" and deploy["source_size"] is None
    assert {k.split(".")[0] for k in deploy["head"]} == {"projector", "classifier"}
    assert torch.equal(deploy["head"]["classifier.weight"], load_checkpoint(teacher_file)["model"]["fc.weight"])
    path = os.path.join(res["run_dir"], "resnet8_last.pth")
    out = validation.main(["--model", "resnet8", "--model_path", path, "--data_root", micro_cifar, "--device", "cpu"])
    # the run's own evaluation scored the deployed network too
    assert out["acc"] == res["last_acc"]
    assert "as deployed by --distill simkd" in capsys.readouterr().out
    # student + projector + the teacher's classifier
    head = sum(v.numel() for k, v in deploy["head"].items()
               if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))
    assert out["params"] == sum(p.numel() for p in student.parameters()) + head
    test = train_student.main(["--test", "1", "--path_s", path, "--model_s", "resnet8", "--dataset", "cifar100",
                               "--data_root", micro_cifar, "--device", "cpu"])
    assert test["test_acc"] == res["last_acc"]
