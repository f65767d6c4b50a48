import os
import re
import shlex
import tarfile

import numpy as np
import pytest
import torch

import train_student
from dataset import build_dataset
from dataset.cifar import write_cifar_format
from helper.checkpoint import load_checkpoint, save_checkpoint
from models import build_model

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _script_lines(name):
    text = open(os.path.join(ROOT, "scripts", name)).read()
    env = dict(re.findall(r"^(\w+)=(\S+)$", text, flags=re.M))
    out = []
    for line in text.splitlines():
        if "train_student.py" in line and not line.lstrip().startswith("#"):
            args = shlex.split(line.split("train_student.py", 1)[1].replace('"$@"', ""))
            out.append([env.get(a[1:], a) if a.startswith("$") else a for a in args])
    return out


def test_run_cifar_distill_has_repdistiller_lines():
    lines = _script_lines("run_cifar_distill.sh")
    table = {}
    for args in lines:
        opt = train_student.parse_student_options(args)
        assert opt.path_t == "./save/models/resnet32x4_vanilla/ckpt_epoch_240.pth" and opt.model_s == "resnet8x4"
        table.setdefault(opt.distill, []).append((opt.gamma, opt.alpha, opt.beta))
    assert table["kd"] == [(0.1, 0.9, 0.0)]
    assert table["crd"] == [(None, 0.0, 0.8), (None, 1.0, 0.8)]
    expected_beta = {"hint": 100, "attention": 1000, "similarity": 3000, "correlation": 0.02, "vid": 1, "rkd": 1,
                     "pkt": 30000, "abound": 1, "factor": 200, "fsp": 50, "nst": 50}
    for method, beta in expected_beta.items():
        assert table[method] == [(None, 0.0, beta)], method
    assert table["ickd"] == [(None, 0.0, 2.5), (None, 1.0, 2.5)]
    assert "dkd" in table


@pytest.fixture()
def micro_data(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (60, 3, 32, 32), dtype=np.uint8)
    write_cifar_format(str(tmp_path), "cifar100", x[:40], np.arange(40), x[40:], np.arange(20))
    return build_dataset("cifar100", str(tmp_path))


def test_every_script_line_builds(micro_data, tmp_path):
    folder = tmp_path / "save" / "models" / "resnet32x4_vanilla"
    save_checkpoint({"model": build_model("resnet32x4").state_dict()}, str(folder / "ckpt_epoch_240.pth"))
    for args in _script_lines("run_cifar_distill.sh"):
        args = [str(folder / "ckpt_epoch_240.pth") if a.endswith("ckpt_epoch_240.pth") else a for a in args]
        opt = train_student.parse_student_options(args + ["--nce_k", "8", "--device", "cpu"])
        teacher, student, d = train_student.build_distillation(opt, micro_data, torch.device("cpu"))
        assert opt.model_t == "resnet32x4" and d.name == opt.distill
        assert opt.gamma == 1.0 or opt.distill == "kd"  # -r defaults to 1 as in RepDistiller


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
    import subprocess
    import sys
    proc = subprocess.run(["sh", "scripts/run_cifar_vanilla.sh", "--help"], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PY": sys.executable}, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("usage:") == 6  # one help text per teacher line
