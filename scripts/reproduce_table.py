"""Reproduce a paper's table with one command (the tables are data: experiments/tables/*.json).

    python scripts/reproduce_table.py                          # the tables
    python scripts/reproduce_table.py kdrefine --list          # one command per cell, to run by hand or schedule
    python scripts/reproduce_table.py kdrefine --device cuda:0,cuda:1   # run it: finished cells skipped
    python scripts/reproduce_table.py kdrefine --summarize     # mean +- sd next to the paper's numbers

Running, cells that share a teacher and a student train side by side in one process (--trials N students each),
an interrupted run continues (--resume auto), and a progress line gives the time left. The summaries (last and
best epoch; markdown, CSV, LaTeX, a figure of ours vs the paper) go to SAVE_DIR/tables/TABLE/.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from experiments.cli import reproduce_main  # noqa: E402
from helper.run import run_cli  # noqa: E402

if __name__ == "__main__":
    run_cli(reproduce_main)
