import json
import os
import subprocess
import sys
import tarfile

import numpy as np
import pytest
import torch

from assembly.options import parse_student_options, parse_teacher_options, student_parser, teacher_run_name
from assembly.student import build_student_side, build_teacher
from dataset import build_dataset
from dataset.cifar import write_cifar_format
from helper.checkpoint import load_checkpoint, save_checkpoint
from models import build_model

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def recorded_calls(tmp_path, script, args=(), **env):
    """Run ``scripts/<script>`` with a stand-in interpreter that records each command line instead of training."""
    log = tmp_path / "calls.jsonl"
    stub = tmp_path / "recording_python"
    stub.write_text(f"#!{sys.executable}\nimport json, sys\n"
                    f"open({str(log)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n")
    stub.chmod(0o755)
    proc = subprocess.run(["bash", os.path.join("scripts", script), *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PY": str(stub), **env}, timeout=120)
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return proc, calls


def fetched_teacher(save_dir, arch="resnet32x4"):
    path = save_dir / "models" / f"{arch}_vanilla" / "ckpt_epoch_240.pth"
    save_checkpoint({"model": build_model(arch).state_dict()}, str(path))
    return path


def test_run_cifar_distill_has_repdistiller_lines(tmp_path):
    teacher = fetched_teacher(tmp_path / "save")
    proc, calls = recorded_calls(tmp_path, "run_cifar_distill.sh", SAVE_DIR=str(tmp_path / "save"))
    assert proc.returncode == 0, proc.stderr
    table = {}
    for args in calls:
        assert args[0] == "train_student.py"
        opt = parse_student_options(args[1:])
        assert opt.path_t == str(teacher) and opt.model_t == "resnet32x4" and opt.model_s == "resnet8x4"
        # the weights as the line gives them (None: not given); parsing resolves the rest (-r: RepDistiller's 1)
        given = student_parser().parse_args(args[1:])
        key = opt.distill + ("+ls" if opt.logit_stand else "") + ("+" + opt.optimizer if opt.optimizer != "sgd" else "")
        key += "+ctkd" if opt.ctkd else ""
        table.setdefault(key, []).append((given.gamma, given.alpha, given.beta))
    assert table["kd"] == table["kd+ctkd"] == [(0.1, 0.9, 0.0)]
    # the logit-family lines of issue #12: their authors' weights, or (LS) the per-pair presets left to the parser
    assert table["dist"] == [(1.0, 0.0, 2.0)] and table["nkd"] == [(1.0, 0.0, 1.0)]
    assert table["ttm"] == table["wttm"] == [(1.0, 0.0, 45.0)]
    assert table["kd+ls"] == table["dkd+ls"] == table["mlkd+ls"] == [(None, None, None)]
    assert table["mlkd"] == [(0.1, 0.0, 0.9)]
    # DKD's beta is left to its per-pair preset (mdistiller's configs)
    assert not any(args[args.index("--distill") + 1] == "dkd" and "--dkd_beta" in args for args in calls)
    assert table["crd"] == [(None, 0.0, 0.8), (None, 1.0, 0.8)]
    expected_beta = {"hint": 100, "attention": 1000, "similarity": 3000, "correlation": 0.02, "vid": 1, "rkd": 1,
                     "pkt": 30000, "abound": 1, "factor": 200, "fsp": 50, "nst": 50}
    for method, beta in expected_beta.items():
        assert table[method] == [(None, 0.0, beta)], method
    assert table["ickd"] == [(None, 0.0, 2.5), (None, 1.0, 2.5)]
    # issue #13's catkd, srd and pad: CAT-KD's per-pair presets left to the parser, SRD's and PAD's weights given
    assert table["catkd"] == [(None, None, None)]
    assert table["srd"] == table["pad"] == [(1.0, 0.0, 1.0)]
    assert table["sskd"] == [(0.1, 0.9, 1.0)]
    assert "dkd" in table


def test_run_cifar_distill_takes_the_pair_and_finds_the_vanilla_scripts_teacher(tmp_path):
    save = tmp_path / "save"
    # the folder train_teacher.py (and so run_cifar_vanilla.sh) writes a wrn_40_2 teacher to
    run = save / "models" / teacher_run_name(parse_teacher_options(["--model", "wrn_40_2"]))
    unfinished = save / "models" / teacher_run_name(parse_teacher_options(["--model", "wrn_40_2",
                                                                           "--learning_rate", "0.01"]))
    unfinished.mkdir(parents=True)
    (unfinished / "wrn_40_2_last.pth").write_bytes(b"")  # no summary.json: still training, never used
    run.mkdir(parents=True)
    (run / "wrn_40_2_last.pth").write_bytes(b"")
    (run / "summary.json").write_text("{}")
    proc, calls = recorded_calls(tmp_path, "run_cifar_distill.sh", ["wrn_40_2", "wrn_16_2", "--epochs", "1"],
                                 SAVE_DIR=str(save))
    assert proc.returncode == 0, proc.stderr
    script = open(os.path.join(ROOT, "scripts", "run_cifar_distill.sh")).read()
    assert len(calls) == script.count('"$PY" train_student.py') >= 23
    for args in calls:
        opt = parse_student_options(args[1:])
        assert (opt.path_t, opt.model_t, opt.model_s, opt.epochs) == (str(run / "wrn_40_2_last.pth"), "wrn_40_2",
                                                                      "wrn_16_2", 1)


def test_run_cifar_distill_without_a_teacher_says_where_to_get_one(tmp_path):
    proc, calls = recorded_calls(tmp_path, "run_cifar_distill.sh", ["vgg13", "vgg8"], SAVE_DIR=str(tmp_path / "s"))
    assert proc.returncode == 1 and calls == []
    assert proc.stderr.strip().splitlines()[-1].startswith("error: no teacher checkpoint for 'vgg13'")
    assert "fetch_pretrained_teachers.sh" in proc.stderr and "run_cifar_vanilla.sh" in proc.stderr


def test_run_scripts_use_the_project_environment_when_it_exists(tmp_path):
    """PY given wins; else the project's .venv (quickstart.sh/test.sh make it); else python on PATH."""
    probe = ("source scripts/python.sh; echo \"$PY\"")
    venv_python = os.path.join(ROOT, ".venv", "bin", "python")
    env = {k: v for k, v in os.environ.items() if k != "PY"}
    out = subprocess.run(["bash", "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True).stdout.strip()
    assert out == (venv_python if os.access(venv_python, os.X_OK) else "python")
    out = subprocess.run(["bash", "-c", probe], cwd=ROOT, env={**env, "PY": "/opt/py"}, capture_output=True,
                         text=True).stdout.strip()
    assert out == "/opt/py"
    for script in ("run_cifar_distill.sh", "run_cifar_vanilla.sh", "run_checkpointkd.sh", "run_byot.sh",
                   "train_emkd.sh", "search_emkd.sh"):
        text = open(os.path.join(ROOT, "scripts", script)).read()
        assert 'source "$(dirname "${BASH_SOURCE[0]}")/python.sh"' in text and 'PY="${PY:-python}"' not in text


@pytest.fixture()
def micro_data(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (60, 3, 32, 32), dtype=np.uint8)
    write_cifar_format(str(tmp_path), "cifar100", x[:40], np.arange(40), x[40:], np.arange(20))
    return build_dataset("cifar100", str(tmp_path))


def test_every_script_line_builds(micro_data, tmp_path):
    teacher = fetched_teacher(tmp_path / "save")
    proc, calls = recorded_calls(tmp_path, "run_cifar_distill.sh", SAVE_DIR=str(tmp_path / "save"))
    assert proc.returncode == 0, proc.stderr
    for args in calls:
        # the micro set's 40 images: CRD's negatives and SemCKD's full batches need less than the scripts' sizes
        opt = parse_student_options(args[1:] + ["--nce_k", "8", "--batch_size", "16", "--device", "cpu"])
        teacher = build_teacher(opt, micro_data, torch.device("cpu"))
        student, d = build_student_side(opt, micro_data, torch.device("cpu"), teacher)
        assert opt.model_t == "resnet32x4" and d.name == opt.distill
        # -r: 1 as in RepDistiller, or the recipe's (0.1; SimKD trains without CE)
        assert opt.gamma == 1.0 or opt.distill in ("kd", "mlkd", "sskd", "simkd")


def _fetch():
    import importlib.util
    spec = importlib.util.spec_from_file_location("fetch", os.path.join(ROOT, "scripts", "fetch_pretrained_teachers.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_fetch_teachers_from_local_archive(tmp_path, capsys):
    fetch = _fetch()
    src = tmp_path / "src" / "cifar_teachers"
    good = build_model("resnet56").state_dict()
    save_checkpoint({"model": good}, str(src / "resnet56_vanilla" / "ckpt_epoch_240.pth"))
    # a file that does not fit its architecture must be refused
    save_checkpoint({"model": build_model("resnet8").state_dict()}, str(src / "vgg13_vanilla" / "ckpt_epoch_240.pth"))
    tar_path = tmp_path / "cifar_teachers.tar"
    with tarfile.open(tar_path, "w") as tar:
        tar.add(src, arcname="cifar_teachers")
    save = tmp_path / "save"
    rc = fetch.main(["--save_dir", str(save), "--tar", str(tar_path), "--models", "resnet56,vgg13", "--offline"])
    assert rc == 1
    out = capsys.readouterr()
    placed = save / "models" / "resnet56_vanilla" / "ckpt_epoch_240.pth"
    assert placed.is_file()
    assert torch.equal(load_checkpoint(str(placed))["model"]["fc.weight"], good["fc.weight"])
    assert not (save / "models" / "vgg13_vanilla" / "ckpt_epoch_240.pth").exists()
    assert "does not fit architecture 'vgg13'" in out.out and "missing: vgg13" in out.err
    assert "cifar_teachers.tar" in out.err
    # second run: present files are checked and skipped, nothing else needed
    rc = fetch.main(["--save_dir", str(save), "--models", "resnet56", "--offline"])
    assert rc == 0 and "present" in capsys.readouterr().out


def test_fetch_offline_without_archive_says_what_to_do(tmp_path, capsys):
    rc = _fetch().main(["--save_dir", str(tmp_path), "--models", "wrn_40_2", "--offline"])
    assert rc == 1
    err = capsys.readouterr().err
    assert "missing: wrn_40_2" in err and "--tar" in err and "run_cifar_vanilla.sh" in err


def test_scripts_run_under_sh_as_the_seed_readmes_call_them():
    proc = subprocess.run(["sh", "scripts/run_cifar_vanilla.sh", "--help"], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PY": sys.executable}, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("usage:") == 6  # one help text per teacher line


def test_run_imagenet_has_both_pairs_for_every_method_and_takes_the_recipe(tmp_path):
    import distiller_zoo

    proc, calls = recorded_calls(tmp_path, "run_imagenet.sh", ["--epochs", "1"], DATA=str(tmp_path / "imagenet"))
    assert proc.returncode == 0, proc.stderr
    methods = ["kd", "kd+dot", "attention", "crd", "ofd", "reviewkd", "dkd", "dist", "mlkd"]
    seen = {}
    for args in calls:
        assert args[0] == "train_student.py" and args[-2:] == ["--epochs", "1"]
        given = student_parser().parse_args(args[1:])
        key = given.distill + ("+dot" if given.optimizer == "dot" else "")
        seen.setdefault(key, []).append((given.model_t, given.model_s, given.path_t))
        # no line repeats the recipe: loss weights, lr and batch come from --dataset imagenet
        assert (given.gamma, given.alpha, given.beta, given.learning_rate) == (None,) * 4
        assert "--batch_size" not in args and "--global_batch_size" not in args
        if given.distill in distiller_zoo.REGISTRY:  # ofd and reviewkd arrive with their own issue
            opt = parse_student_options(args[1:])
            assert (opt.dataset, opt.epochs, opt.weight_decay, opt.lr_decay_epochs) == ("imagenet", 1, 1e-4,
                                                                                         "30,60,90")
    assert sorted(seen) == sorted(methods)
    for method in methods:
        assert seen[method] == [("ResNet34", "ResNet18", "torchvision"), ("ResNet50", "MobileNetV1", "torchvision")]


def test_run_imagenet_starts_torchrun_across_nodes(tmp_path):
    proc, calls = recorded_calls(tmp_path, "run_imagenet.sh", ["r50_mv1"], NPROC="8", NNODES="2",
                                 MASTER_ADDR="node0", MASTER_PORT="29400", RUN_ID="job7", TEACHER_R50="r50.pth")
    assert proc.returncode == 0, proc.stderr
    assert len(calls) == 9
    for args in calls:
        assert args[:8] == ["-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=8", "--rdzv_backend=c10d",
                            "--rdzv_endpoint=node0:29400", "--rdzv_id=job7", "train_student.py"]
        assert args[args.index("--path_t") + 1] == "r50.pth"
