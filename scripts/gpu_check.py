"""The whole GPU verification in one command, one markdown report.

    bash scripts/gpu_check.sh                         # CUDA: about 8 minutes on one H100-class GPU
    bash scripts/gpu_check.sh --device cpu --quick    # the same plumbing on a CPU in a few minutes (CI)

On synthetic CIFAR-100-format data (random uint8 images, written with ``dataset.cifar.write_cifar_format``
into a temporary folder; on CUDA 19,200 train / 2,560 test images, 300 steps of 64 per epoch, ``--quick``
fewer) it runs, each as its own process (a crash or a CUDA error stays in its row), up to ``--jobs`` at a time
(compiling is CPU work; the benchmark runs alone so that its timings are its own):

(a) every registered ``--distill`` method except ``ce`` for one epoch with the CUDA defaults (channels-last,
    ``--amp``, ``--compile``), from a teacher trained first for one epoch with train_teacher.py (resnet56 ->
    resnet20; BYOT's multi_resnet18_kd, KDrefine's represnet20 -t AMBB, CheckpointKD from the one teacher);
(b) ``kd`` and ``crd`` with ``--trials 5``;
(c) scripts/benchmark.py (kd, crd, attention, ickd, kdrefine; both pipelines), with the projected 240-epoch
    times against the targets: KD resnet56 -> resnet20 in at most 5 minutes, ours >= 10x RepDistiller's
    pipeline per step (CRD >= 8x);
(d) torchrun on every visible GPU (NCCL; gloo with two processes on a CPU) against one process with the
    global batch, a short CRD run: the final weights must agree within a tolerance;
(e) scripts/compare_precision.py: fp32 vs bf16 vs compile.

A check that crashes, or ends with a non-finite loss or a weight mismatch, is FAIL and makes the exit status
1. A speed target is a measurement, not a check: it is reported MET or NOT MET and does not change the exit
status (a busy or different GPU misses it without anything being broken). On a CPU the runs are eager
(inductor needs minutes per graph there) and the targets are only reported.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import glob
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

SECTIONS = ("methods", "trials", "benchmark", "torchrun", "precision")
BENCHMARK_METHODS = "kd,crd,attention,ickd,kdrefine"
KD_TARGET_MINUTES = 5.0
SPEEDUP_TARGET = {"crd": 8.0}  # the rest: DEFAULT_SPEEDUP_TARGET
DEFAULT_SPEEDUP_TARGET = 10.0
# how far torchrun's weights may be from one process's, element by element: |got - ref| <= ATOL + RTOL |ref| (float
# rounding, not a bug). Relative to a tensor's largest value alone, BN biases a few steps from their zero
# initialisation failed on rounding: 2e-5 apart at magnitude 1e-3 on the CPU, the same before and after #12-#16.
TORCHRUN_ATOL, TORCHRUN_RTOL = 1e-3, 1e-2


@dataclass
class Scale:
    """Sizes of one configuration (the GPU run or the CPU --quick run)."""

    train: int
    test: int
    teacher: str
    student: str
    batch_size: int
    nce_k: int
    torchrun_train: int
    bench_steps: int
    bench_warmup: int
    precision_epochs: int
    precision_trials: int
    flags: List[str] = field(default_factory=list)  # speed options of the (a)/(b) runs
    trial_methods: Tuple[str, ...] = ("kd", "crd")  # section (b)
    bench_methods: str = BENCHMARK_METHODS  # section (c)


def scale_for(device: str, quick: bool) -> Scale:
    if device == "cuda":
        flags = ["--amp", "--compile"]  # channels-last is the CUDA default
        # 300 steps of 64 per run, no partial batch (a second set of graphs to compile); CRD's 16,384
        # negatives still come from other classes (192 images per class)
        if quick:
            return Scale(6400, 1280, "resnet56", "resnet20", 64, 4096, 2048, 10, 3, 1, 2, flags)
        return Scale(19200, 2560, "resnet56", "resnet20", 64, 16384, 4096, 30, 10, 1, 2, flags)
    flags = ["--amp"]  # bf16 on the CPU too; no compile (minutes per graph)
    if quick:
        # the plumbing only (CI runs it on 2 cores): the smallest teacher, and one method where the GPU run has several
        return Scale(200, 50, "resnet8", "resnet8", 32, 16, 128, 2, 1, 1, 1, flags, trial_methods=("kd",),
                     bench_methods="kd,crd")
    return Scale(2000, 500, "resnet14", "resnet8", 64, 256, 512, 5, 2, 1, 2, flags)


def student_for(method: str, scale: Scale) -> List[str]:
    """The student a method is checked with: BYOT needs a multi-exit network, KDrefine a re-parameterisable one."""
    if method == "byot":
        return ["--model_s", "multi_resnet18_kd"]
    if method == "kdrefine":
        return ["--model_s", "represnet20", "-t", "AMBB"]
    return ["--model_s", scale.student]


def all_methods() -> List[str]:
    import distiller_zoo
    return [m for m in sorted(distiller_zoo.REGISTRY) if m != "ce"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--quick", action="store_true", help="tiny data and few steps (the CPU plumbing check)")
    p.add_argument("--methods", default=None, help="comma list for section (a) (default: every registered one but ce)")
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"comma list of {', '.join(SECTIONS)}")
    p.add_argument("--jobs", type=int, default=None,
                   help="runs of (a)/(b) at a time (default: 8 on CUDA, where compiling is CPU work, 2 on a CPU)")
    p.add_argument("--out", default="save/gpu_check", help="folder of report.md, logs/ and the runs")
    args = p.parse_args(argv)
    args.sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = [s for s in args.sections if s not in SECTIONS]
    if unknown or not args.sections:
        p.error(f"--sections: unknown {unknown}; choose from {', '.join(SECTIONS)}")
    args.methods = all_methods() if args.methods is None else [m.strip() for m in args.methods.split(",")
                                                                if m.strip()]
    if args.jobs is None:
        args.jobs = 8 if args.device == "cuda" else 2
    return args


# ---------------------------------------------------------------- processes

@dataclass
class Job:
    name: str
    cmd: List[str]
    log: str
    seconds: float = 0.0
    returncode: Optional[int] = None

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def tail(self, lines: int = 3) -> str:
        """The last lines of its log, for a FAIL row."""
        try:
            with open(self.log) as f:
                text = [t.strip() for t in f.read().splitlines() if t.strip()]
        except OSError:
            return "no log"
        return " / ".join(text[-lines:]).replace("|", "\\|")[:300]


def run_job(job: Job, env: Dict[str, str], timeout: float) -> Job:
    os.makedirs(os.path.dirname(job.log), exist_ok=True)
    t0 = time.time()
    with open(job.log, "w") as log:
        log.write("$ " + " ".join(job.cmd) + "\n")
        log.flush()
        try:
            job.returncode = subprocess.run(job.cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                            timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            log.write(f"\ntimed out after {timeout:.0f} s\n")
            job.returncode = -1
    job.seconds = time.time() - t0
    return job


def run_all(jobs: List[Job], env, workers: int, timeout: float) -> List[Job]:
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(pool.map(lambda j: run_job(j, env, timeout), jobs))


def process_env(device: str) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "LOCAL_WORLD_SIZE")}
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    if device == "cpu":
        env.setdefault("OMP_NUM_THREADS", "1")  # the jobs run side by side on few cores
    return env


def free_port() -> int:
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def python(script: str, *args: str) -> List[str]:
    return [sys.executable, os.path.join(ROOT, script)] + list(args)


# ---------------------------------------------------------------- data

def write_data(folder: str, n_train: int, n_test: int, seed: int = 0) -> str:
    from dataset.cifar import write_cifar_format
    rng = np.random.default_rng(seed)
    train_y = rng.permutation(np.arange(n_train) % 100)  # every class present (CRD's sampler needs them)
    test_y = np.arange(n_test) % 100
    write_cifar_format(folder, "cifar100", rng.integers(0, 256, (n_train, 3, 32, 32), dtype=np.uint8), train_y,
                       rng.integers(0, 256, (n_test, 3, 32, 32), dtype=np.uint8), test_y)
    return folder


# ---------------------------------------------------------------- results

def run_summary(save_dir: str) -> Dict:
    """summary.json of the one run (or the trials) under ``save_dir``: trial 1's, plus how many were found."""
    paths = sorted(glob.glob(os.path.join(save_dir, "*", "*", "summary.json")))
    if not paths:
        return {}
    with open(paths[0]) as f:
        summary = json.load(f)
    summary["runs_found"] = len(paths)
    return summary


def finite(summary: Dict) -> bool:
    values = [summary.get(k) for k in ("last_acc", "best_acc")]
    return all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)


def status(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


class Report:
    def __init__(self, header: List[str]):
        self.lines = list(header)
        self.failures: List[str] = []

    def section(self, title: str, intro: str = "") -> None:
        self.lines += ["", f"## {title}", ""] + ([intro, ""] if intro else [])

    def table(self, columns: List[str], rows: List[List[str]]) -> None:
        self.lines.append("| " + " | ".join(columns) + " |")
        self.lines.append("|" + "---|" * len(columns))
        self.lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]

    def check(self, name: str, ok: bool) -> str:
        if not ok:
            self.failures.append(name)
        return status(ok)


# ---------------------------------------------------------------- sections

def section_methods(args, scale, data, teacher, work, env, report: Report) -> None:
    jobs = []
    for method in args.methods:
        save = os.path.join(work, "methods", method)
        cmd = python("train_student.py", "--dataset", "cifar100", "--data_root", data, "--save_dir", save,
                     "--device", args.device, "--epochs", "1", "--batch_size", str(scale.batch_size),
                     "--distill", method, "--nce_k", str(scale.nce_k), "--init_epochs", "1", "--trial", "gpucheck",
                     *([] if method == "byot" else ["--path_t", teacher]),  # BYOT distils the student's own exits
                     *student_for(method, scale), *scale.flags)
        jobs.append(Job(method, cmd, os.path.join(args.out, "logs", f"methods_{method}.log")))
    rows = []
    for job in run_all(jobs, env, args.jobs, timeout=420):
        summary = run_summary(os.path.join(work, "methods", job.name))
        ok = job.ok and finite(summary)
        student = job.cmd[job.cmd.index("--model_s") + 1]
        rows.append([job.name, student, report.check(f"method {job.name}", ok), f"{job.seconds:.0f}",
                     f"{summary.get('last_acc', float('nan')):.2f}", "" if ok else job.tail()])
    report.section("(a) every method, one epoch", f"{scale.train // scale.batch_size} steps of batch "
                   f"{scale.batch_size} each, options {' '.join(scale.flags) or '(none)'}, from the one-epoch "
                   f"{scale.teacher} teacher.")
    report.table(["method", "student", "status", "s", "test top-1", "note"], rows)


def section_trials(args, scale, data, teacher, work, env, report: Report) -> None:
    jobs = []
    for method in scale.trial_methods:
        save = os.path.join(work, "trials", method)
        cmd = python("train_student.py", "--dataset", "cifar100", "--data_root", data, "--save_dir", save,
                     "--device", args.device, "--epochs", "1", "--batch_size", str(scale.batch_size),
                     "--distill", method, "--path_t", teacher, "--nce_k", str(scale.nce_k), "--trials", "5",
                     "--model_s", scale.student, "--trial", "gpucheck", *scale.flags)
        jobs.append(Job(method, cmd, os.path.join(args.out, "logs", f"trials_{method}.log")))
    rows = []
    for job in run_all(jobs, env, args.jobs, timeout=420):
        summary = run_summary(os.path.join(work, "trials", job.name))
        ok = job.ok and finite(summary) and summary.get("runs_found") == 5
        rows.append([job.name, report.check(f"trials {job.name}", ok), f"{job.seconds:.0f}",
                     str(summary.get("runs_found", 0)), "" if ok else job.tail()])
    report.section("(b) five trials per process")
    report.table(["method", "status", "s", "trial folders", "note"], rows)


def section_benchmark(args, scale, data, work, env, report: Report) -> None:
    out = os.path.join(work, "benchmark")
    flags = ["--amp", "--compile"] if args.device == "cuda" else ["--amp"]
    cmd = python("scripts/benchmark.py", "--device", args.device, "--data_root", data, "--model_t",
                 "resnet56" if args.device == "cuda" else scale.teacher, "--model_s",
                 "resnet20" if args.device == "cuda" else scale.student, "--methods", scale.bench_methods,
                 "--pipeline", "both", "--batch_size", str(scale.batch_size), "--warmup", str(scale.bench_warmup),
                 "--steps", str(scale.bench_steps), "--nce_k", str(scale.nce_k), "--num_workers",
                 "8" if args.device == "cuda" else "0", "--out", out, *flags)
    job = run_all([Job("benchmark", cmd, os.path.join(args.out, "logs", "benchmark.log"))], env, 1, timeout=600)[0]
    report.section("(c) benchmark", "Targets are measurements: MET / NOT MET, not a failure. Command: `"
                   + " ".join(["python"] + [os.path.relpath(c, ROOT) if c.startswith(ROOT) else c
                                            for c in cmd[1:]]) + "`")
    record = {}
    try:
        with open(os.path.join(out, "benchmark.json")) as f:
            record = json.load(f)
    except (OSError, ValueError):
        pass
    ok = job.ok and bool(record.get("rows"))
    report.lines.append(f"Benchmark run: {report.check('benchmark', ok)} ({job.seconds:.0f} s)"
                        + ("" if ok else f": {job.tail()}"))
    if not ok:
        return
    rows = []
    for r in record["rows"]:
        ops = r.get("eager_ops", {})
        rows.append([r["method"], r["pipeline"], f"{r['ms_per_step']:.2f}", f"{r['projected_hours'] * 60:.1f}",
                     "" if r.get("speedup") is None else f"{r['speedup']:.2f}x", str(ops.get("total", ""))])
    report.lines.append("")
    report.table(["method", "pipeline", "ms/step", "projected 240 epochs (min)", "ours vs dataloader",
                  "eager ops/step"], rows)
    report.lines.append("")
    for r in record["rows"]:
        if r["pipeline"] != "ours":
            continue
        if r["method"] == "kd":
            minutes = r["projected_hours"] * 60
            report.lines.append(f"- target KD {record['model_t']} -> {record['model_s']} 240 epochs <= "
                                f"{KD_TARGET_MINUTES:.0f} min: {'MET' if minutes <= KD_TARGET_MINUTES else 'NOT MET'}"
                                f" ({minutes:.1f} min)")
        target = SPEEDUP_TARGET.get(r["method"], DEFAULT_SPEEDUP_TARGET)
        if r.get("speedup") is not None:
            report.lines.append(f"- target {r['method']} ours >= {target:.0f}x dataloader: "
                                f"{'MET' if r['speedup'] >= target else 'NOT MET'} ({r['speedup']:.2f}x)")


def worst_tolerance_ratio(a: Dict, b: Dict) -> Tuple[float, str]:
    """The largest ``|a - b| / (ATOL + RTOL |b|)`` over the floating-point entries (1 is the tolerance), and its key."""
    import torch
    worst, where = 0.0, ""
    for k, v in a.items():
        if not torch.is_floating_point(v):
            continue
        ref = b[k].float()
        ratio = ((v.float() - ref).abs() / (TORCHRUN_ATOL + TORCHRUN_RTOL * ref.abs())).max().item()
        if ratio > worst:
            worst, where = ratio, k
    return worst, where


def section_torchrun(args, scale, teacher, work, env, report: Report, tmp: str) -> None:
    import torch
    from helper.checkpoint import load_checkpoint

    nproc = torch.cuda.device_count() if args.device == "cuda" else 2
    per_process = max(1, scale.batch_size // nproc)
    data = write_data(os.path.join(tmp, "torchrun_data"), scale.torchrun_train, 100, seed=1)
    common = ["--dataset", "cifar100", "--data_root", data, "--device", args.device, "--epochs", "1",
              "--distill", "crd", "--path_t", teacher, "--nce_k", str(min(scale.nce_k, scale.torchrun_train // 2)),
              "--model_s", scale.student, "--sync_bn", "--lr_scale", "none", "--trial", "gpucheck"]
    if args.device == "cuda":
        common += ["--tf32", "0"]  # full float32 products: the two runs differ by rounding only
    ddp = os.path.join(work, "torchrun", "ddp")
    one = os.path.join(work, "torchrun", "one")
    jobs = [Job("torchrun", [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
                             f"--master_port={free_port()}", os.path.join(ROOT, "train_student.py"), *common,
                             "--save_dir", ddp, "--batch_size", str(per_process)],
                os.path.join(args.out, "logs", "torchrun.log")),
            Job("one process", python("train_student.py", *common, "--save_dir", one, "--batch_size",
                                      str(per_process * nproc)), os.path.join(args.out, "logs", "torchrun_one.log"))]
    jobs = run_all(jobs, env, 1, timeout=300)
    note, ok = "", all(j.ok for j in jobs)
    if ok:
        paths = [glob.glob(os.path.join(d, "student_model", "*", f"{scale.student}_last.pth")) for d in (ddp, one)]
        if all(len(p) == 1 for p in paths):
            got, ref = (load_checkpoint(p[0]) for p in paths)
            ratio, key = worst_tolerance_ratio(got["model"], ref["model"])
            ok = ratio <= 1.0
            note = f"worst entry ({key}) at {ratio:.2f} of the tolerance |diff| <= {TORCHRUN_ATOL:g} + " \
                   f"{TORCHRUN_RTOL:g} |weight|"
        else:
            ok, note = False, f"checkpoints not found: {paths}"
    else:
        note = next(j.tail() for j in jobs if not j.ok)
    report.section("(d) torchrun against one process",
                   f"CRD, {nproc} process(es) x batch {per_process} with --sync_bn "
                   f"({'NCCL' if args.device == 'cuda' else 'gloo'}) vs one process x {per_process * nproc}.")
    report.table(["check", "status", "s", "note"],
                 [["torchrun == one process", report.check("torchrun", ok), f"{sum(j.seconds for j in jobs):.0f}",
                   note]])


def section_precision(args, scale, data, teacher, work, env, report: Report) -> None:
    variants = "fp32,bf16,compile" if args.device == "cuda" else "fp32,bf16"
    save = os.path.join(work, "precision")
    cmd = python("scripts/compare_precision.py", "--dataset", "cifar100", "--data_root", data, "--device",
                 args.device, "--model_t", scale.teacher, "--model_s", scale.student, "--path_t", teacher,
                 "--epochs", str(scale.precision_epochs), "--trials", str(scale.precision_trials), "--batch_size",
                 str(scale.batch_size), "--variants", variants, "--save_dir", save)
    job = run_all([Job("precision", cmd, os.path.join(args.out, "logs", "precision.log"))], env, 1, timeout=420)[0]
    table = os.path.join(save, "compare_precision.md")
    ok = job.ok and os.path.isfile(table)
    report.section("(e) fp32 vs bf16 vs compile", f"{report.check('precision', ok)} ({job.seconds:.0f} s); "
                   "random data: this shows that every variant trains, not an accuracy.")
    if ok:
        with open(table) as f:
            report.lines += f.read().strip().splitlines()
    else:
        report.lines.append(job.tail())


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda: no CUDA device is visible; use --device cpu --quick for the CPU check",
              file=sys.stderr)
        return 2
    scale = scale_for(args.device, args.quick)
    os.makedirs(args.out, exist_ok=True)
    work = os.path.join(args.out, "runs")
    shutil.rmtree(work, ignore_errors=True)  # this script's own runs: every check starts in fresh folders
    shutil.rmtree(os.path.join(args.out, "logs"), ignore_errors=True)
    env = process_env(args.device)
    t0 = time.time()
    device_name = torch.cuda.get_device_name(0) if args.device == "cuda" else f"CPU ({os.cpu_count()} cores)"
    report = Report([f"# GPU check{' (quick)' if args.quick else ''}", "",
                     f"Device: {device_name}; torch {torch.__version__}; command: `python scripts/gpu_check.py "
                     + " ".join(sys.argv[1:] if argv is None else argv) + "`", "",
                     f"Data: synthetic CIFAR-100 format, {scale.train} train / {scale.test} test random uint8 "
                     f"images; teacher {scale.teacher}, student {scale.student}, batch {scale.batch_size}."])
    with tempfile.TemporaryDirectory(prefix="kd_gpu_check_") as tmp:
        data = write_data(os.path.join(tmp, "data"), scale.train, scale.test)
        teacher_save = os.path.join(work, "teacher")
        teacher_job = run_all([Job("teacher", python(
            "train_teacher.py", "--dataset", "cifar100", "--data_root", data, "--save_dir", teacher_save,
            "--device", args.device, "--epochs", "1", "--batch_size", str(scale.batch_size), "--model",
            scale.teacher, "--trial", "gpucheck", *scale.flags), os.path.join(args.out, "logs", "teacher.log"))],
            env, 1, timeout=420)[0]
        teachers = glob.glob(os.path.join(teacher_save, "models", "*", f"{scale.teacher}_last.pth"))
        report.section("teacher", f"train_teacher.py {scale.teacher}, one epoch: "
                       f"{report.check('teacher', teacher_job.ok and len(teachers) == 1)} "
                       f"({teacher_job.seconds:.0f} s)" + ("" if teacher_job.ok else f": {teacher_job.tail()}"))
        if teachers:
            teacher = teachers[0]
            if "methods" in args.sections:
                section_methods(args, scale, data, teacher, work, env, report)
            if "trials" in args.sections:
                section_trials(args, scale, data, teacher, work, env, report)
            if "benchmark" in args.sections:  # alone on the device: its timings are not shared with other runs
                section_benchmark(args, scale, data, work, env, report)
            # (d) and (e) side by side, each into its own part of the report
            parts = {name: Report([]) for name in ("torchrun", "precision") if name in args.sections}
            with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
                futures = []
                if "torchrun" in parts:
                    futures.append(pool.submit(section_torchrun, args, scale, teacher, work, env,
                                               parts["torchrun"], tmp))
                if "precision" in parts:
                    futures.append(pool.submit(section_precision, args, scale, data, teacher, work, env,
                                               parts["precision"]))
                for future in futures:
                    future.result()
            for part in parts.values():
                report.lines += part.lines
                report.failures += part.failures
    verdict = "PASS" if not report.failures else f"FAIL ({', '.join(report.failures)})"
    report.lines[1:1] = ["", f"Result: **{verdict}** in {time.time() - t0:.0f} s. Logs: `logs/` next to this file."]
    path = os.path.join(args.out, "report.md")
    with open(path, "w") as f:
        f.write("\n".join(report.lines) + "\n")
    print("\n".join(report.lines))
    print(f"\nwrote {os.path.abspath(path)}", flush=True)
    return 0 if not report.failures else 1


if __name__ == "__main__":
    sys.exit(main())
