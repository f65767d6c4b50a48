"""BYOT through the command-line entry points: recipe, per-exit metrics, validation of all exits, resume.

Also the BYOT README command lines, translated to this toolkit's flags (only data/run-length flags appended):

    python train.py train multi_resnet18_kd --data-dir DIR
        -> python train_student.py --distill byot --model_s multi_resnet18_kd --data_root DIR
    python train.py train multi_resnet18_kd --resume ./save_checkpoints/multi_resnet18_kd/checkpoint_latest.pth.tar
        -> python train_student.py --distill byot --model_s multi_resnet18_kd --resume auto
    python train.py test multi_resnet50_kd --data-dir DIR --resume CKPT
        -> python validation.py --model multi_resnet50_kd --data_root DIR --model_path CKPT
"""
import json
import os

import pytest
import torch

import train_student
import validation
from assembly.options import parse_configurations, parse_student_options
from helper.checkpoint import load_checkpoint, save_checkpoint
from helper.logging import read_metrics
from models.multi_resnet import multi_resnet18_kd, multi_resnet50_kd

from tests.conftest import cpu_args

RUN = "S_multi_resnet18_kd_T_self_cifar100_byot_r_0.9_a_0.1_b_1e-06_1"
README_TRAIN = "--distill byot --model_s multi_resnet18_kd"


@pytest.fixture(scope="module")
def byot_run(micro_cifar, tmp_path_factory):
    save = tmp_path_factory.mktemp("byot")
    res = train_student.main(README_TRAIN.split() + cpu_args(micro_cifar, save, epochs=2))
    return save, os.path.join(save, "student_model", RUN), res


@pytest.mark.slow
def test_byot_run_uses_the_recipe_and_logs_every_exit(byot_run, capsys):
    save, run, res = byot_run
    assert res["run_dir"] == run
    summary = json.load(open(os.path.join(run, "summary.json")))
    o = summary["options"]
    # reference recipe for everything not given on the command line; -b/--epochs given here win
    assert (o["learning_rate"], o["lr_decay_epochs"], o["kd_T"], o["data_norm"]) == (0.1, "75,130,180", 3.0, "byot")
    assert (o["gamma"], o["alpha"], o["beta"]) == (0.9, 0.1, 1e-6)
    assert (o["epochs"], o["batch_size"]) == (2, 16)
    assert o["path_t"] is None and o["model_t"] is None
    rows = read_metrics(run)
    assert [r["epoch"] for r in rows] == [1, 2]
    for r in rows:
        for k in ("test_acc_c1", "test_acc_c2", "test_acc_c3", "test_acc_c4", "test_acc_ensemble",
                  "train_acc_c1", "train_acc_c2", "train_acc_c3", "train_acc_c4"):
            assert 0.0 <= r[k] <= 100.0, k
        assert r["test_acc"] == r["test_acc_c4"]  # best epoch is chosen by classifier 4/4
        assert r["train_acc"] == pytest.approx(r["train_acc_c4"])
        assert r["train_loss"] == pytest.approx(0.9 * r["loss_ce"] + 0.1 * r["loss_kl"] + 1e-6 * r["loss_kd"],
                                                rel=1e-4)
    best = max(rows, key=lambda r: (r["test_acc"], -r["epoch"]))
    assert summary["best_epoch"] == best["epoch"]
    assert summary["best_exits"] == {k: best[k] for k in ("test_acc_c1", "test_acc_c2", "test_acc_c3",
                                                          "test_acc_c4", "test_acc_ensemble")}
    tags = os.listdir(os.path.join(run, "tensorboard"))
    assert tags, "tensorboard events written"
    ck = load_checkpoint(os.path.join(run, "multi_resnet18_kd_best.pth"))
    assert ck["epoch"] == best["epoch"]


@pytest.mark.slow
def test_validation_prints_all_exits_and_the_ensemble(byot_run, micro_cifar, capsys):
    _, run, _ = byot_run
    rows = read_metrics(run)
    best = json.load(open(os.path.join(run, "summary.json")))["best_epoch"]
    capsys.readouterr()
    # the checkpoint stores --data_norm byot, so validation normalises as training did
    res = validation.main(["--model", "multi_resnet18_kd", "--model_path",
                           os.path.join(run, "multi_resnet18_kd_best.pth"), "--dataset", "cifar100", "--data_root",
                           micro_cifar, "--device", "cpu"])
    out = capsys.readouterr().out
    row = rows[best - 1]
    for k in (1, 2, 3, 4):
        assert res[f"acc_c{k}"] == pytest.approx(row[f"test_acc_c{k}"])
        assert f"classifier {k}/4" in out
    assert res["acc_ensemble"] == pytest.approx(row["test_acc_ensemble"]) and "ensemble" in out


@pytest.mark.slow
def test_resume_continues_at_the_next_epoch_with_identical_state(byot_run, micro_cifar, tmp_path):
    _, full_run, _ = byot_run
    cut = tmp_path / "cut"
    train_student.main(README_TRAIN.split() + cpu_args(micro_cifar, cut, epochs=1))  # "killed" after epoch 1
    # the README's resume line: --resume the latest checkpoint of the run folder
    res = train_student.main(README_TRAIN.split() + cpu_args(micro_cifar, cut, epochs=2) + ["--resume", "auto"])
    run = cut / "student_model" / RUN
    rows = read_metrics(run)
    assert [r["epoch"] for r in rows] == [1, 2]  # the reference repeated the checkpoint's epoch
    a = load_checkpoint(os.path.join(full_run, "multi_resnet18_kd_last.pth"))
    b = load_checkpoint(str(run / "multi_resnet18_kd_last.pth"))
    assert a["epoch"] == b["epoch"] == 2
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    full_rows = read_metrics(full_run)
    for key in ("test_acc_c1", "test_acc_c4", "train_acc_c2", "train_loss"):
        assert rows[1][key] == pytest.approx(full_rows[1][key]), key
    assert res["last_acc"] == pytest.approx(full_rows[1]["test_acc"])


@pytest.mark.slow
def test_readme_test_line_for_a_reference_checkpoint(micro_cifar, tmp_path, capsys):
    # "python train.py test multi_resnet50_kd --resume CKPT": a reference-style file (DataParallel prefix,
    # 'state_dict' key, the dead downsample modules) evaluates with validation.py
    torch.manual_seed(0)
    ref = multi_resnet50_kd(num_classes=100, unused_downsample=True)
    path = str(tmp_path / "model_best.path.tar")
    save_checkpoint({"epoch": 173, "arch": "multi_resnet50_kd", "best_prec1": 0.0,
                     "state_dict": {"module." + k: v for k, v in ref.state_dict().items()}}, path)
    res = validation.main(["--model", "multi_resnet50_kd", "--model_path", path, "--data_root", micro_cifar,
                           "--device", "cpu", "--data_norm", "byot"])
    out = capsys.readouterr().out
    assert {"acc_c1", "acc_c2", "acc_c3", "acc_c4", "acc_ensemble"} <= set(res) and "classifier 4/4" in out


def test_byot_needs_no_teacher_and_rejects_plain_students(micro_cifar, tmp_path):
    opt = parse_student_options(README_TRAIN.split() + cpu_args(micro_cifar, tmp_path))
    assert opt.path_t is None and opt.learning_rate == 0.1 and opt.batch_size == 16 and opt.epochs == 1
    # the start of the run names the values BYOT's recipe chose (--epochs/--batch_size were given)
    line = parse_configurations(README_TRAIN.split() + cpu_args(micro_cifar, tmp_path))[0].describe()
    assert line.startswith("defaults not given as flags: --distill byot: learning_rate=0.1, "
                           "lr_decay_epochs=75,130,180, lr_decay_rate=0.1, kd_T=3.0, data_norm=byot, ")
    assert "epochs=200" not in line and "batch_size" not in line
    with pytest.raises(ValueError, match="multi-exit student"):
        train_student.main(["--distill", "byot", "--model_s", "resnet8"] + cpu_args(micro_cifar, tmp_path))
    # models' plain forward stays the deepest classifier, so they also work as ordinary students
    m = multi_resnet18_kd(num_classes=10)
    assert m(torch.randn(1, 3, 32, 32)).shape == (1, 10)
