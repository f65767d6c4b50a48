"""--trials N: several students on the same batches, each identical to a run of its own."""
import json
import os
import shutil

import pytest
import torch

import train_student
import train_teacher
from helper.checkpoint import load_checkpoint
from helper.logging import read_metrics
from assembly.options import parse_configurations, parse_student_options, trial_id, trial_options
from helper.rng import RNGStream

from tests.conftest import common_args


@pytest.fixture(scope="module")
def teacher_ckpt(tiny_cifar, tmp_path_factory):
    save = tmp_path_factory.mktemp("teacher")
    train_teacher.main(common_args(tiny_cifar, save) + ["--model", "resnet8"])
    return os.path.join(save, "models", "resnet8_cifar100_lr_0.05_decay_0.0005_trial_0", "ckpt_epoch_1.pth")


def student_args(tiny_cifar, save, teacher_ckpt, epochs=2):
    # CRD draws its negatives from the global RNG: the check that trials keep separate streams
    return common_args(tiny_cifar, save, epochs) + ["--path_t", teacher_ckpt, "--distill", "crd", "--nce_k", "40",
                                                    "--model_s", "resnet8", "--seed", "5"]


def run_folder(save, trial):
    return os.path.join(save, "student_model", f"S_resnet8_T_resnet8_cifar100_crd_r_1.0_a_0.0_b_0.8_{trial}")


def assert_same_state(a, b):
    for part in ("model", "distiller"):
        assert a[part].keys() == b[part].keys()
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), f"{part}.{k}"
    moments_a = [s["momentum_buffer"] for s in a["optimizer"]["state"].values()]
    moments_b = [s["momentum_buffer"] for s in b["optimizer"]["state"].values()]
    assert len(moments_a) == len(moments_b) > 0
    assert all(torch.equal(x, y) for x, y in zip(moments_a, moments_b))


def test_trial_ids_and_options():
    assert [trial_id("1", i) for i in range(3)] == ["1", "2", "3"]
    assert [trial_id("abl", i) for i in range(3)] == ["abl", "abl_1", "abl_2"]
    base = parse_student_options(["--seed", "7", "--trial", "1", "--trials", "3", "--path_t", "x"])
    own = trial_options(base, 2)
    assert (own.seed, own.trial, own.data_seed, own.trials) == (9, "3", 7, 1)
    assert (base.seed, base.trial, base.trials) == (7, "1", 3)


def test_rng_stream_is_independent_of_the_global_rng():
    torch.manual_seed(1)
    stream = RNGStream.capture()
    expected = torch.rand(8)
    torch.manual_seed(123)
    with stream.active():
        first = torch.rand(4)
    global_draw = torch.rand(2)
    with stream.active():
        second = torch.rand(4)
    # the stream continues its own sequence across activations...
    assert torch.equal(torch.cat([first, second]), expected)
    # ...and the global generator continues as if the stream's draws never happened
    torch.manual_seed(123)
    assert torch.equal(torch.rand(2), global_draw)


def test_trials_equal_runs_of_their_own(tiny_cifar, teacher_ckpt, tmp_path, capsys):
    together = tmp_path / "together"
    res = train_student.main(student_args(tiny_cifar, together, teacher_ckpt) + ["--trials", "2"])
    out = capsys.readouterr().out
    assert len(res["trials"]) == 2 and "2 trials: best acc" in out
    assert out.count("[trial 2] epoch") == 2

    # trial 0 is the plain run; trial 1 is seed 6, trial id 2, with the shared data order of seed 5
    alone0 = tmp_path / "alone0"
    train_student.main(student_args(tiny_cifar, alone0, teacher_ckpt))
    alone1 = tmp_path / "alone1"
    train_student.main(student_args(tiny_cifar, alone1, teacher_ckpt)
                       + ["--seed", "6", "--trial", "2", "--data_seed", "5"])
    for trial, alone in (("1", alone0), ("2", alone1)):
        a = load_checkpoint(os.path.join(run_folder(together, trial), "resnet8_last.pth"))
        b = load_checkpoint(os.path.join(run_folder(alone, trial), "resnet8_last.pth"))
        assert_same_state(a, b)
        rows = read_metrics(run_folder(together, trial))
        rows_alone = read_metrics(run_folder(alone, trial))
        assert [r["epoch"] for r in rows] == [1, 2]
        assert [r["train_loss"] for r in rows] == [r["train_loss"] for r in rows_alone]
        summary = json.load(open(os.path.join(run_folder(together, trial), "summary.json")))
        assert summary["options"]["trial"] == trial
    # the two students differ (different seeds), so the comparison above is not vacuous
    a = load_checkpoint(os.path.join(run_folder(together, "1"), "resnet8_last.pth"))
    b = load_checkpoint(os.path.join(run_folder(together, "2"), "resnet8_last.pth"))
    assert not torch.equal(a["model"]["conv1.weight"], b["model"]["conv1.weight"])


def test_trials_resume_when_one_trial_is_an_epoch_behind(tiny_cifar, teacher_ckpt, tmp_path):
    full = tmp_path / "full"
    train_student.main(student_args(tiny_cifar, full, teacher_ckpt, epochs=3) + ["--trials", "2"])

    # a run killed while writing epoch 2's checkpoints: trial 1 has them, trial 2 is still at epoch 1
    part = tmp_path / "part"
    train_student.main(student_args(tiny_cifar, part, teacher_ckpt, epochs=2) + ["--trials", "2"])
    behind = run_folder(part, "2")
    shutil.copy(os.path.join(behind, "ckpt_epoch_1.pth"), os.path.join(behind, "resnet8_last.pth"))
    os.remove(os.path.join(behind, "ckpt_epoch_2.pth"))
    train_student.main(student_args(tiny_cifar, part, teacher_ckpt, epochs=3) + ["--trials", "2", "--resume", "auto"])
    for trial in ("1", "2"):
        a = load_checkpoint(os.path.join(run_folder(full, trial), "resnet8_last.pth"))
        b = load_checkpoint(os.path.join(run_folder(part, trial), "resnet8_last.pth"))
        assert a["epoch"] == b["epoch"] == 3
        assert_same_state(a, b)
        rows = read_metrics(run_folder(part, trial))
        assert [r["epoch"] for r in rows] == [1, 2, 3]


def test_trials_refuse_a_single_resume_path(tiny_cifar, teacher_ckpt, tmp_path):
    with pytest.raises(SystemExit, match="--resume auto"):
        train_student.main(student_args(tiny_cifar, tmp_path, teacher_ckpt) + ["--trials", "2", "--resume", "x.pth"])
    with pytest.raises(SystemExit, match="--trials must be at least 1"):
        train_student.main(student_args(tiny_cifar, tmp_path, teacher_ckpt) + ["--trials", "0"])


def test_trials_resume_starts_a_trial_without_checkpoint_afresh(tiny_cifar, teacher_ckpt, tmp_path):
    full = tmp_path / "full"
    train_student.main(student_args(tiny_cifar, full, teacher_ckpt, epochs=2) + ["--trials", "2"])
    part = tmp_path / "part"
    train_student.main(student_args(tiny_cifar, part, teacher_ckpt, epochs=1) + ["--trials", "2"])
    shutil.rmtree(run_folder(part, "2"))  # killed before trial 2 wrote anything
    train_student.main(student_args(tiny_cifar, part, teacher_ckpt, epochs=2) + ["--trials", "2", "--resume", "auto"])
    for trial in ("1", "2"):
        assert_same_state(load_checkpoint(os.path.join(run_folder(full, trial), "resnet8_last.pth")),
                          load_checkpoint(os.path.join(run_folder(part, trial), "resnet8_last.pth")))


def test_several_methods_side_by_side_equal_runs_of_their_own(tiny_cifar, teacher_ckpt, tmp_path, capsys):
    # kd needs logits only, crd features: the shared teacher forward must serve both
    base = common_args(tiny_cifar, tmp_path / "together", 2) + ["--path_t", teacher_ckpt, "--model_s", "resnet8",
                                                                "--seed", "5"]
    # crd first: building kd afterwards moves the global RNG, which crd's negatives must not see
    res = train_student.main(base + ["--distill", "crd,kd", "--nce_k", "40"])
    out = capsys.readouterr().out
    assert "[resnet8 kd trial 1] epoch 2/2" in out and "[resnet8 crd trial 1] epoch 2/2" in out
    assert len(res["trials"]) == 2
    for method, folder in (("kd", "S_resnet8_T_resnet8_cifar100_kd_r_0.1_a_0.9_b_0.0_1"),
                           ("crd", "S_resnet8_T_resnet8_cifar100_crd_r_1.0_a_0.0_b_0.8_1")):
        alone = tmp_path / f"alone_{method}"
        train_student.main(common_args(tiny_cifar, alone, 2) + ["--path_t", teacher_ckpt, "--model_s", "resnet8",
                                                                 "--seed", "5", "--distill", method, "--nce_k", "40"])
        # each method keeps its own default loss weights (kd: -r 0.1 -a 0.9, crd: -b 0.8) and folder
        a = load_checkpoint(os.path.join(tmp_path / "together", "student_model", folder, "resnet8_last.pth"))
        b = load_checkpoint(os.path.join(alone, "student_model", folder, "resnet8_last.pth"))
        assert_same_state(a, b)


def test_student_grid_with_trials_and_refusals(tmp_path):
    configs = [c.options for c in parse_configurations(["--model_s", "resnet8,MobileNetV2",
                                                         "--distill", "kd,attention", "--path_t", "x",
                                                         "--trials", "2"])]
    assert [(c.model_s, c.distill) for c in configs] == [("resnet8", "kd"), ("resnet8", "attention"),
                                                          ("MobileNetV2", "kd"), ("MobileNetV2", "attention")]
    # each configuration gets RepDistiller's default lr of its student
    assert [c.learning_rate for c in configs] == [0.05, 0.05, 0.01, 0.01]
    # checkpointkd's recipe sets its own epochs and batch size, which runs side by side must share
    with pytest.raises(SystemExit, match="share --epochs"):
        parse_configurations(["--distill", "kd,checkpointkd", "--path_t", "x"])
    # a recipe option the runs need not share (kdrefine's learning rate) stays each run's own
    lrs = [c.options.learning_rate for c in parse_configurations(["--distill", "kd,kdrefine", "--path_t", "x"])]
    assert lrs == [0.05, 0.01]
    with pytest.raises(SystemExit, match="with and without a teacher"):
        parse_configurations(["--distill", "kd,byot", "--model_s", "multi_resnet18_kd",
                                            "--epochs", "1", "--batch_size", "64", "--learning_rate", "0.1",
                                            "--lr_decay_epochs", "1", "--kd_T", "3", "--data_norm", "byot",
                                            "--lr_decay_rate", "0.1", "--weight_decay", "5e-4"])
    with pytest.raises(SystemExit, match="--test 1"):
        parse_configurations(["--distill", "kd,crd", "--test", "1"])
    with pytest.raises(SystemExit, match="--resume auto"):
        parse_configurations(["--distill", "kd,crd", "--resume", "x.pth"])


def test_methods_with_their_own_learning_rates_train_side_by_side(tiny_cifar, teacher_ckpt, tmp_path, capsys):
    # kdrefine's recipe sets lr 0.01, kd takes RepDistiller's 0.05: neither is shared, so each run keeps its own
    base = ["--dataset", "cifar100", "--data_root", tiny_cifar, "--device", "cpu", "--path_t", teacher_ckpt,
            "--model_s", "resnet8", "--seed", "5", "--save_freq", "1"]
    res = train_student.main(base + ["--save_dir", str(tmp_path / "pair"), "--epochs", "1", "--batch_size", "32",
                                     "--distill", "kd,kdrefine"])
    out = capsys.readouterr().out
    assert "[resnet8 kd trial 1] epoch 1/1" in out and "[resnet8 kdrefine trial 1] epoch 1/1" in out
    assert "resnet8 kdrefine: defaults not given as flags: --distill kdrefine: " in out
    runs = {os.path.basename(r["run_dir"]): r["run_dir"] for r in res["trials"]}
    assert sorted(runs) == ["S_resnet8_T_resnet8_cifar100_kd_r_0.1_a_0.9_b_0.0_1",
                            "S_resnet8_T_resnet8_cifar100_kdrefine_r_0.1_a_0.9_b_0.0_1"]
    lr = {name.split("_")[5]: read_metrics(path)[0]["lr"] for name, path in runs.items()}
    assert lr == {"kd": 0.05, "kdrefine": 0.01}
    summary = json.load(open(os.path.join(runs["S_resnet8_T_resnet8_cifar100_kdrefine_r_0.1_a_0.9_b_0.0_1"],
                                          "summary.json")))
    assert summary["options"]["learning_rate"] == 0.01

    # checkpointkd's recipe sets --epochs 200 and --batch_size 128, which the pair would have to share
    pair = base + ["--save_dir", str(tmp_path / "ckd"), "--distill", "kd,checkpointkd"]
    with pytest.raises(SystemExit, match="share --epochs") as refused:
        train_student.main(pair)
    assert "give --epochs explicitly" in str(refused.value)
    res = train_student.main(pair + ["--epochs", "1", "--batch_size", "32"])
    lr = {os.path.basename(r["run_dir"]).split("_")[5]: read_metrics(r["run_dir"])[0]["lr"] for r in res["trials"]}
    # each keeps its own learning rate: RepDistiller's 0.05 and checkpointkd's recipe 0.1
    assert lr == {"kd": 0.05, "checkpointkd": 0.1}


@pytest.mark.slow
def test_teacher_trials_are_checkpointkds_model_num(teacher_cifar, tmp_path):
    # train_teacher.py --trials 2 (CheckpointKD's --model_num 2): trials 0 and 1 in their run folders, each equal to a
    # run of its own with that --seed/--trial and the shared --data_seed
    args = ["--model", "resnet8", "--epochs", "2", "--batch_size", "8", "--device", "cpu", "--dataset", "cifar100",
            "--data_root", teacher_cifar, "--lr_schedule", "cosine", "--seed", "3"]
    res = train_teacher.main(args + ["--trials", "2", "--save_dir", str(tmp_path / "both")])
    names = [f"resnet8_cifar100_lr_0.05_cosine_decay_0.0005_trial_{t}" for t in (0, 1)]
    assert [os.path.basename(r["run_dir"]) for r in res["trials"]] == names
    for trial, seed in ((0, 3), (1, 4)):
        alone = tmp_path / f"alone{trial}"
        train_teacher.main(args + ["--seed", str(seed), "--trial", str(trial), "--data_seed", "3", "--save_dir",
                                   str(alone)])
        a = load_checkpoint(str(tmp_path / "both" / "models" / names[trial] / "resnet8_last.pth"))
        b = load_checkpoint(str(alone / "models" / names[trial] / "resnet8_last.pth"))
        assert a["model"].keys() == b["model"].keys()
        assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
        summary = json.load(open(tmp_path / "both" / "models" / names[trial] / "summary.json"))
        assert (summary["options"]["seed"], summary["options"]["trial"]) == (seed, str(trial))
    first = load_checkpoint(str(tmp_path / "both" / "models" / names[0] / "resnet8_last.pth"))["model"]
    second = load_checkpoint(str(tmp_path / "both" / "models" / names[1] / "resnet8_last.pth"))["model"]
    assert not torch.equal(first["fc.weight"], second["fc.weight"])  # independent initialisations
