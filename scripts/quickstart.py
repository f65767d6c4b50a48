"""Quickstart on the bundled digits set: a teacher, students trained alone and students distilled with KD, each over
several seeds; prints top-1 as mean +- sd.

Run through ``bash scripts/quickstart.sh`` (which creates the environment). It is the ``quickstart`` table of
``scripts/reproduce_table.py`` (experiments/tables/quickstart.json): outputs go to ``save/quickstart/``, a second
run reuses the finished runs, and everything is offline.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from experiments.cells import Settings, table_cells  # noqa: E402
from experiments.jobs import table_jobs  # noqa: E402
from experiments.runner import RunOptions, cpu_threads, run_table_jobs  # noqa: E402
from experiments.summary import summarize  # noqa: E402
from experiments.table import load_table  # noqa: E402
from helper.run import run_cli  # noqa: E402
from models import build_model  # noqa: E402


def count_params(name: str) -> int:
    return sum(p.numel() for p in build_model(name, num_classes=10).parameters())


def ours(entry) -> str:
    if entry.mean is None:
        return "–"
    sd = f" ± {entry.sd:.2f}" if entry.sd is not None else ""
    return f"{entry.mean:.2f}{sd}"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--save_dir", default="./save/quickstart")
    p.add_argument("--device", default="auto")
    p.add_argument("--trials", type=int, default=None, help="seeds per student (default: the table's, 3)")
    p.add_argument("--jobs", type=int, default=2, help="trainings at a time (default 2: the students trained alone "
                                                       "run next to the teacher, each on its share of the cores)")
    args = p.parse_args(argv)
    table = load_table("quickstart")
    settings = Settings(save_dir=args.save_dir, trials=args.trials)
    cells = table_cells(table, settings)
    t0 = time.time()
    devices = () if args.device == "auto" else (args.device,)
    options = RunOptions(jobs=args.jobs, devices=devices, log_dir=os.path.join(args.save_dir, "logs"),
                         threads=cpu_threads(args.jobs, devices, torch.cuda.is_available()))
    if run_table_jobs(table_jobs(cells, "pair"), cells, options):
        raise SystemExit(f"error: a quickstart run failed; its log is in {options.log_dir}")
    cells = table_cells(table, settings)
    last, best = summarize(table, cells, "last"), summarize(table, cells, "best")
    column = table.columns[0]
    trials = settings.trials or table.trials
    by_kind = {c.kind: c for c in cells}
    print(f"\ndigits test set, top-1 %: teacher {by_kind['teacher'].epochs} epochs, students "
          f"{by_kind['student'].epochs} epochs, mean ± sd over {trials} seeds ({time.time() - t0:.0f} s in all)")
    print(f"| {'run':34s} | {'model':9s} | {'params':>8s} | {'top-1 last':>13s} | {'top-1 best':>13s} |")
    print(f"|{'-' * 36}|{'-' * 11}|{'-' * 10}|{'-' * 15}|{'-' * 15}|")
    rows = []
    for row in table.rows:
        model = column.teacher if row.kind == "teacher" else row.student_for(column)
        entry_last, entry_best = last.entry(row, column), best.entry(row, column)
        rows.append((row.label, model, entry_last, entry_best))
        print(f"| {row.label:34s} | {model:9s} | {count_params(model):8,d} | {ours(entry_last):>13s} | "
              f"{ours(entry_best):>13s} |")
    alone, kd = (last.entry(r, column) for r in table.rows if r.kind != "teacher")
    if alone.mean is not None and kd.mean is not None:
        spread = max(e.sd or 0.0 for e in (alone, kd))
        print(f"KD - from scratch (last epoch): {kd.mean - alone.mean:+.2f} points; the larger sd over the seeds: "
              f"{spread:.2f}")
    return rows


if __name__ == "__main__":
    run_cli(main)  # Ctrl-C or SIGTERM stop the running trainings cleanly (they continue on the next run)
