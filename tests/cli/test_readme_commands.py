"""Every command line of the EMKD (001), KDrefine (003) and ICKD (004) seed READMEs, end to end on tiny data.

The lines are copied verbatim from the READMEs; only data/run-length flags are appended (``--epochs``,
``--dataset/--data_root``, ``--device cpu``, ``--batch_size``) and, for CRD, ``--nce_k 16`` because the
default 16384 negatives need a CIFAR-sized training set. The tests run in a scratch folder, so the README's
relative paths (``./save/models/...``, ``./checkpoints/...``, ``save/student_model/...``) are used as written;
the teachers are one-epoch runs of train_teacher.py copied to those paths.
``sh scripts/fetch_pretrained_teachers.sh`` (all three READMEs) needs the network and is not run here.
"""
import json
import os
import shlex
import shutil

import pytest

import convert
import search
import train_student
import train_teacher
import validation
from assembly.search import phase2_candidates
from helper.checkpoint import load_checkpoint
from helper.logging import read_metrics


EMKD_LINES = [
    "CUDA_VISIBLE_DEVICES=0 python train_student.py --model_t resnet110 --path_t ./checkpoints/cifar100/resnet110_vanilla/ckpt_epoch_240.pth --distill crd --model_s resnet20 -a 0 -b 0.8 --trial 1",  # noqa: E501
    "CUDA_VISIBLE_DEVICES=0 python train_student.py --model_t resnet110 --path_t ./checkpoints/cifar100/resnet110_vanilla/ckpt_epoch_240.pth --distill crd --mc 1 --mc_weight 0.001 --model_s myresnet20 --block_depth 3,7,2 -a 0 -b 0.8 --trial 1",  # noqa: E501
    "CUDA_VISIBLE_DEVICES=0 python search.py --model_t resnet110 --path_t ./checkpoints/cifar100/resnet110_vanilla/ckpt_epoch_240.pth --distill crd --mc 1 --mc_weight 0.001 --model_s myresnet20 --block_depth 3,3,3 -a 0 -b 0.8 --trial 1",  # noqa: E501
]
KDREFINE_LINES = [
    "python train_student.py --path_t ./save/models/resnet110_vanilla/ckpt_epoch_240.pth --distill kdrefine --model_s represnet20  -r 0.1 -a 0.9 -b 0 --trial 1",  # noqa: E501
    # the README wraps both paths in backticks (markdown); a shell would try to execute them
    "python convert.py --arch represnet20 --blocktype AMBB --load `save/student_model/represnet20_last.pth` --save `save/student_model/represnet20_deploy.pth`",  # noqa: E501
    "python validation.py --model represnet20 --model_path save/student_model/resnet110_2_resnet20_deploy_72.13.pth --blocktype ACTDB --deploy_flag True",  # noqa: E501
]
ICKD_LINES = [
    "python train_student.py --path_t ./save/models/resnet32x4_vanilla/ckpt_epoch_240.pth --distill ickd --model_s resnet8x4 -a 0 -b 2.5 --trial 1",  # noqa: E501
    "python train_student.py --path_t ./save/models/resnet32x4_vanilla/ckpt_epoch_240.pth --distill ickd --model_s resnet8x4 -a 1 -b 2.5 --trial 1",  # noqa: E501
]
SCRIPTS = {"train_student.py": train_student, "search.py": search, "convert.py": convert,
           "validation.py": validation}


def run_line(line, extra=()):
    tokens = [t for t in shlex.split(line.replace("`", "")) if not t.startswith("CUDA_VISIBLE_DEVICES=")]
    assert tokens[0] == "python" and tokens[1] in SCRIPTS, line
    return SCRIPTS[tokens[1]].main(tokens[2:] + list(extra))


def train_flags(data_root, epochs=1):
    return ["--dataset", "cifar100", "--data_root", data_root, "--device", "cpu", "--batch_size", "20",
            "--epochs", str(epochs), "--save_freq", "1"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, teacher_cifar):
    wd = tmp_path_factory.mktemp("readme")
    places = {"resnet110": ["save/models/resnet110_vanilla/ckpt_epoch_240.pth",
                            "checkpoints/cifar100/resnet110_vanilla/ckpt_epoch_240.pth"],
              "resnet32x4": ["save/models/resnet32x4_vanilla/ckpt_epoch_240.pth"]}
    for arch, dests in places.items():
        train_teacher.main(["--model", arch, "--dataset", "cifar100", "--data_root", teacher_cifar, "--save_dir",
                            str(wd / "teacher_runs"), "--epochs", "1", "--batch_size", "16", "--device", "cpu"])
        src = wd / "teacher_runs" / "models" / f"{arch}_cifar100_lr_0.05_decay_0.0005_trial_0" / f"{arch}_last.pth"
        for d in dests:
            os.makedirs(os.path.dirname(wd / d), exist_ok=True)
            shutil.copy(src, wd / d)
    return wd


@pytest.mark.slow
def test_kdrefine_readme(workdir, seed_cifar, monkeypatch, capsys):
    monkeypatch.chdir(workdir)
    # two epochs: checkpoints follow --epochs (KDrefine saved only at a hard-coded epoch 240)
    res = run_line(KDREFINE_LINES[0], train_flags(seed_cifar, epochs=2))
    run = os.path.join(".", "save", "student_model", "S_represnet20_T_resnet110_cifar100_kdrefine_r_0.1_a_0.9_b_0.0_1")
    assert res["run_dir"] == run
    last = load_checkpoint(os.path.join(run, "represnet20_last.pth"))
    assert last["epoch"] == 2 and os.path.isfile(os.path.join(run, "ckpt_epoch_2.pth"))
    assert any("duplicate1" in k for k in last["model"])  # trained in the multi-branch AMBB form
    rows = read_metrics(run)
    assert [r["lr"] for r in rows] == [pytest.approx(0.01)] * 2  # KDrefine's lr default
    r = rows[0]
    assert r["train_loss"] == pytest.approx(0.1 * r["loss_ce"] + 0.9 * r["loss_kl"], rel=1e-4)

    # the README converts and evaluates files directly under save/student_model/
    shutil.copy(os.path.join(run, "represnet20_last.pth"), "save/student_model/represnet20_last.pth")
    conv = run_line(KDREFINE_LINES[1])
    assert conv["params_after"] == 277_636
    # two epochs on 40 images leave the BN running statistics far from the activations (outputs ~1e3 on
    # random input), so the float32 agreement is judged relative to the output scale here
    assert conv["max_abs_diff"] <= 1e-5 * max(1.0, conv["max_abs_output"])
    shutil.copy("save/student_model/represnet20_deploy.pth",
                "save/student_model/resnet110_2_resnet20_deploy_72.13.pth")
    v = run_line(KDREFINE_LINES[2], ["--dataset", "cifar100", "--data_root", seed_cifar, "--device", "cpu"])
    assert v["deploy"] and v["params"] == 277_636
    assert v["acc"] == pytest.approx(res["last_acc"])  # fused model == trained model
    # the spelling of the same check
    v2 = validation.main(["--model", "represnet20", "--model_path", "save/student_model/represnet20_deploy.pth",
                          "--blocktype", "AMBB", "--deploy_flag", "True", "--dataset", "cifar100", "--data_root",
                          seed_cifar, "--device", "cpu"])
    assert v2["acc"] == v["acc"]


@pytest.mark.slow
def test_ickd_readme(workdir, seed_cifar, monkeypatch):
    monkeypatch.chdir(workdir)
    for line, alpha in zip(ICKD_LINES, (0.0, 1.0)):
        res = run_line(line, train_flags(seed_cifar))
        assert res["run_dir"] == os.path.join(
            ".", "save", "student_model", f"S_resnet8x4_T_resnet32x4_cifar100_ickd_r_1.0_a_{alpha}_b_2.5_1")
        r = read_metrics(res["run_dir"])[0]
        assert 0 < r["loss_kd"] <= 4.0
        assert r["train_loss"] == pytest.approx(r["loss_ce"] + alpha * r["loss_kl"] + 2.5 * r["loss_kd"], rel=1e-4)
        state = load_checkpoint(os.path.join(res["run_dir"], "resnet8x4_last.pth"))
        # the student embedding is trained and checkpointed with the run
        assert {"embed_s.conv2d.weight", "embed_s.l2norm.running_mean"} <= set(state["distiller"])


@pytest.mark.slow
def test_emkd_readme(workdir, seed_cifar, monkeypatch, capsys):
    monkeypatch.chdir(workdir)
    crd = ["--nce_k", "16"]
    res = run_line(EMKD_LINES[0], train_flags(seed_cifar) + crd)
    assert res["run_dir"] == os.path.join(".", "save", "student_model",
                                          "S_resnet20_T_resnet110_cifar100_crd_r_1.0_a_0.0_b_0.8_1")

    res = run_line(EMKD_LINES[1], train_flags(seed_cifar) + crd)
    run = os.path.join(".", "save", "student_model",
                       "S_myresnet20_3-7-2_T_resnet110_cifar100_crd_mc_r_1.0_a_0.0_b_0.8_1")
    assert res["run_dir"] == run
    opts = json.load(open(os.path.join(run, "summary.json")))["options"]
    assert opts["mc"] == 1 and opts["block_depth"] == [3, 7, 2] and opts["mc_weight"] == 0.001
    assert "milestone checking" in capsys.readouterr().out

    # --test 1: evaluate the trained student through --path_t, as EMKD does
    ev = train_student.main(["--model_t", "resnet110", "--path_t", os.path.join(run, "myresnet20_best.pth"),
                             "--model_s", "myresnet20", "--block_depth", "3,7,2", "--test", "1",
                             "--dataset", "cifar100", "--data_root", seed_cifar, "--device", "cpu"])
    assert ev["test_acc"] == pytest.approx(res["best_acc"])
    assert "test acc" in capsys.readouterr().out

    out = run_line(EMKD_LINES[2], train_flags(seed_cifar) + crd)
    cands = [c["block_depth"] for c in out["candidates"]]
    assert cands[:3] == [[3, 3, 3], [3, 7, 2], [3, 11, 1]]
    phase1_best = max(out["candidates"][:3], key=lambda c: c["score"])
    y, z = phase1_best["block_depth"][1:]
    assert cands[3:] == phase2_candidates(3, 18, y, z)
    assert out["best_block_depth"] in cands
    dirs = {c["run_dir"] for c in out["candidates"]}
    assert len(dirs) == len(cands)  # one folder per candidate
    for c in out["candidates"]:
        assert os.path.isfile(os.path.join(c["run_dir"], "myresnet20_last.pth"))
        assert c["run_dir"].startswith(out["search_dir"])
    table = open(os.path.join(out["search_dir"], "search_summary.md")).read()
    assert table.count("\n| ") == len(cands) + 1 and "**best**" in table
    # the candidates were scored on the held-out part of the training set (4 of 40 images)
    assert "val split (4 images, 36 training)" in capsys.readouterr().out
