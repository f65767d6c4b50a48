"""ImageNet end to end on a small ImageFolder of real JPEG files (tests/conftest.py ``jpeg_imagenet``): a teacher,
a KD student of a torchvision-format ResNet-34 file, a CRD MobileNetV1 student resumed within its epoch,
validation.py, and torchrun with two gloo processes against one. Crops of 32 pixels (the networks pool adaptively)
keep the CPU time small; the recipe's other values (lr, weight decay, loss weights) are ImageNet's."""
import os
import signal
import subprocess
import sys

import pytest
import torch
import torchvision

import train_student
import train_teacher
import validation
from assembly.options import parse_configurations
from assembly.student import build_student_runs
from helper.checkpoint import load_checkpoint
from helper.logging import read_metrics
from tests.conftest import imagenet_args, interrupt_after_saves
from tests.spawn import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TORCHRUN_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "ROLE_RANK",
                 "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID")
TOL = dict(atol=2e-4, rtol=1e-3)


@pytest.fixture(scope="module")
def resnet34_file(tmp_path_factory):
    """torchvision's ResNet-34 (random weights, the data set's 3 classes) saved as torchvision names its files."""
    torch.manual_seed(0)
    path = str(tmp_path_factory.mktemp("torchvision") / "resnet34-333f7ec4.pth")
    torch.save(torchvision.models.resnet34(weights=None, num_classes=3).state_dict(), path)
    return path


def _run_dir(save_dir):
    [name] = os.listdir(os.path.join(str(save_dir), "student_model"))
    return os.path.join(str(save_dir), "student_model", name)


@pytest.mark.slow
def test_a_teacher_trains_with_the_imagenet_recipe_and_validation_scores_it(jpeg_imagenet, tmp_path, capsys):
    result = train_teacher.main(imagenet_args(jpeg_imagenet, tmp_path) + ["--model", "ResNet18"])
    run_dir = os.path.join(str(tmp_path), "models", "ResNet18_imagenet_lr_0.2_decay_0.0001_trial_0")
    state = load_checkpoint(os.path.join(run_dir, "ResNet18_last.pth"))
    assert "layer4.1.bn2.running_var" in state["model"] and state["model"]["fc.weight"].shape == (3, 512)
    assert (state["opt"]["dataset"], state["opt"]["crop_size"]) == ("imagenet", 32)
    capsys.readouterr()
    # validation.py reads the data set and crop from the checkpoint's options
    scored = validation.main(["--model", "ResNet18", "--model_path", os.path.join(run_dir, "ResNet18_last.pth"),
                              "--data_root", jpeg_imagenet, "--device", "cpu", "--num_workers", "0"])
    assert scored["acc"] == pytest.approx(result["last_acc"])
    assert "on imagenet test (6 images)" in capsys.readouterr().out


@pytest.mark.slow
def test_a_kd_student_of_a_torchvision_resnet34_file(jpeg_imagenet, resnet34_file, tmp_path, capsys):
    argv = imagenet_args(jpeg_imagenet, tmp_path) + ["--path_t", resnet34_file, "--model_t", "ResNet34",
                                                     "--model_s", "ResNet18", "--distill", "kd"]
    train_student.main(argv)
    out = capsys.readouterr().out
    teacher_line = next(line for line in out.splitlines() if line.startswith("teacher ResNet34: test acc"))
    assert "distilling ResNet34 -> ResNet18 with 'kd' (r=0.5, a=0.5, b=0.0)" in out
    run_dir = _run_dir(tmp_path)
    assert os.path.basename(run_dir) == "S_ResNet18_T_ResNet34_imagenet_kd_r_0.5_a_0.5_b_0.0_1"
    assert load_checkpoint(os.path.join(run_dir, "ResNet18_last.pth"))["opt"]["kd_T"] == 1.0
    # the torchvision file itself through validation.py: the accuracy the run printed for its teacher
    scored = validation.main(["--model", "ResNet34", "--model_path", resnet34_file, "--dataset", "imagenet",
                              "--data_root", jpeg_imagenet, "--device", "cpu", "--crop_size", "32",
                              "--num_workers", "0"])
    assert teacher_line.startswith(f"teacher ResNet34: test acc {scored['acc']:.2f}")


def test_the_torchvision_file_name_names_the_teacher_and_loads_strictly(jpeg_imagenet, resnet34_file, tmp_path):
    argv = imagenet_args(jpeg_imagenet, tmp_path) + ["--path_t", resnet34_file, "--model_s", "MobileNetV1",
                                                     "--distill", "kd"]
    plan = build_student_runs(parse_configurations(argv))
    assert plan.teacher.arch == "ResNet34"
    loaded = plan.teacher.members[0].state_dict()
    for key, value in torch.load(resnet34_file, weights_only=True).items():
        assert torch.equal(loaded[key], value), key


@pytest.mark.slow
def test_a_crd_mobilenetv1_student_resumed_within_its_epoch(jpeg_imagenet, resnet34_file, tmp_path, monkeypatch,
                                                             capsys):
    method = ["--path_t", resnet34_file, "--model_s", "MobileNetV1", "--distill", "crd", "--nce_k", "32"]
    train_student.main(imagenet_args(jpeg_imagenet, tmp_path / "whole") + method)
    # the recipe draws CRD's negatives with replacement, so 32 > the 8 other-class images is allowed
    assert "nce_replace=True" in capsys.readouterr().out
    whole = load_checkpoint(os.path.join(_run_dir(tmp_path / "whole"), "MobileNetV1_last.pth"))
    assert whole["distiller"]["criterion.contrast.memory_v1"].shape == (12, 128)

    cut = imagenet_args(jpeg_imagenet, tmp_path / "cut") + method + ["--save_steps", "1"]
    interrupt_after_saves(monkeypatch, 2)  # 12 images in batches of 4: stopped after step 2 of 3
    with pytest.raises(KeyboardInterrupt):
        train_student.main(cut)
    monkeypatch.undo()
    train_student.main(cut + ["--resume", "auto"])
    assert "resumed within epoch 1, after 8 of its samples" in capsys.readouterr().out
    resumed = load_checkpoint(os.path.join(_run_dir(tmp_path / "cut"), "MobileNetV1_last.pth"))
    for part in ("model", "distiller"):
        for key, value in whole[part].items():
            assert torch.equal(resumed[part][key], value), f"{part} {key}"


def _torchrun(args):
    env = {k: v for k, v in os.environ.items() if k not in TORCHRUN_VARS}
    env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
           "train_student.py"] + args
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"torchrun did not finish:\n{out[-3000:]}")
    assert proc.returncode == 0, out[-3000:]
    return out


@pytest.mark.slow
def test_two_gloo_processes_match_one_with_the_global_batch(jpeg_imagenet, resnet34_file, tmp_path):
    # --global_batch_size 12: one process takes 12, each of two takes 6, the lr is the global batch's in both. One
    # step: MobileNetV1's last maps are 1x1 at a 32-pixel crop, so its BatchNorms see few values and float summation
    # differences grow fast over further steps
    method = ["--path_t", resnet34_file, "--model_s", "MobileNetV1", "--distill", "crd", "--nce_k", "16",
              "--sync_bn", "--global_batch_size", "12"]

    def args(save):
        return [a for a in imagenet_args(jpeg_imagenet, save) if a not in ("--batch_size", "4")] + method

    out = _torchrun(args(tmp_path / "ddp"))
    train_student.main(args(tmp_path / "one"))
    assert "--global_batch_size 12 / 2 processes" in out
    got = load_checkpoint(os.path.join(_run_dir(tmp_path / "ddp"), "MobileNetV1_last.pth"))
    ref = load_checkpoint(os.path.join(_run_dir(tmp_path / "one"), "MobileNetV1_last.pth"))
    assert got["opt"]["world_size"] == 2 and (got["opt"]["batch_size"], ref["opt"]["batch_size"]) == (6, 12)
    moved = 0
    for key, value in ref["model"].items():
        if key.endswith("num_batches_tracked"):
            assert torch.equal(got["model"][key], value), key
            continue
        torch.testing.assert_close(got["model"][key], value, **TOL, msg=lambda m: f"{key}: {m}")
        moved += 1
    assert moved and got["optimizer"]["state"]
    for key in ("criterion.contrast.memory_v1", "criterion.contrast.memory_v2"):
        torch.testing.assert_close(got["distiller"][key], ref["distiller"][key], **TOL)
    rows = read_metrics(_run_dir(tmp_path / "ddp"))
    assert [r["epoch"] for r in rows] == [1]
    assert rows[0]["train_loss"] == pytest.approx(read_metrics(_run_dir(tmp_path / "one"))[0]["train_loss"], rel=1e-4)
