"""sha256 of the final weights of a fixed set of float32 CPU runs: the check that a refactor kept behaviour.

    python scripts/weight_hashes.py > before.txt           # before changing the core
    python scripts/weight_hashes.py > after.txt && diff before.txt after.txt

Every run trains 2 epochs on the bundled digits set (offline) in a temporary folder, one torch thread per process
(so the sums are reduced in the same order on any machine): a resnet14 teacher, then resnet8 students with kd, crd,
attention, abound, factor, vid, ickd, dkd, a represnet20 student with kdrefine and its fused convert.py output,
kd with milestone checking (``--mc 1 -b 1``, myresnet8), byot (multi_resnet18_kd), a checkpointkd snapshot ensemble of
the teacher's two epochs, kd with ``--trials 2``, ``--distill kd,crd`` side by side, and crd under torchrun with
2 gloo processes. ``--only kd,crd`` runs some (the teacher always runs first); ``--keep DIR`` keeps the outputs.
Each line is ``name file sha256``; a run that fails prints ``name FAILED`` and makes the exit status 1.
"""
from __future__ import annotations

import argparse
import glob
import hashlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from typing import Dict, List, Tuple

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMON = ["--dataset", "digits", "--epochs", "2", "--batch_size", "64", "--device", "cpu", "--lr_decay_epochs", "1",
          "--save_freq", "1"]
TEACHER_DIR = "save/models/resnet14_digits_lr_0.05_decay_0.0005_trial_0"
TEACHER = TEACHER_DIR + "/resnet14_last.pth"
STUDENT = ["--path_t", TEACHER, "--model_s", "resnet8"]


def state_dict_sha256(state: Dict[str, torch.Tensor]) -> str:
    """Hash of names, dtypes, shapes and values, independent of the dict's order and of memory layout."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def file_sha256(path: str) -> str:
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state_dict_sha256(state["model"] if "model" in state else state)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def train(script: str, *args: str, launcher=(sys.executable,)) -> List[str]:
    # COMMON first, so that a run's own --batch_size or --learning_rate wins (argparse keeps the last value)
    return [*launcher, script, *COMMON, *args]


def runs() -> List[Tuple[str, List[str], str]]:
    """(name, command, glob of the weight files it leaves) in the order they run; paths relative to the
    project (scripts) or to the work folder (data, outputs)."""
    out = [("teacher", train("train_teacher.py", "--model", "resnet14"), TEACHER)]
    extra = {"crd": ["--nce_k", "256"], "abound": ["--init_epochs", "1"], "factor": ["--init_epochs", "1"]}
    for method in ("kd", "crd", "attention", "abound", "factor", "vid", "ickd", "dkd"):
        out.append((method, train("train_student.py", *STUDENT, "--distill", method, *extra.get(method, [])),
                    f"save/student_model/S_resnet8_T_resnet14_digits_{method}_*/resnet8_last.pth"))
    kdrefine = "save/student_model/S_represnet20_*/represnet20_last.pth"
    torchrun = (sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}")
    out += [
        ("kdrefine", train("train_student.py", "--path_t", TEACHER, "--model_s", "represnet20", "-t", "AMBB",
                           "--distill", "kdrefine"), kdrefine),
        ("kdrefine_fused", [sys.executable, "convert.py", "--arch", "represnet20", "--blocktype", "AMBB",
                            "--num_classes", "10", "--load", kdrefine, "--save", "represnet20_deploy.pth"],
         "represnet20_deploy.pth"),
        # -b 1: milestone checking is added to the method term, which -b scales (kd's default -b 0 would drop it)
        ("mc", train("train_student.py", "--path_t", TEACHER, "--model_s", "myresnet8", "--distill", "kd", "--mc", "1",
                     "-r", "0.1", "-a", "0.9", "-b", "1"),
         "save/student_model/S_myresnet8_*_mc_*/myresnet8_last.pth"),
        ("byot", train("train_student.py", "--distill", "byot", "--model_s", "multi_resnet18_kd", "--learning_rate",
                       "0.05"), "save/student_model/S_multi_resnet18_kd_*/multi_resnet18_kd_last.pth"),
        ("checkpointkd_snapshots", train("train_student.py", "--path_t", TEACHER_DIR, "--teacher_epochs", "1,2",
                                         "--model_s", "resnet8", "--distill", "checkpointkd", "--learning_rate",
                                         "0.05"),
         "save/student_model/S_resnet8_T_resnet14_ep1-2_*/resnet8_last.pth"),
        ("trials", train("train_student.py", *STUDENT, "--distill", "kd", "--trials", "2", "--trial", "20"),
         "save/student_model/S_resnet8_T_resnet14_digits_kd_*_2[01]/resnet8_last.pth"),
        ("side_by_side", train("train_student.py", *STUDENT, "--distill", "kd,crd", "--nce_k", "256", "--trial", "30"),
         "save/student_model/S_resnet8_T_resnet14_digits_*_30/resnet8_last.pth"),
        ("torchrun_crd", train("train_student.py", *STUDENT, "--distill", "crd", "--nce_k", "256", "--trial", "40",
                               "--batch_size", "32", launcher=torchrun),
         "save/student_model/S_resnet8_T_resnet14_digits_crd_*_40/resnet8_last.pth"),
    ]
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="sha256 of the final weights of fixed float32 CPU runs")
    p.add_argument("--only", default=None, help="comma-separated run names (the teacher always runs)")
    p.add_argument("--keep", default=None, help="keep the run folders here instead of a temporary folder")
    opt = p.parse_args(argv)
    selected = runs()
    if opt.only:
        names = {"teacher", *opt.only.split(",")}
        unknown = names - {name for name, _, _ in selected}
        if unknown:
            sys.exit(f"error: --only {','.join(sorted(unknown))}: no such run; choose from "
                     + ", ".join(name for name, _, _ in selected))
        selected = [r for r in selected if r[0] in names]
    work = opt.keep or tempfile.mkdtemp(prefix="weight_hashes_")
    os.makedirs(work, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1"}
    failed = 0
    try:
        for name, cmd, pattern in selected:
            script = next(i for i, c in enumerate(cmd) if c.endswith(".py"))
            cmd = list(cmd)
            cmd[script] = os.path.join(ROOT, cmd[script])
            # a glob among the arguments names an earlier run's output (the fused kdrefine student)
            cmd = [(glob.glob(os.path.join(work, c)) or [c])[0] if "*" in c else c for c in cmd]
            proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
            files = sorted(glob.glob(os.path.join(work, pattern)))
            if proc.returncode != 0 or not files:
                failed += 1
                print(f"{name} FAILED: {(proc.stderr or proc.stdout).strip().splitlines()[-1:]}", flush=True)
                continue
            for path in files:
                print(f"{name} {os.path.relpath(path, work)} {file_sha256(path)}", flush=True)
    finally:
        if opt.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
