"""The command lines of ``scripts/reproduce_table.py`` and ``scripts/plot_runs.py``."""
from __future__ import annotations

import argparse
import os
import shlex
import sys
from typing import Callable, List, Optional, Sequence

import torch

from helper.util import unknown_device

from .cells import DEFAULT_DATA_ROOT, DEFAULT_SAVE_DIR, TEACHER_CHOICES, Cell, Settings, table_cells
from .jobs import GROUPINGS, Job, table_jobs
from .runner import RunOptions, cpu_threads, run_table_jobs
from .summary import TEACHER_TOLERANCE, csv_text, latex, legend, markdown, selections_of, summarize, \
    teacher_warnings
from .table import Table, available_tables, describe, load_table


def reproduce_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="reproduce_table.py",
        description="Reproduce a paper's table: list its commands, run them (finished cells skipped, interrupted "
                    "ones resumed), or summarise its run folders next to the paper's numbers.")
    p.add_argument("table", nargs="?", help=f"one of {', '.join(available_tables())}, or a table file (.json); "
                                            "without it, the tables are listed")
    p.add_argument("--list", action="store_true", help="print the commands (one per cell; with --group pair or "
                                                       "teacher, one per process) instead of running them")
    p.add_argument("--summarize", action="store_true", help="summarise the run folders (markdown, CSV, LaTeX and a "
                                                            "figure of ours vs the paper) instead of running")
    p.add_argument("--trials", type=int, default=None, help="trials per cell (default: the table's)")
    p.add_argument("--epochs", type=int, default=None,
                   help="shorten every run to N epochs (lr milestones and snapshot period scale along): smoke runs")
    p.add_argument("--teachers", default="auto", choices=TEACHER_CHOICES,
                   help="RepDistiller's tables: its published checkpoints (fetched), teachers trained here (trained), "
                        "or the published one where it was fetched (auto)")
    p.add_argument("--group", default=None, choices=GROUPINGS,
                   help="students per process: one cell, every cell of a teacher -> student pair (default when "
                        "running), or every cell of a teacher; --list prints one command per cell unless given")
    p.add_argument("--jobs", type=int, default=None, help="processes at a time (default: one per --device)")
    p.add_argument("--device", default=None, help="comma-separated devices the processes take in turn, e.g. "
                                                  "cuda:0,cuda:1 (default: each run's auto)")
    p.add_argument("--save_dir", default=DEFAULT_SAVE_DIR, help="root of the run folders (as the entry scripts)")
    p.add_argument("--data_root", default=DEFAULT_DATA_ROOT)
    p.add_argument("--out", default=None, help="folder of the summaries and logs (default SAVE_DIR/tables/TABLE)")
    p.add_argument("--teacher_tolerance", type=float, default=TEACHER_TOLERANCE,
                   help="warn when a teacher tests this many points from the paper's teacher")
    p.add_argument("--teacher_args", default="", help="extra flags for every train_teacher.py run (one string)")
    p.add_argument("--student_args", default="", help="extra flags for every train_student.py run (one string)")
    p.add_argument("--progress_every", type=float, default=60.0, help="seconds between progress lines")
    return p


def check_positive(flag: str, value: Optional[int]) -> None:
    if value is not None and value < 1:
        raise ValueError(f"{flag} must be at least 1, got {value}")


def devices_of(text: Optional[str]) -> List[str]:
    devices = [d.strip() for d in (text or "").split(",") if d.strip()]
    for d in devices:
        problem = unknown_device(d)
        if problem:
            raise ValueError(problem)
    return devices


def shell_line(job_or_script, argv: Sequence[str]) -> str:
    return shlex.join(["python", job_or_script] + list(argv))


def listing(cells: Sequence[Cell], grouping: Optional[str]) -> str:
    """The commands, teachers first: one per cell (a trial per line for runs of train_teacher.py) or, with a
    grouping, one per process."""
    lines: List[str] = []
    if grouping is None:
        printed = set()
        ordered = [c for c in cells if c.kind == "teacher"] + [c for c in cells if c.kind != "teacher"]
        for cell in ordered:
            if cell.not_applicable:
                lines.append(f"# {cell.label}: n/a in the paper (the method does not apply), not run")
                continue
            if cell.fetched:
                lines.append(f"# {cell.label}: RepDistiller's published teacher {cell.run_dirs[0]} "
                             "(bash scripts/fetch_pretrained_teachers.sh)")
                continue
            new = [argv for argv in cell.commands if (cell.script,) + tuple(argv) not in printed]
            if not new:
                continue
            lines.append(f"# {cell.label}")
            for argv in new:
                printed.add((cell.script,) + tuple(argv))
                lines.append(shell_line(cell.script, argv))
        return "\n".join(lines)
    for job in table_jobs(cells, grouping):
        names = sorted(dict.fromkeys(c.label for c in job.cells)) or ["teacher"]
        lines.append(f"# {'; '.join(names)}")
        lines.append(shell_line(job.script, job.argv))
    return "\n".join(lines)


def output_folder(args, table: Table) -> str:
    return args.out or os.path.join(args.save_dir, "tables", table.name)


def write_summaries(table: Table, cells: Sequence[Cell], folder: str, tolerance: float,
                    say: Callable[[str], None] = print) -> List[str]:
    """summary.md/.csv/.tex and ours_vs_paper.png in ``folder``; prints the markdown and the warnings."""
    summaries = [summarize(table, cells, s) for s in selections_of(table)]
    warnings = teacher_warnings(table, cells, tolerance)
    text = "\n".join(markdown(s) for s in summaries) + "\n" + legend(table) + "\n"
    if warnings:
        text += "\n" + "\n".join(warnings) + "\n"
    os.makedirs(folder, exist_ok=True)
    paths = []
    for name, content in (("summary.md", f"# {table.title}\n\n{text}"), ("summary.csv", csv_text(summaries)),
                          ("summary.tex", "\n".join(latex(s) for s in summaries))):
        path = os.path.join(folder, name)
        with open(path, "w") as f:
            f.write(content)
        paths.append(path)
    try:
        from .plots import plot_against_paper
        figure = plot_against_paper(summaries, os.path.join(folder, "ours_vs_paper.png"))
    except ImportError as exc:  # matplotlib is in requirements.txt; a bare environment still gets the tables
        figure = None
        say(f"note: no figure ({exc}; pip install -r requirements.txt)")
    if figure:
        paths.append(figure)
    say(text)
    say("written: " + ", ".join(paths))
    return paths


def reproduce_main(argv: Optional[Sequence[str]] = None, say: Callable[[str], None] = print) -> int:
    args = reproduce_parser().parse_args(argv)
    if args.table is None:
        say(describe([load_table(n) for n in available_tables()]))
        return 0
    for flag in ("trials", "epochs", "jobs"):
        check_positive(f"--{flag}", getattr(args, flag))
    devices = devices_of(args.device)
    table = load_table(args.table)
    settings = Settings(save_dir=args.save_dir, data_root=args.data_root, trials=args.trials, epochs=args.epochs,
                        teachers=args.teachers, teacher_args=tuple(shlex.split(args.teacher_args)),
                        student_args=tuple(shlex.split(args.student_args)))
    cells = table_cells(table, settings)
    if args.list:
        try:
            say(listing(cells, args.group))
        except BrokenPipeError:  # --list | head: the reader has what it wanted
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    folder = output_folder(args, table)
    if args.summarize:
        write_summaries(table, cells, folder, args.teacher_tolerance, say)
        return 0
    jobs: List[Job] = table_jobs(cells, args.group or "pair")
    jobs_at_once = args.jobs or max(1, len(devices))
    options = RunOptions(jobs=jobs_at_once, devices=tuple(devices), log_dir=os.path.join(folder, "logs"),
                         progress_every=args.progress_every,
                         threads=cpu_threads(jobs_at_once, devices, torch.cuda.is_available()))
    failed = run_table_jobs(jobs, cells, options, say)
    write_summaries(table, table_cells(table, settings), folder, args.teacher_tolerance, say)
    if failed:
        raise SystemExit(f"error: {failed} jobs failed or could not start; their logs are in {options.log_dir}; run "
                         "the same command again to retry them (finished cells are skipped)")
    return 0


def plot_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="plot_runs.py", description="Test top-1 and training loss per epoch of run "
                                "folders in one PNG; the trials of one configuration as mean and +- sd band.")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run folders (holding metrics.jsonl)")
    p.add_argument("--out", default="curves.png", help="the PNG to write")
    p.add_argument("--separate", action="store_true", help="one curve per run folder instead of per configuration")
    p.add_argument("--labels", default=None, help="comma-separated legend labels, one per configuration")
    p.add_argument("--title", default=None)
    return p


def plot_main(argv: Optional[Sequence[str]] = None, say: Callable[[str], None] = print) -> str:
    args = plot_parser().parse_args(argv)
    missing = [d for d in args.run_dirs if not os.path.isdir(d)]
    if missing:
        raise FileNotFoundError(f"'{missing[0]}' is not a folder; give run folders (save/student_model/..., "
                                "save/models/...)")
    from .plots import group_runs, plot_runs
    labels = [s.strip() for s in args.labels.split(",")] if args.labels else None
    groups = group_runs(args.run_dirs, args.separate)
    if labels is not None and len(labels) != len(groups):
        raise ValueError(f"--labels gives {len(labels)} labels for {len(groups)} configurations "
                         f"({', '.join(groups)})")
    path = plot_runs(args.run_dirs, args.out, args.separate, labels, args.title)
    say(f"written: {path} ({len(groups)} configurations, {len(args.run_dirs)} runs)")
    return path
