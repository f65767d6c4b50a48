"""Bad option values stop at parse time with one `error:` line naming the flag (issue #10, bad options).

Every refusal happens before the run or data folder exists; the FitNet hint layer and the unused lr milestones are
checked here too (the strict-JSON metrics file: tests/helper/test_logging.py).
"""
from types import SimpleNamespace

import pytest
import torch

import train_student
import train_teacher
from assembly.options import parse_student_options, parse_teacher_options
from distiller_zoo import DistillContext, FitNet, build_distiller
from engine.fit import warn_unused_milestones
from helper.util import device_names
from models import build_model

DECAY_HINT = "must be comma-separated non-negative epochs, e.g. 150,180,210"
BAD_COMMON = [
    (["--learning_rate", "0"], "error: --learning_rate must be a positive number, got 0.0"),
    (["--learning_rate=-0.1"], "error: --learning_rate must be a positive number, got -0.1"),
    (["--learning_rate", "nan"], "error: --learning_rate must be a positive number, got nan"),
    (["--test_batch_size", "0"], "error: --test_batch_size must be at least 1, got 0"),
    (["--lr_decay_epochs", "10;20"], f"error: --lr_decay_epochs '10;20' {DECAY_HINT}"),
    (["--lr_decay_epochs", "a,b"], f"error: --lr_decay_epochs 'a,b' {DECAY_HINT}"),
    (["--lr_decay_epochs=-5,10"], f"error: --lr_decay_epochs '-5,10' {DECAY_HINT}"),
    (["--lr_decay_epochs", "10,-5"], f"error: --lr_decay_epochs '10,-5' {DECAY_HINT}"),
    (["--device", "gpu"], f"error: --device 'gpu' is not a device; use one of {', '.join(device_names())}"),
    (["--device", "cuda:x"], f"error: --device 'cuda:x' is not a device; use one of {', '.join(device_names())}"),
    (["--device", "cuda:N"], f"error: --device 'cuda:N' is not a device; use one of {', '.join(device_names())}"),
    (["--overwrite", "--resume", "auto"],
     "error: --overwrite starts the run afresh and --resume continues it; give one of them"),
    (["--lr_schedule", "cosine", "--lr_decay_epochs", "30"], "error: --lr_schedule cosine does not read "
     "--lr_decay_epochs (it anneals from --learning_rate to 0 over --epochs); drop it or give --lr_schedule step"),
    (["--lr_schedule", "cosine", "--lr_decay_epochs", "30", "--lr_decay_rate", "0.2"], "error: --lr_schedule cosine "
     "does not read --lr_decay_epochs or --lr_decay_rate (it anneals from --learning_rate to 0 over --epochs); drop "
     "them or give --lr_schedule step"),
    (["--lr_decay_epochs", "30", "--lr_schedule", "multistep"], "error: --lr_schedule multistep does not read "
     "--lr_decay_epochs (it decays after CheckpointKD's epochs 149,179,209,239); for other epochs give --lr_schedule "
     "step --lr_decay_epochs"),
]


def folders(tmp_path):
    return ["--save_dir", str(tmp_path / "save"), "--data_root", str(tmp_path / "data"), "--dataset", "cifar100"]


@pytest.mark.parametrize("script", [train_teacher, train_student], ids=["teacher", "student"])
@pytest.mark.parametrize("flags,line", BAD_COMMON, ids=[" ".join(f) for f, _ in BAD_COMMON])
def test_bad_values_stop_before_any_folder_exists(script, flags, line, tmp_path):
    argv = folders(tmp_path) + flags
    if script is train_student:
        argv += ["--path_t", str(tmp_path / "teacher.pth")]
    with pytest.raises(SystemExit) as stop:
        script.main(argv)
    assert stop.value.code == line
    assert not (tmp_path / "save").exists() and not (tmp_path / "data").exists()


@pytest.mark.parametrize("value", ["0", "-1", "inf"])
def test_kd_temperature_must_be_positive(value, tmp_path):
    with pytest.raises(SystemExit) as stop:
        train_student.main(folders(tmp_path) + [f"--kd_T={value}", "--path_t", str(tmp_path / "teacher.pth")])
    assert stop.value.code == f"error: --kd_T must be a positive number, got {float(value)}"
    assert not (tmp_path / "save").exists()


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:1", "mps"])
def test_known_devices_parse(device):
    # parsing only: whether this machine has the device is checked when the run starts
    assert parse_teacher_options(["--device", device]).device == device


def test_valid_decay_lists_parse():
    assert parse_teacher_options(["--lr_decay_epochs", "60, 120,180"]).lr_decay_epochs == "60, 120,180"
    assert parse_teacher_options(["--lr_decay_epochs", ""]).lr_decay_epochs == ""  # no decay at all


def _hint_context(hint_layer: int):
    opt = parse_student_options(["--distill", "hint", "--model_s", "resnet8", "--path_t", "t.pth",
                                       "--hint_layer", str(hint_layer)])
    student, teacher = build_model("resnet8", num_classes=10).eval(), build_model("resnet8", num_classes=10).eval()
    probe = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        feat_s, _ = student(probe, is_feat=True)
        feat_t, _ = teacher(probe, is_feat=True)
    return DistillContext(FitNet.select_options(opt), student, teacher, list(feat_s), list(feat_t), num_classes=10)


def test_hint_layer_on_the_pooled_vector_names_the_flag_and_the_valid_range():
    # resnet8's features: four maps (0-3), then the pooled vector (4)
    with pytest.raises(ValueError) as err:
        build_distiller("hint", _hint_context(4))
    assert str(err.value) == ("--hint_layer 4 is the pooled feature vector, not a feature map; this student's "
                              "feature maps are --hint_layer 0 to 3")
    assert build_distiller("hint", _hint_context(3)).hint_layer == 3


@pytest.mark.parametrize("epochs,line", [
    (30, "warning: --lr_decay_epochs 150,180,210 never apply with --epochs 30"),
    (181, "warning: --lr_decay_epochs 210 never apply with --epochs 181"),
    # milestone 180 lowers the lr from epoch 181 on: with --epochs 180 it never applies
    (180, "warning: --lr_decay_epochs 180,210 never apply with --epochs 180"),
])
def test_milestones_past_the_last_epoch_are_named(epochs, line, capsys):
    warn_unused_milestones(SimpleNamespace(lr_schedule="step", lr_decay_epochs="150,180,210", epochs=epochs),
                           quiet=False)
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and out[0].startswith(line + " (")


def test_milestones_that_all_apply_print_nothing(capsys):
    warn_unused_milestones(SimpleNamespace(lr_schedule="step", lr_decay_epochs="150,180,210", epochs=211),
                           quiet=False)
    assert capsys.readouterr().out == ""
