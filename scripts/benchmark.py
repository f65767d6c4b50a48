"""Training throughput: images/s and ms/step for teacher training and for distillation methods.

    python scripts/benchmark.py --model_t resnet56 --model_s resnet20 --device cuda
    python scripts/benchmark.py --device cpu --warmup 2 --steps 5 --methods kd,crd --pipeline both

Each row times ``--steps`` optimisation steps (after ``--warmup`` untimed ones) of exactly the toolkit's step
(``engine.step.step_runs``: forward of student and teacher, the method's loss, backward, SGD), with the
networks, distiller and optimizer built as train_teacher.py / train_student.py build them. The teacher has
random weights (saved to a temporary ``<arch>_vanilla/ckpt_epoch_240.pth`` and loaded the usual way); the
speed does not depend on them.

Pipelines (``--pipeline``):

* ``ours``: the toolkit's batches, ``TensorImageSet.train_batches`` (uint8 set on the device, whole-batch
  crop/flip/normalise there);
* ``dataloader``: RepDistiller's input path, a ``torch.utils.data.DataLoader`` (``--num_workers``) over the
  same uint8 images as PIL images with per-image torchvision transforms (RandomCrop(32, padding=4),
  RandomHorizontalFlip, ToTensor, Normalize), copied to the device each step. This row is RepDistiller's
  configuration whatever the flags and the device: float32, NCHW networks (built so, also on CUDA where the
  toolkit's default is channels-last), no compile, and the loss and top-1 read on the host every step (its
  AverageMeter updates).

Every row also reports the aten operators one step runs eagerly (outside compiled graphs), split into step,
backward and optimizer (``eager_op_counts``): with ``--compile`` the student forward and the method's loss are
one graph, so the step's count falls from hundreds to the batch augmentation and the epoch meter.

``--amp``, ``--channels_last`` and ``--compile`` apply to the ``ours`` rows, as the same flags of the
training scripts do.

The data is CIFAR-100 when ``cifar-100-python/`` is under ``--data_root``, otherwise a synthetic CIFAR-format
uint8 set of ``--synthetic_n`` images made in memory (random pixels and labels; the output says which).
``--trials N`` adds, for every distillation method, a row ``ours, N trials``: N students stepping on the same
batches with one teacher forward per batch (train_student.py ``--trials N``); its figures are per student (the
time of a step of all N, divided by N), and ``benchmark.json`` gives its gain over one student (``vs_one_student``).

Every timed step has a full batch. The projected time of the full recipe is
``240 * ceil(50000 / batch_size) * ms/step`` (CIFAR-100's 50,000 training images; training steps only, no
evaluation). Writes ``--out`` (markdown table) and ``benchmark.json`` next to it.

``--dataset imagenet`` measures the ImageNet path instead (defaults ResNet34 -> ResNet18, ``--methods kd``, crop
224): images/s of each data pipeline alone (``dataloader``: ``--num_workers`` workers decoding JPEG files with PIL,
uint8 crops copied to the device and normalised there; ``dali`` where CUDA and NVIDIA DALI are there), of the training
step alone (one batch of device tensors, reused) and of the step fed by each pipeline, so the data path's share of a
step is visible. The images are an ImageFolder under ``--data_root`` (``train/``), else ``--synthetic_n`` random-pixel
JPEG files of ``--synthetic_size`` pixels written to a temporary folder (noise compresses badly: larger files and
slower decoding than photographs). ``--projection`` epochs of ImageNet's 1,281,167 training images give the hours.

    python scripts/benchmark.py --dataset imagenet --device cuda --batch_size 256 --num_workers 16
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import platform
import sys
import tempfile
import time
from typing import Dict, Iterator, List

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from assembly.options import parse_configurations, parse_teacher_options  # noqa: E402
from assembly.student import build_configuration_runs, build_teacher  # noqa: E402
from dataset.cifar import CIFAR100_MEAN, CIFAR100_STD  # noqa: E402
from dataset.core import DataBundle, TensorImageSet, build_dataset  # noqa: E402
from distiller_zoo import DistillContext, build_distiller  # noqa: E402
from engine.compile import compile_network, compile_step, uses_cuda_graphs  # noqa: E402
from engine.epoch import EpochMeter  # noqa: E402
from engine.fit import build_optimizer  # noqa: E402
from engine.forward import use_channels_last  # noqa: E402
from engine.step import StudentRun, StudentStep, begin_train_epoch, loss_weights, step_runs  # noqa: E402
from engine.teacher import Teacher  # noqa: E402
from helper.checkpoint import save_checkpoint  # noqa: E402
from helper.option import str2bool  # noqa: E402
from helper.types import Batch  # noqa: E402
from helper.util import accuracy  # noqa: E402
from helper.run import place_model  # noqa: E402
from helper.util import select_device, set_seed  # noqa: E402
from models import build_model  # noqa: E402

METHODS = ("kd", "crd", "attention", "ickd", "kdrefine")
RECIPE_EPOCHS = 240
CIFAR_TRAIN = 50000


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="cifar100", choices=["cifar100", "imagenet"],
                   help="imagenet: the folder pipelines and the ImageNet networks (see the module docstring)")
    p.add_argument("--model_t", default=None, help="teacher architecture (random weights; default resnet56, "
                                                   "ResNet34 for imagenet)")
    p.add_argument("--model_s", default=None, help="student architecture (default resnet20, ResNet18 for imagenet)")
    p.add_argument("--methods", default=None,
                   help="comma list of 'teacher' (plain CE on the teacher arch) and --distill methods (default "
                        "teacher and " + ",".join(METHODS) + "; kd for imagenet)")
    p.add_argument("--crop_size", type=int, default=224, help="imagenet: training crop")
    p.add_argument("--synthetic_size", default="500x375", help="imagenet: width x height of the synthetic JPEGs")
    p.add_argument("--projection", type=int, default=100, help="imagenet: epochs of the projected hours")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--warmup", type=int, default=5, help="untimed steps before timing")
    p.add_argument("--steps", type=int, default=20, help="timed steps")
    p.add_argument("--pipeline", default="both", choices=["ours", "dataloader", "both"])
    p.add_argument("--num_workers", type=int, default=8, help="DataLoader workers (dataloader pipeline)")
    p.add_argument("--data_root", default="./data", help="CIFAR-100 is used when present here")
    p.add_argument("--synthetic_n", type=int, default=50000, help="images in the synthetic set (no CIFAR-100)")
    p.add_argument("--nce_k", type=int, default=16384, help="CRD negatives (lower it for a small --synthetic_n)")
    p.add_argument("--amp", action="store_true", help="bf16 autocast (ours rows), as train_student.py --amp")
    p.add_argument("--channels_last", type=str2bool, nargs="?", const=True, default=None,
                   help="channels-last networks and inputs (ours rows; default: on CUDA only)")
    p.add_argument("--compile", action="store_true", help="torch.compile the networks (ours rows)")
    p.add_argument("--compile_mode", default="auto", help="as train_student.py --compile_mode")
    p.add_argument("--trials", type=int, default=1,
                   help="also time N students per teacher forward (train_student.py --trials N) for every method: "
                        "an 'ours, N trials' row, per student")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None,
                   help="markdown file (.md), or a folder for benchmark.md (benchmark_imagenet.md); the .json is "
                        "written next to it (default save/benchmark/)")
    args = p.parse_args(argv)
    imagenet = args.dataset == "imagenet"
    args.model_t = args.model_t or ("ResNet34" if imagenet else "resnet56")
    args.model_s = args.model_s or ("ResNet18" if imagenet else "resnet20")
    if args.methods is None:
        args.methods = "kd" if imagenet else "teacher," + ",".join(METHODS)
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    args.out = args.out or os.path.join("save", "benchmark", "benchmark_imagenet.md" if imagenet else "benchmark.md")
    if not args.methods:
        p.error("--methods is empty")
    if args.warmup < 0 or args.steps < 1 or args.batch_size < 1 or args.trials < 1:
        p.error("--steps, --batch_size and --trials must be >= 1, --warmup >= 0")
    return args


# ---------------------------------------------------------------- data

def load_data(args, device) -> (DataBundle, str):
    if os.path.isfile(os.path.join(args.data_root, "cifar-100-python", "train")):
        data = build_dataset("cifar100", args.data_root, device)
        return data, f"CIFAR-100 from '{args.data_root}' ({len(data.train)} train images)"
    n = int(args.synthetic_n)
    if n < args.batch_size:
        raise ValueError(f"--synthetic_n {n} is smaller than --batch_size {args.batch_size}")
    g = torch.Generator().manual_seed(args.seed)
    x = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    y = torch.arange(n) % 100  # every class present, as CIFAR-100 (CRD sizes its sampler from the labels)
    y = y[torch.randperm(n, generator=g)]
    train = TensorImageSet(x.to(device), y.to(device), CIFAR100_MEAN, CIFAR100_STD)
    test = TensorImageSet(x[:2].to(device), y[:2].to(device), CIFAR100_MEAN, CIFAR100_STD)
    return (DataBundle("cifar100", train, test, 100),
            f"synthetic CIFAR-format uint8 set of {n} images (random pixels and labels; no CIFAR-100 under "
            f"'{args.data_root}')")


class PILImageSet(torch.utils.data.Dataset):
    """RepDistiller's CIFAR100Instance: PIL image -> per-image transforms; returns (image, target, index)."""

    def __init__(self, images_nchw: np.ndarray, targets: np.ndarray, transform):
        self.images = np.ascontiguousarray(images_nchw.transpose(0, 2, 3, 1))  # HWC, as torchvision's CIFAR
        self.targets = targets
        self.transform = transform

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        from PIL import Image
        return self.transform(Image.fromarray(self.images[i])), int(self.targets[i]), i


def dataloader_batches(data: DataBundle, args, device) -> Iterator[Batch]:
    import torchvision.transforms as T
    mean = data.train.mean.flatten().tolist()
    std = data.train.std.flatten().tolist()
    transform = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                           T.Normalize(mean, std)])
    ds = PILImageSet(data.train.images.cpu().numpy(), data.train.targets.cpu().numpy(), transform)
    workers = int(args.num_workers)
    # persistent workers: the timed steps measure the steady state, not worker start-up at each epoch
    loader = torch.utils.data.DataLoader(ds, batch_size=args.batch_size, shuffle=True, num_workers=workers,
                                         pin_memory=device.type == "cuda", drop_last=True,
                                         persistent_workers=workers > 0)
    non_blocking = device.type == "cuda"
    for _ in itertools.count():
        for x, y, idx in loader:
            yield Batch(x.to(device, non_blocking=non_blocking), y.to(device, non_blocking=non_blocking),
                        idx.to(device, non_blocking=non_blocking))


def our_batches(data: DataBundle, args) -> Iterator[Batch]:
    for epoch in itertools.count(1):
        yield from data.train.train_batches(args.batch_size, args.seed, epoch, drop_last=True)


# ---------------------------------------------------------------- models

def build_teacher_training(args, data, device, pipeline):
    """As train_teacher.py: the teacher arch trained with the plain cross-entropy distiller 'ce'."""
    # the speed options before the network is placed (channels-last or not)
    opt = parse_teacher_options(["--model", args.model_t, "--batch_size", str(args.batch_size),
                                 "--device", str(device), "--seed", str(args.seed)] + speed_flags(args, pipeline))
    model = place_model(build_model(opt.model, num_classes=data.num_classes), device, opt)
    distiller = build_distiller("ce", DistillContext((), model, None, num_classes=data.num_classes,
                                                     device=device)).to(device)
    return opt, None, model, distiller


def trials_row(method, args, data, device, path_t) -> Dict:
    """``--trials N`` students of ``method`` stepping on the same batches; ms and images/s per student."""
    set_seed(args.seed)
    config = method_configuration(method, args, device, path_t, "ours", ["--trials", str(args.trials)])
    opt = config.options
    teacher = build_teacher(opt, data, device)
    runs = build_configuration_runs(config, data, device, teacher, side_by_side=False)
    batches = our_batches(data, args)
    elapsed, ops = time_steps(batches, opt, runs, teacher, device, args.warmup, args.steps)
    elapsed /= args.trials
    ms = elapsed * 1000.0 / args.steps
    row = {"method": method, "pipeline": f"ours, {args.trials} trials", "ms_per_step": ms,
           "images_per_s": args.batch_size * args.steps / elapsed, "seconds": elapsed * args.trials,
           "projected_hours": projected_hours(ms, args.batch_size), "speedup": None, "eager_ops": ops}
    print(f"{method:>10} {args.trials} trials: {ms:8.2f} ms/step per student  {row['images_per_s']:9.1f} images/s "
          f"per student", flush=True)
    return row


def build_method(method, args, data, device, path_t, pipeline):
    """As train_student.py: its option parser, build_teacher and build_configuration_runs with a teacher checkpoint, the networks
    placed as ``pipeline`` runs them (RepDistiller's NCHW for the dataloader row, also on CUDA)."""
    config = method_configuration(method, args, device, path_t, pipeline)
    opt = config.options
    teacher = build_teacher(opt, data, device)
    [run] = build_configuration_runs(config, data, device, teacher, side_by_side=False)
    return opt, teacher, run.student, run.distiller


def method_configuration(method, args, device, path_t, pipeline, extra=()):
    argv = ["--path_t", path_t, "--model_s", args.model_s, "--distill", method,
            "--batch_size", str(args.batch_size), "--device", str(device), "--seed", str(args.seed),
            "--nce_k", str(args.nce_k)] + speed_flags(args, pipeline) + list(extra)
    return parse_configurations(argv)[0]


def random_teacher_checkpoint(arch: str, num_classes: int, folder: str) -> str:
    path = os.path.join(folder, f"{arch}_vanilla", f"ckpt_epoch_{RECIPE_EPOCHS}.pth")
    save_checkpoint({"model": build_model(arch, num_classes=num_classes).state_dict(), "epoch": RECIPE_EPOCHS},
                    path)
    return path


# ---------------------------------------------------------------- timing

def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def speed_flags(args, pipeline: str) -> List[str]:
    """The ``ours`` rows take --amp/--channels_last/--compile; the dataloader row stays RepDistiller's."""
    ours = pipeline == "ours"
    flags = ["--amp", str(bool(args.amp) and ours), "--compile", str(bool(args.compile) and ours),
             "--compile_mode", args.compile_mode]
    channels_last = args.channels_last if ours else False
    if channels_last is not None:
        flags += ["--channels_last", str(channels_last)]
    return flags


def time_steps(batches: Iterator[Batch], opt, runs: List[StudentRun], teacher, device, warmup: int, steps: int,
               host_sync: bool = False, count_ops: bool = True):
    """Seconds for ``steps`` toolkit steps (batch fetch included) after ``warmup`` untimed ones; every run
    (one student, or the trials) steps on each batch, with one teacher forward per batch.

    ``host_sync``: read the loss and top-1 on the host every step, as RepDistiller's loop does; otherwise the
    epoch meter of the training loop adds them up on the device. Returns the seconds and the eager-op counts
    of one more (untimed) step (:func:`eager_op_counts`; None with ``count_ops=False``).
    """
    networks = [r.student for r in runs] + ([teacher] if teacher is not None else [])
    memory_format = torch.channels_last if use_channels_last(opt, device) else torch.contiguous_format
    for net in networks:
        net.to(memory_format=memory_format)  # as built for the pipeline; enforced, the row's premise
        compile_network(net, opt, device)
    for r in runs:
        r.optimizer = build_optimizer(r.student, r.distiller, r.opt, device)
        r.step = StudentStep(r.student, r.distiller)
        compile_step(r.step, opt, device)
        begin_train_epoch(r.student, r.distiller)
    if teacher is not None:
        Teacher.of(teacher).begin_epoch(1, opt.epochs)
    weights = [loss_weights(r.opt) for r in runs]
    meters = [EpochMeter(device) for _ in runs]

    def one():
        if uses_cuda_graphs(opt, device):
            torch.compiler.cudagraph_mark_step_begin()
        batch, results = step_runs(next(batches), 1, runs, weights, opt, device, teacher)
        if host_sync:
            for loss, _, logits in results:
                loss.item()
                accuracy(logits, batch.y)[0].item()
        else:
            for meter, (loss, terms, logits) in zip(meters, results):
                meter.update(loss, terms, logits, batch.y)
        return results

    for _ in range(warmup):
        one()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        results = one()
    sync(device)
    elapsed = time.perf_counter() - t0
    if not all(torch.isfinite(loss.detach()).item() for loss, _, _ in results):
        raise RuntimeError("the benchmark step produced a non-finite loss")
    return elapsed, (eager_op_counts(one) if count_ops else None)


def eager_op_counts(step) -> Dict[str, int]:
    """The aten operators that one call of ``step`` runs eagerly, by phase (``step``: batch, forwards, loss and
    meter; ``backward``; ``optimizer``), and their ``total``.

    Each eager op is dispatched from Python or autograd's engine on its own, a kernel launch on CUDA: what
    keeps a small-network step from being GPU-bound. Counted with the profiler's CPU events (a
    TorchDispatchMode would make dynamo run the compiled code eagerly): ops inside a compiled region
    (inductor's fused kernels and the library kernels its code calls) are not counted, and an op that another
    op calls (a composite's parts) is counted once, as its caller.
    """
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    counts = {"step": 0, "backward": 0, "optimizer": 0}
    for event in prof.events():
        if not event.name.startswith("aten::"):
            continue
        phase, parent = "step", event.cpu_parent
        while parent is not None:
            name = parent.name
            if name.startswith("aten::") or "Compiled" in name:  # "Torch-Compiled Region", "CompiledFunction..."
                phase = None
                break
            if name.startswith("Optimizer."):
                phase = "optimizer"
            elif name.startswith("autograd::engine") and phase == "step":
                phase = "backward"
            parent = parent.cpu_parent
        if phase is not None:
            counts[phase] += 1
    counts["total"] = sum(counts.values())
    return counts


def projected_hours(ms_per_step: float, batch_size: int) -> float:
    return RECIPE_EPOCHS * math.ceil(CIFAR_TRAIN / batch_size) * ms_per_step / 1000.0 / 3600.0


def device_name(device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, " \
           f"{torch.get_num_threads()} torch threads)"


def speed_note(header: Dict) -> str:
    parts = ["bf16 autocast" if header["amp"] else "float32"]
    if header["channels_last"] or (header["channels_last"] is None and header["device"].startswith("cuda")):
        parts.append("channels-last")
    if header["compile"]:
        parts.append("torch.compile")
    return ", ".join(parts)


def write_results(out: str, name: str, header: dict, rows: list, table: str) -> dict:
    """The markdown table at ``out`` (a .md file, or a folder that gets ``name``.md) and ``name``.json beside it."""
    md_path = out if out.endswith(".md") else os.path.join(out, f"{name}.md")
    out_dir = os.path.dirname(os.path.abspath(md_path))
    os.makedirs(out_dir, exist_ok=True)
    with open(md_path, "w") as f:
        f.write(table)
    json_path = os.path.join(out_dir, f"{name}.json")
    with open(json_path, "w") as f:
        json.dump({**header, "rows": rows}, f, indent=2)
    print("\n" + table, flush=True)
    print(f"wrote {md_path} and {json_path}", flush=True)
    return {**header, "rows": rows, "markdown": md_path, "json": json_path}


def markdown(rows: List[Dict], header: Dict) -> str:
    lines = [f"Device: {header['device_name']}; torch {header['torch']}, torchvision {header['torchvision']}; "
             f"{header['model_t']} -> {header['model_s']}, batch {header['batch_size']}, "
             f"{header['warmup']} warm-up + {header['steps']} timed steps; data: {header['data']}; ours: "
             f"{speed_note(header)}.", "",
             f"Command: `{header['command']}`", "",
             "| method | pipeline | ms/step | images/s | projected 240 epochs (h) | ours vs dataloader "
             "| eager ops/step (step + backward + optimizer) |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        speedup = f"{r['speedup']:.2f}x" if r.get("speedup") is not None else ""
        ops = r["eager_ops"]
        lines.append(f"| {r['method']} | {r['pipeline']} | {r['ms_per_step']:.2f} | {r['images_per_s']:.1f} | "
                     f"{r['projected_hours']:.2f} | {speedup} | {ops['total']} ({ops['step']} + {ops['backward']} "
                     f"+ {ops['optimizer']}) |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    args = parse_args(argv)
    device = select_device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    set_seed(args.seed)
    if args.dataset == "imagenet":
        return imagenet_main(args, device, argv)
    data, data_note = load_data(args, device)
    print(f"benchmark on {device_name(device)}; data: {data_note}", flush=True)
    pipelines = ["ours", "dataloader"] if args.pipeline == "both" else [args.pipeline]
    rows: List[Dict] = []
    with tempfile.TemporaryDirectory(prefix="kd_benchmark_") as tmp:
        path_t = random_teacher_checkpoint(args.model_t, data.num_classes, tmp)
        for method in args.methods:
            for pipeline in pipelines:
                set_seed(args.seed)
                if method == "teacher":
                    opt, teacher, student, distiller = build_teacher_training(args, data, device, pipeline)
                else:
                    opt, teacher, student, distiller = build_method(method, args, data, device, path_t, pipeline)
                batches = our_batches(data, args) if pipeline == "ours" else dataloader_batches(data, args, device)
                try:
                    elapsed, ops = time_steps(batches, opt, [StudentRun(opt, student, distiller)], teacher, device,
                                              args.warmup, args.steps, host_sync=pipeline == "dataloader")
                finally:
                    batches.close()  # ends the DataLoader's workers
                ms = elapsed * 1000.0 / args.steps
                row = {"method": method, "pipeline": pipeline, "ms_per_step": ms,
                       "images_per_s": args.batch_size * args.steps / elapsed, "seconds": elapsed,
                       "projected_hours": projected_hours(ms, args.batch_size), "speedup": None, "eager_ops": ops}
                rows.append(row)
                print(f"{method:>10} {pipeline:>10}: {ms:8.2f} ms/step  {row['images_per_s']:9.1f} images/s  "
                      f"240 epochs ~{row['projected_hours']:.2f} h  eager ops/step {ops['total']}", flush=True)
                del opt, teacher, student, distiller, batches
                if device.type == "cuda":
                    torch.cuda.empty_cache()
            if args.trials > 1 and method != "teacher":
                rows.append(trials_row(method, args, data, device, path_t))
    by_key = {(r["method"], r["pipeline"]): r for r in rows}
    for r in rows:
        # N students per teacher forward: per-student figures, compared with one student alone
        if r["pipeline"].endswith("trials") and (r["method"], "ours") in by_key:
            r["vs_one_student"] = by_key[(r["method"], "ours")]["ms_per_step"] / r["ms_per_step"]
    for r in rows:
        other = by_key.get((r["method"], "dataloader"))
        if r["pipeline"].startswith("ours") and other is not None:
            r["speedup"] = other["ms_per_step"] / r["ms_per_step"]
    import torchvision
    header = {"device": str(device), "device_name": device_name(device), "torch": torch.__version__,
              "torchvision": torchvision.__version__, "python": platform.python_version(),
              "cuda": torch.version.cuda if device.type == "cuda" else None,
              "command": "python scripts/benchmark.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "model_t": args.model_t, "model_s": args.model_s, "batch_size": args.batch_size,
              "warmup": args.warmup, "steps": args.steps, "num_workers": args.num_workers, "amp": args.amp,
              "channels_last": args.channels_last, "compile": args.compile,
              "data": data_note, "synthetic": data_note.startswith("synthetic"),
              "projection": f"{RECIPE_EPOCHS} * ceil({CIFAR_TRAIN} / batch_size) * ms_per_step"}
    table = markdown(rows, header)
    return write_results(args.out, "benchmark", header, rows, table)


# ---------------------------------------------------------------- ImageNet (--dataset imagenet)

IMAGENET_TRAIN = 1281167


def synthetic_jpeg_folder(root: str, args) -> str:
    """``--synthetic_n`` random-pixel JPEGs in (up to) 10 class folders (train/) and one per class (val/)."""
    from PIL import Image

    width, height = (int(v) for v in args.synthetic_size.lower().split("x"))
    rng = np.random.default_rng(args.seed)
    classes = min(10, args.synthetic_n)
    for split, n in (("train", args.synthetic_n), ("val", classes)):
        for i in range(n):
            folder = os.path.join(root, split, f"class{i % classes:02d}")
            os.makedirs(folder, exist_ok=True)
            pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(os.path.join(folder, f"{i:06d}.JPEG"), quality=90)
    return root


def imagenet_data(args, device, tmp: str, pipeline: str):
    from dataset import FolderSettings

    settings = FolderSettings(crop_size=args.crop_size, num_workers=args.num_workers, pipeline=pipeline)
    if os.path.isdir(os.path.join(args.data_root, "train")):
        return build_dataset("imagenet", args.data_root, device, settings), f"ImageFolder '{args.data_root}'"
    root = os.path.join(tmp, "jpeg")
    if not os.path.isdir(root):
        synthetic_jpeg_folder(root, args)
    note = (f"synthetic ImageFolder of {args.synthetic_n} random-pixel {args.synthetic_size} JPEG files (quality 90, "
            f"{min(10, args.synthetic_n)} classes)")
    return build_dataset("imagenet", root, device, settings), note


def endless_batches(data, args) -> Iterator[Batch]:
    for epoch in itertools.count(1):
        yield from data.train.train_batches(args.batch_size, args.seed, epoch, drop_last=True)


def pipeline_rate(data, args, device) -> float:
    """Images/s of a data pipeline alone: batches decoded, augmented, on the device and normalised."""
    batches = endless_batches(data, args)
    for _ in range(args.warmup):
        next(batches)
    sync(device)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        next(batches)
    sync(device)
    elapsed = time.perf_counter() - t0
    batches.close()
    return args.batch_size * args.steps / elapsed


def imagenet_runs(method, args, data, device, path_t, root):
    argv = ["--dataset", "imagenet", "--data_root", root, "--path_t", path_t, "--model_t", args.model_t,
            "--model_s", args.model_s, "--distill", method, "--batch_size", str(args.batch_size), "--device",
            str(device), "--seed", str(args.seed), "--nce_k", str(args.nce_k), "--crop_size", str(args.crop_size)]
    argv += speed_flags(args, "ours")
    config = parse_configurations(argv)[0]
    teacher = build_teacher(config.options, data, device)
    [run] = build_configuration_runs(config, data, device, teacher, side_by_side=False)
    return config.options, teacher, run


def imagenet_main(args, device, argv):
    from models import IMAGENET

    rows: List[Dict] = []
    with tempfile.TemporaryDirectory(prefix="kd_benchmark_imagenet_") as tmp:
        pipelines = ["dataloader"]
        from dataset.folder import dali_available
        if device.type == "cuda" and dali_available():
            pipelines.append("dali")
        datasets = {}
        for pipeline in pipelines:
            datasets[pipeline], note = imagenet_data(args, device, tmp, pipeline)
        data = datasets["dataloader"]
        root = args.data_root if "ImageFolder '" in note else os.path.join(tmp, "jpeg")
        print(f"benchmark on {device_name(device)}; data: {note}; pipelines: {', '.join(pipelines)}", flush=True)
        for pipeline in pipelines:
            rate = pipeline_rate(datasets[pipeline], args, device)
            rows.append({"row": "data pipeline alone", "pipeline": pipeline, "method": "",
                         "images_per_s": rate, "ms_per_step": args.batch_size * 1000.0 / rate})
        path = os.path.join(tmp, f"{args.model_t}_vanilla", "ckpt_epoch_100.pth")
        save_checkpoint({"model": build_model(args.model_t, num_classes=data.num_classes,
                                              family=IMAGENET).state_dict()}, path)
        for method in args.methods:
            set_seed(args.seed)
            opt, teacher, run = imagenet_runs(method, args, data, device, path, root)
            g = torch.Generator().manual_seed(args.seed)
            x = torch.randn(args.batch_size, *data.train.input_shape, generator=g).to(device)
            y = (torch.arange(args.batch_size) % data.num_classes).to(device)
            fixed = Batch(x, y, torch.arange(args.batch_size, device=device) % len(data.train))
            feeds = [("training step alone", "device tensors", itertools.repeat(fixed))]
            feeds += [("training step with data", p, endless_batches(datasets[p], args)) for p in pipelines]
            for row_name, pipeline, batches in feeds:
                elapsed, _ = time_steps(batches, opt, [run], teacher, device, args.warmup, args.steps,
                                        count_ops=False)
                ms = elapsed * 1000.0 / args.steps
                rows.append({"row": row_name, "pipeline": pipeline, "method": method, "ms_per_step": ms,
                             "images_per_s": args.batch_size * 1000.0 / ms})
                print(f"{method:>6} {row_name:>24} ({pipeline}): {ms:9.2f} ms/step  "
                      f"{args.batch_size * 1000.0 / ms:9.1f} images/s", flush=True)
    for r in rows:
        r["projected_hours"] = args.projection * math.ceil(IMAGENET_TRAIN / args.batch_size) * r["ms_per_step"] \
            / 1000.0 / 3600.0
    import torchvision
    header = {"device": str(device), "device_name": device_name(device), "torch": torch.__version__,
              "torchvision": torchvision.__version__, "dataset": "imagenet", "data": note,
              "command": "python scripts/benchmark.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "model_t": args.model_t, "model_s": args.model_s, "batch_size": args.batch_size,
              "crop_size": args.crop_size, "num_workers": args.num_workers, "warmup": args.warmup,
              "steps": args.steps, "projection": f"{args.projection} * ceil({IMAGENET_TRAIN} / batch_size) * ms"}
    lines = [f"Device: {header['device_name']}; torch {header['torch']}; {args.model_t} -> {args.model_s}, batch "
             f"{args.batch_size}, crop {args.crop_size}, {args.num_workers} workers, {args.warmup} warm-up + "
             f"{args.steps} timed batches; data: {note}.", "", f"Command: `{header['command']}`", "",
             f"| row | method | pipeline | ms/batch | images/s | projected {args.projection} epochs (h) |",
             "|---|---|---|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['row']} | {r['method']} | {r['pipeline']} | {r['ms_per_step']:.1f} | "
                     f"{r['images_per_s']:.1f} | {r['projected_hours']:.1f} |")
    table = "\n".join(lines) + "\n"
    return write_results(args.out, "benchmark_imagenet", header, rows, table)


if __name__ == "__main__":
    main()
