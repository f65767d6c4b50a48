"""--optimizer dot through train_student.py: KD+DOT trains, resumes exactly, and what it cannot do is refused."""
import os

import pytest
import torch

import train_student
import train_teacher
from engine.dot import DOT
from helper.checkpoint import load_checkpoint, save_checkpoint
from models import build_model

# KD+DOT as mdistiller's CIFAR configs (-r 0.1 -a 0.9 -b 0, delta 0.075)
KD_DOT = ["--distill", "kd", "--model_s", "resnet8", "-r", "0.1", "-a", "0.9", "-b", "0", "--optimizer", "dot"]


def teacher_path(tmp_path) -> str:
    path = str(tmp_path / "resnet8_vanilla" / "ckpt_epoch_1.pth")
    if not os.path.exists(path):
        torch.manual_seed(0)
        save_checkpoint({"model": build_model("resnet8", num_classes=100).state_dict()}, path)
    return path


def run(tiny_cifar, save_dir, path_t, epochs, *extra):
    return train_student.main(["--path_t", path_t, "--dataset", "cifar100", "--data_root", tiny_cifar,
                               "--save_dir", str(save_dir), "--epochs", str(epochs), "--batch_size", "64",
                               "--device", "cpu", "--save_freq", "1"] + KD_DOT + list(extra))


def test_kd_dot_resumes_exactly(tiny_cifar, tmp_path):
    path_t = teacher_path(tmp_path)
    straight = run(tiny_cifar, tmp_path / "straight", path_t, 2)
    assert os.path.basename(straight["run_dir"]) == "S_resnet8_T_resnet8_cifar100_kd_dot_r_0.1_a_0.9_b_0.0_1"
    first = run(tiny_cifar, tmp_path / "killed", path_t, 1)
    resumed = run(tiny_cifar, tmp_path / "killed", path_t, 2, "--resume", "auto")
    assert resumed["run_dir"] == first["run_dir"]
    a = load_checkpoint(os.path.join(straight["run_dir"], "resnet8_last.pth"))
    b = load_checkpoint(os.path.join(resumed["run_dir"], "resnet8_last.pth"))
    assert a["epoch"] == b["epoch"] == 2
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    # the checkpoint holds DOT's two buffers per parameter and its delta, and the options it ran with
    groups, state = a["optimizer"]["param_groups"], a["optimizer"]["state"]
    assert len(groups) == 1 and groups[0]["delta"] == 0.075 and groups[0]["momentum"] == 0.9
    assert {k for s in state.values() for k in s} == {"momentum_buffer", "momentum_kd_buffer"}
    assert (a["opt"]["optimizer"], a["opt"]["dot_delta"]) == ("dot", 0.075)
    # and DOT moved the weights differently from plain SGD over the same batches
    sgd = train_student.main(["--path_t", path_t, "--dataset", "cifar100", "--data_root", tiny_cifar,
                              "--save_dir", str(tmp_path / "sgd"), "--epochs", "1", "--batch_size", "64",
                              "--device", "cpu"] + KD_DOT[:-2])
    assert os.path.basename(sgd["run_dir"]) == "S_resnet8_T_resnet8_cifar100_kd_r_0.1_a_0.9_b_0.0_1"
    c = load_checkpoint(os.path.join(first["run_dir"], "resnet8_last.pth"))
    d = load_checkpoint(os.path.join(sgd["run_dir"], "resnet8_last.pth"))
    assert not torch.equal(c["model"]["fc.weight"], d["model"]["fc.weight"])
    # resuming that plain-SGD checkpoint with DOT is refused in one line
    with pytest.raises(ValueError, match=r"written with --optimizer sgd; resume with --optimizer sgd, not dot"):
        run(tiny_cifar, tmp_path / "sgd", path_t, 2, "--resume", os.path.join(sgd["run_dir"], "resnet8_last.pth"))


def test_refusals(tiny_cifar, tmp_path, capsys):
    path_t = teacher_path(tmp_path)
    with pytest.raises(SystemExit, match="no Nesterov variant"):
        run(tiny_cifar, tmp_path, path_t, 1, "--nesterov", "1")
    with pytest.raises(SystemExit, match=r"--dot_delta must lie in \[0, --momentum\]"):
        run(tiny_cifar, tmp_path, path_t, 1, "--dot_delta", "0.2")
    with pytest.raises(SystemExit):
        run(tiny_cifar, tmp_path, path_t, 1, "--optimizer", "adam")
    assert "argument --optimizer: invalid choice: 'adam'" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="a model trained from scratch has none"):
        train_teacher.main(["--model", "resnet8", "--optimizer", "dot", "--dataset", "cifar100", "--data_root",
                            tiny_cifar, "--save_dir", str(tmp_path), "--epochs", "1", "--device", "cpu"])
    assert not os.path.exists(tmp_path / "student_model")


def test_dot_is_the_optimizer_of_the_run(tiny_cifar, tmp_path):
    from assembly.options import parse_configurations
    from assembly.student import build_student_runs
    from engine.fit import build_optimizer

    argv = ["--path_t", teacher_path(tmp_path), "--dataset", "cifar100", "--data_root", tiny_cifar, "--save_dir",
            str(tmp_path), "--device", "cpu", "--dot_delta", "0.09"] + KD_DOT
    opt = parse_configurations(argv)[0].options
    assert (opt.optimizer, opt.dot_delta) == ("dot", 0.09)
    assert parse_configurations(argv[:-2])[0].options.optimizer == "sgd"
    plan = build_student_runs(parse_configurations(argv), None)
    r = plan.runs[0]
    o = build_optimizer(r.student, r.distiller, r.opt, torch.device("cpu"))
    assert isinstance(o, DOT) and o.param_groups[0]["delta"] == 0.09


@pytest.mark.slow
def test_torchrun_kd_dot_matches_one_process_with_the_global_batch(tmp_path_factory, tmp_path):
    """Under torchrun both backwards' gradients are averaged over the processes (DDP's no_sync + one
    all-reduce per backward), so 2 x 16 equals 1 x 32 up to summation order."""
    from tests.cli.test_distributed_runs import (_assert_moved, _assert_states_close, _common, _only_run_dir,
                                                 _torchrun, data_root, teacher)

    root = data_root.__wrapped__(tmp_path_factory)
    _, path_t = teacher.__wrapped__(root, tmp_path_factory)
    method = ["--path_t", path_t, "--sync_bn"] + KD_DOT
    _torchrun("train_student.py", _common(root, tmp_path / "ddp", batch_size=16) + method
              + ["--learning_rate", "0.025", "--lr_scale", "linear"])
    train_student.main(_common(root, tmp_path / "one", batch_size=32) + method + ["--learning_rate", "0.05"])
    ddp_dir, one_dir = _only_run_dir(tmp_path / "ddp"), _only_run_dir(tmp_path / "one")
    got = load_checkpoint(os.path.join(ddp_dir, "resnet8_last.pth"))
    ref = load_checkpoint(os.path.join(one_dir, "resnet8_last.pth"))
    _assert_states_close(got["model"], ref["model"], "student")
    _assert_moved(got["model"], load_checkpoint(path_t)["model"], "student")
    assert "momentum_kd_buffer" in next(iter(got["optimizer"]["state"].values()))
