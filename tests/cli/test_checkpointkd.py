"""CheckpointKD through the entry points: snapshots, ensemble teachers, teacher BN, selection, README lines.

README lines translated (``${...}`` as in the README; only data/run-length flags are appended in the tests):

    python main.py --data cifar100 --train_teacher --baseline --save_epoch_teacher --epo 20 \
        --data_root ${data_root} --save ${log_root} --arch ${teacher_arch}
    -> python train_teacher.py --dataset cifar100 --save_freq 20 --data_root ${data_root} --save_dir ${log_root} \
        --model ${teacher_arch} --epochs 200 --learning_rate 0.1 --lr_decay_epochs 60,120,180 --batch_size 128 --nesterov

    python main.py --data cifar100 --train_student --desemble_epoch --arch ${student_arch} \
        --teacher_arch ${teacher_arch} --teacher_num ${teacher_num} --T ${temperature} --alpha ${alpha} \
        --teacher_path ${path} --data_root ${data_root} --save ${log_root}
    -> python train_student.py --dataset cifar100 --distill checkpointkd --model_s ${student_arch} \
        --model_t ${teacher_arch} --teacher_epochs <epo, 2*epo, ..., teacher_num*epo> --kd_T ${temperature} \
        -r ${alpha} -a <1 - alpha> --path_t <teacher run folder> --data_root ${data_root} --save_dir ${log_root}
"""
import json
import os
import shlex
import sys

import pytest
import torch
import torch.nn as nn

import train_student
import train_teacher
from dataset import build_dataset
from helper.checkpoint import load_checkpoint
from assembly.options import parse_student_options
from assembly.student import build_student_side, build_teacher
from engine.epoch import train_one_epoch
from helper.logging import read_metrics

from tests.conftest import cpu_args

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                                "scripts"))
import select_teacher  # noqa: E402

TEACHER_RECIPE = "--learning_rate 0.1 --lr_decay_epochs 60,120,180 --nesterov"


@pytest.fixture(scope="module")
def snapshot_run(micro_cifar, tmp_path_factory):
    """resnet8 teacher, 40 epochs with --save_freq 20 (the reference's --save_epoch_teacher --epo 20)."""
    save = tmp_path_factory.mktemp("ckd")
    train_teacher.main(["--model", "resnet8", "--save_freq", "20"] + TEACHER_RECIPE.split()
                       + cpu_args(micro_cifar, save, epochs=40, batch_size=24))
    return save, os.path.join(save, "models", "resnet8_cifar100_lr_0.1_decay_0.0005_trial_0")


def test_teacher_keeps_every_snapshot_with_its_epoch(snapshot_run):
    _, run = snapshot_run
    snaps = sorted(f for f in os.listdir(run) if f.startswith("ckpt_epoch_"))
    assert snaps == ["ckpt_epoch_20.pth", "ckpt_epoch_40.pth"]
    for e in (20, 40):
        ck = load_checkpoint(os.path.join(run, f"ckpt_epoch_{e}.pth"))
        assert ck["epoch"] == e and ck["opt"]["nesterov"] is True
    rows = read_metrics(run)
    assert [r["lr"] for r in rows[:1]] == [pytest.approx(0.1)]


def test_snapshot_ensemble_student(snapshot_run, micro_cifar):
    save, run = snapshot_run
    res = train_student.main(["--distill", "checkpointkd", "--model_s", "resnet8", "--path_t", run,
                              "--teacher_epochs", "20,40"] + cpu_args(micro_cifar, save))
    sdir = os.path.join(save, "student_model", "S_resnet8_T_resnet8_ep20-40_cifar100_checkpointkd_r_0.5_a_0.5_b_0.0_1")
    assert res["run_dir"] == sdir
    o = json.load(open(os.path.join(sdir, "summary.json")))["options"]
    assert (o["kd_T"], o["learning_rate"], o["nesterov"], o["lr_decay_epochs"]) == (5.0, 0.1, True, "60,120,180")
    assert o["model_t"] == "resnet8" and o["teacher_tag"] == "resnet8_ep20-40"
    r = read_metrics(sdir)[0]
    assert r["loss_kl"] > 0 and r["train_loss"] == pytest.approx(0.5 * r["loss_ce"] + 0.5 * r["loss_kl"], rel=1e-4)


def test_comma_separated_teachers_and_feature_methods(snapshot_run, micro_cifar, tmp_path):
    _, run = snapshot_run
    paths = ",".join(os.path.join(run, f"ckpt_epoch_{e}.pth") for e in (20, 40))
    # a feature method distils from the first teacher's features and the averaged logits
    res = train_student.main(["--distill", "attention", "--model_s", "resnet8", "--path_t", paths, "-a", "0.5",
                              "--teacher_weights", "1,3", "--teacher_scale"] + cpu_args(micro_cifar, tmp_path))
    assert "T_resnet8_ep20-40_" in res["run_dir"]
    r = read_metrics(res["run_dir"])[0]
    assert r["loss_kd"] > 0 and r["loss_kl"] > 0


def _teacher_bn_changes(opt_args, micro_cifar, tmp_path, run):
    opt = parse_student_options(["--distill", "kd", "--model_s", "resnet8", "--path_t", run,
                                 "--teacher_epochs", "40"] + opt_args + cpu_args(micro_cifar, tmp_path))
    device = torch.device("cpu")
    data = build_dataset("cifar100", micro_cifar, device)
    teacher = build_teacher(opt, data, device)
    student, distiller = build_student_side(opt, data, device, teacher)
    stats = lambda: torch.cat([m.running_mean.clone() for m in teacher.modules()  # noqa: E731
                               if isinstance(m, nn.BatchNorm2d)])
    before = stats()
    optimizer = torch.optim.SGD(student.parameters(), lr=0.01)
    train_one_epoch(1, data.train, student, distiller, optimizer, opt, device, teacher)
    return teacher, not torch.equal(before, stats())


def test_teacher_bn_mode_is_respected(snapshot_run, micro_cifar, tmp_path):
    _, run = snapshot_run
    teacher, changed = _teacher_bn_changes([], micro_cifar, tmp_path, run)
    # default: eval, one snapshot, nothing about the teacher moves
    assert len(teacher.members) == 1 and not teacher.stateful and not changed
    teacher, changed = _teacher_bn_changes(["--teacher_bn", "train"], micro_cifar, tmp_path, run)
    assert teacher.stateful and changed


def test_select_teacher_on_a_tiny_run(snapshot_run, micro_cifar, tmp_path, capsys):
    _, run = snapshot_run
    out_json = str(tmp_path / "rank.json")
    res = select_teacher.main(["--run_dir", run, "--dataset", "cifar100", "--data_root", micro_cifar,
                               "--fraction", "0.67", "--device", "cpu", "--kd_T", "5", "--json", out_json])
    out = capsys.readouterr().out
    assert sorted(r["epoch"] for r in res["rows"]) == [20, 40]
    assert [r["rank"] for r in res["rows"]] == [1, 2]
    for r in res["rows"]:
        assert 0 <= r["acc"] <= 100 and 0 <= r["entropy"] <= 1 and 0 <= r["mi"] <= 1.5 and r["nll"] > 0
    assert f"recommended teacher: epoch {res['recommended']['epoch']}" in out and "| rank | epoch |" in out
    assert json.load(open(out_json))["recommended"]["epoch"] == res["recommended"]["epoch"]
    with pytest.raises(FileNotFoundError, match="no ckpt_epoch_N.pth"):
        select_teacher.main(["--run_dir", str(tmp_path), "--model", "resnet8", "--data_root", micro_cifar])


def test_run_script_lines_parse():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    text = open(os.path.join(root, "scripts", "run_checkpointkd.sh")).read()
    assert text.count("train_student.py --distill checkpointkd") == 4
    # the two teachers of the full ensemble are independent runs: their own seeds
    assert 'train_teacher.py --model "$T" --trial "$trial" --seed "$trial"' in text
    for flag in ("--teacher_epochs \"$T_EPOCHS\"", "--teacher_epochs \"$E_INTER\"", "--teacher_epochs \"$SNAPSHOTS\"",
                 "ckpt_epoch_${T_EPOCHS}.pth,$RUN1/"):
        assert flag in text
    for model in ("wrn_40_2", "resnet110", "wrn_40_1", "resnet32", "mobilenetv2_075"):
        assert model in text


README_TEACHER = ("python main.py --data cifar100 --train_teacher --baseline --save_epoch_teacher --epo 20 "
                  "--data_root ${data_root} --save ${log_root} --arch ${teacher_arch}")
README_STUDENT = ("python main.py --data cifar100  --train_student  --desemble_epoch  --arch ${student_arch} "
                  "--teacher_arch ${teaher_arch} --teacher_num ${teacher_num} --T ${temperature} --alpha ${alpha}  "
                  "--teacher_path ${path_to_load_pretrained_teacher_model} --data_root ${data_root} --save ${log_root}")


def translate(line, env):
    """The README's main.py line in this toolkit's flags (see the module docstring)."""
    toks = shlex.split(line)[2:]
    args, i = {}, 0
    while i < len(toks):
        key = toks[i]
        if i + 1 < len(toks) and not toks[i + 1].startswith("--"):
            args[key] = toks[i + 1]
            i += 2
        else:
            args[key] = True
            i += 1
    sub = lambda v: env[v[2:-1]] if isinstance(v, str) and v.startswith("${") else v  # noqa: E731
    common = ["--dataset", sub(args["--data"]), "--data_root", sub(args["--data_root"]), "--save_dir",
              sub(args["--save"])]
    if "--train_teacher" in args:
        return "train_teacher.py", common + ["--model", sub(args["--arch"]), "--save_freq", sub(args["--epo"]),
                                             "--epochs", "200", "--batch_size", "128"] + TEACHER_RECIPE.split()
    alpha, n = float(sub(args["--alpha"])), int(sub(args["--teacher_num"]))
    epo = int(env.get("epo", 20))
    return "train_student.py", common + [
        "--distill", "checkpointkd", "--model_s", sub(args["--arch"]), "--model_t", sub(args["--teacher_arch"]),
        "--teacher_epochs", ",".join(str(epo * j) for j in range(1, n + 1)), "--kd_T", sub(args["--T"]),
        "-r", str(alpha), "-a", str(1 - alpha), "--path_t", sub(args["--teacher_path"])]


@pytest.mark.slow
@pytest.mark.parametrize("teacher,student,teacher_num", [("wrn_40_2", "wrn_40_1", 1), ("resnet110", "resnet32", 2),
                                                          ("wrn_40_2", "mobilenetv2_075", 2)])
def test_readme_lines_end_to_end(teacher, student, teacher_num, micro_cifar, tmp_path_factory):
    log_root = str(tmp_path_factory.getbasetemp() / f"ckd_readme_{teacher}")
    env = {"data_root": micro_cifar, "log_root": log_root, "teacher_arch": teacher, "teaher_arch": teacher,
           "student_arch": student, "teacher_num": str(teacher_num), "temperature": "5.0", "alpha": "0.5", "epo": "1"}
    script, args = translate(README_TEACHER, env)
    assert script == "train_teacher.py" and args[args.index("--save_freq") + 1] == "20"
    run = os.path.join(log_root, "models", f"{teacher}_cifar100_lr_0.1_decay_0.0005_trial_0")
    if not os.path.isfile(os.path.join(run, "ckpt_epoch_2.pth")):
        # run-length flags appended: 2 epochs, a snapshot every epoch
        train_teacher.main(args + ["--epochs", "2", "--save_freq", "1", "--device", "cpu", "--batch_size", "24"])
    env["path_to_load_pretrained_teacher_model"] = run
    script, args = translate(README_STUDENT, env)
    assert script == "train_student.py"
    res = train_student.main(args + ["--epochs", "1", "--device", "cpu", "--batch_size", "24"])
    o = json.load(open(os.path.join(res["run_dir"], "summary.json")))["options"]
    assert (o["gamma"], o["alpha"], o["kd_T"], o["model_t"]) == (0.5, 0.5, 5.0, teacher)
    assert o["teacher_epochs"] == ",".join(str(j) for j in range(1, teacher_num + 1))
    tag = f"{teacher}_ep{'-'.join(str(j) for j in range(1, teacher_num + 1))}"
    assert os.path.basename(res["run_dir"]) == f"S_{student}_T_{tag}_cifar100_checkpointkd_r_0.5_a_0.5_b_0.0_1"
    assert 0 <= res["last_acc"] <= 100


@pytest.mark.slow
def test_run_script_end_to_end(micro_cifar, tmp_path):
    import subprocess
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    save = str(tmp_path / "save")
    env = dict(os.environ, PY=sys.executable, PAIRS="resnet8:resnet8", T_EPOCHS="2", SAVE_FREQ="1", INTER="auto",
               SNAPSHOTS="1,2", DATA_ROOT=micro_cifar, SAVE_DIR=save, DEVICE="cpu", OMP_NUM_THREADS="2")
    proc = subprocess.run(["bash", "scripts/run_checkpointkd.sh", "--epochs", "1", "--batch_size", "24"], cwd=root,
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = sorted(os.listdir(os.path.join(save, "student_model")))
    inter = [r for r in runs if r.endswith("_inter")]
    assert len(runs) == 4 and len(inter) == 1
    assert "S_resnet8_T_resnet8_ep2_cifar100_checkpointkd_r_0.5_a_0.5_b_0.0_full" in runs
    assert "S_resnet8_T_resnet8x2_cifar100_checkpointkd_r_0.5_a_0.5_b_0.0_full_ensemble" in runs
    assert "S_resnet8_T_resnet8_ep1-2_cifar100_checkpointkd_r_0.5_a_0.5_b_0.0_snapshot_ensemble" in runs
    # INTER=auto: the intermediate epoch came from scripts/select_teacher.py
    assert inter[0] in ("S_resnet8_T_resnet8_ep1_cifar100_checkpointkd_r_0.5_a_0.5_b_0.0_inter",
                        "S_resnet8_T_resnet8_ep2_cifar100_checkpointkd_r_0.5_a_0.5_b_0.0_inter")
    for t in (0, 1):
        assert os.path.isfile(os.path.join(save, "models", f"resnet8_cifar100_lr_0.1_decay_0.0005_trial_{t}",
                                           "ckpt_epoch_2.pth"))


def test_teacher_bn_train_resume_restores_the_teachers_statistics(snapshot_run, micro_cifar, tmp_path):
    # train_always: the teacher's running statistics move in every epoch, and the student's logits see them
    _, run = snapshot_run
    args = ["--distill", "kd", "--model_s", "resnet8", "--path_t", run, "--teacher_epochs", "20,40",
            "--teacher_bn", "train_always"]
    full = train_student.main(args + cpu_args(micro_cifar, tmp_path / "full", epochs=2))
    train_student.main(args + cpu_args(micro_cifar, tmp_path / "part", epochs=1))
    part = train_student.main(args + cpu_args(micro_cifar, tmp_path / "part", epochs=2) + ["--resume", "auto"])
    a = load_checkpoint(os.path.join(full["run_dir"], "resnet8_last.pth"))
    b = load_checkpoint(os.path.join(part["run_dir"], "resnet8_last.pth"))
    assert set(a["teacher"]) == set(b["teacher"]) and any("running_mean" in k for k in a["teacher"])
    for k in a["teacher"]:
        assert torch.equal(a["teacher"][k], b["teacher"][k]), k
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    # with the default --teacher_bn eval nothing about the teacher is stored
    plain = train_student.main(["--distill", "kd", "--model_s", "resnet8", "--path_t",
                                os.path.join(run, "ckpt_epoch_40.pth")] + cpu_args(micro_cifar, tmp_path / "eval"))
    assert "teacher" not in load_checkpoint(os.path.join(plain["run_dir"], "resnet8_last.pth"))
