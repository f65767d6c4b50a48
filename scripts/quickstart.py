"""Quickstart on the bundled digits set: teacher, student from scratch, KD student; prints a table.

Run through ``bash scripts/quickstart.sh`` (which creates the environment). Outputs go to
``save/quickstart/``. Everything is offline and takes a few minutes on 2 CPU cores.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from assembly.scratch import train_from_scratch  # noqa: E402
from assembly.student import distill  # noqa: E402
from models import build_model  # noqa: E402


def count_params(name: str) -> int:
    return sum(p.numel() for p in build_model(name, num_classes=10).parameters())


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--teacher", default="resnet32")
    p.add_argument("--student", default="resnet8")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--save_dir", default="./save/quickstart")
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)
    e = args.epochs
    decay = ",".join(str(int(e * f)) for f in (0.6, 0.8, 0.9))  # RepDistiller's 150/180/210 of 240, scaled
    common = ["--dataset", "digits", "--epochs", str(e), "--lr_decay_epochs", decay, "--save_dir", args.save_dir,
              "--device", args.device, "--seed", "0", "--save_freq", str(e),
              "--overwrite"]  # running the quickstart again retrains its three runs
    t0 = time.time()
    print(f"== 1/3 teacher {args.teacher}", flush=True)
    teacher = train_from_scratch(common + ["--model", args.teacher, "--trial", "quickstart"])
    t_dir = os.path.join(args.save_dir, "models", f"{args.teacher}_digits_lr_0.05_decay_0.0005_trial_quickstart")
    print(f"== 2/3 student {args.student} from scratch", flush=True)
    scratch = train_from_scratch(common + ["--model", args.student, "--trial", "quickstart"])
    print(f"== 3/3 student {args.student} distilled with KD", flush=True)
    kd = distill(common + ["--path_t", os.path.join(t_dir, f"ckpt_epoch_{e}.pth"),
                                      "--distill", "kd", "--model_s", args.student,
                                      "-r", "0.1", "-a", "0.9", "-b", "0", "--trial", "quickstart"])
    rows = [("teacher", args.teacher, teacher), ("student, from scratch", args.student, scratch),
            ("student, KD (-r 0.1 -a 0.9 -b 0)", args.student, kd)]
    print(f"\ndigits test set, top-1 % after {e} epochs ({time.time() - t0:.0f} s in all)")
    print(f"| {'run':34s} | {'model':9s} | {'params':>8s} | {'top-1 last':>10s} | {'top-1 best':>10s} |")
    print(f"|{'-' * 36}|{'-' * 11}|{'-' * 10}|{'-' * 12}|{'-' * 12}|")
    for label, name, res in rows:
        print(f"| {label:34s} | {name:9s} | {count_params(name):8,d} | {res['last_acc']:10.2f} | "
              f"{res['best_acc']:10.2f} |")
    return rows


if __name__ == "__main__":
    main()
