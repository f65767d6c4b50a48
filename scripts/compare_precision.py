"""Does bf16 autocast or torch.compile change accuracy? The same KD runs, same seeds, in each variant.

    python scripts/compare_precision.py --dataset cifar100 --device cuda --epochs 30 --trials 3
    python scripts/compare_precision.py --dataset digits --device cpu --epochs 15 --trials 3   # offline, CPU

One teacher is trained (float32) unless ``--path_t`` is given; then, for every variant, ``train_student.py`` runs
KD (``-r 0.1 -a 0.9 -b 0``) with ``--trials N`` (seeds seed..seed+N-1, the same batches in every variant). The
schedule is RepDistiller's scaled to ``--epochs`` (decays at 60/75/87.5 % of the run). Prints and writes a markdown
table: mean and sample standard deviation of the last and best test top-1 per variant, and the difference of
each variant's mean from float32's next to the float32 spread, which is the noise it must be compared with.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from assembly.scratch import train_from_scratch  # noqa: E402
from assembly.student import distill  # noqa: E402

VARIANTS = {"fp32": [], "bf16": ["--amp"], "compile": ["--compile"], "bf16+compile": ["--amp", "--compile"]}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="digits", choices=["digits", "cifar10", "cifar100"])
    p.add_argument("--data_root", default="./data")
    p.add_argument("--model_t", default="resnet32")
    p.add_argument("--model_s", default="resnet8")
    p.add_argument("--path_t", default=None, help="a trained teacher; default: train one here first")
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--trials", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--variants", default="fp32,bf16,compile", help=f"comma list of {', '.join(VARIANTS)}")
    p.add_argument("--device", default="auto")
    p.add_argument("--save_dir", default="./save/compare_precision")
    args = p.parse_args(argv)
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown or not args.variants:
        p.error(f"--variants: unknown {unknown}; choose from {', '.join(VARIANTS)}")
    if "fp32" not in args.variants:
        args.variants.insert(0, "fp32")  # the reference every other variant is compared with
    return args


def mean_std(values):
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def main(argv=None):
    args = parse_args(argv)
    e = args.epochs
    decay = ",".join(str(max(1, int(e * f))) for f in (0.6, 0.75, 0.875))
    common = ["--dataset", args.dataset, "--data_root", args.data_root, "--epochs", str(e), "--lr_decay_epochs",
              decay, "--device", args.device, "--seed", str(args.seed), "--batch_size", str(args.batch_size),
              "--save_freq", str(e), "--overwrite"]  # a new comparison retrains every run
    t0 = time.time()
    path_t = args.path_t
    if path_t is None:
        save = os.path.join(args.save_dir, "teacher")
        train_from_scratch(common + ["--model", args.model_t, "--save_dir", save, "--trial", "precision"])
        path_t = os.path.join(save, "models", f"{args.model_t}_{args.dataset}_lr_0.05_decay_0.0005_trial_precision",
                              f"{args.model_t}_last.pth")
    results = {}
    for variant in args.variants:
        out = distill(common + ["--path_t", path_t, "--distill", "kd", "--model_s", args.model_s,
                                           "-r", "0.1", "-a", "0.9", "-b", "0", "--trials", str(args.trials),
                                           "--save_dir", os.path.join(args.save_dir, variant)]
                                 + VARIANTS[variant])
        trials = out.get("trials", [out])
        results[variant] = {"last": [t["last_acc"] for t in trials], "best": [t["best_acc"] for t in trials]}
    ref_last, ref_sd = mean_std(results["fp32"]["last"])
    lines = [f"KD {args.model_s} from {args.model_t} on {args.dataset}, {e} epochs, {args.trials} seeds "
             f"({args.seed}..{args.seed + args.trials - 1}), device {args.device}; {time.time() - t0:.0f} s in all",
             "", "| variant | last top-1 (mean +- sd) | best top-1 (mean +- sd) | last - fp32 | fp32 sd |",
             "|---|---:|---:|---:|---:|"]
    for variant, r in results.items():
        (lm, ls), (bm, bs) = mean_std(r["last"]), mean_std(r["best"])
        lines.append(f"| {variant} | {lm:.2f} +- {ls:.2f} | {bm:.2f} +- {bs:.2f} | {lm - ref_last:+.2f} | "
                     f"{ref_sd:.2f} |")
    table = "\n".join(lines) + "\n"
    os.makedirs(args.save_dir, exist_ok=True)
    with open(os.path.join(args.save_dir, "compare_precision.md"), "w") as f:
        f.write(table)
    with open(os.path.join(args.save_dir, "compare_precision.json"), "w") as f:
        json.dump({"args": vars(args), "results": results}, f, indent=2)
    print("\n" + table, flush=True)
    return results


if __name__ == "__main__":
    main()
