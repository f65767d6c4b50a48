"""What a run folder says about its run: finished or not, how many epochs are done, and its number for a table.

A run is finished when ``metrics.jsonl`` holds the row of its last epoch (the number the table needs exists;
``--resume auto`` then finds the run finished too, or completes its last checkpoint).
"""
from __future__ import annotations

import json
import math
import os
from typing import Dict, List, Optional

from helper.logging import read_metrics
from helper.multihead import best_epoch_row

SELECTIONS = ("last", "best", "best_last10")
SELECTION_TEXT = {"last": "last epoch", "best": "best epoch",
                  "best_last10": "best of the last 10 epochs"}


def epoch_rows(run_dir: Optional[str]) -> List[Dict]:
    """The per-epoch rows of the main training stage that carry a test accuracy, in epoch order."""
    if not run_dir:
        return []
    rows = [r for r in read_metrics(run_dir) if r.get("stage", "train") == "train" and "test_acc" in r]
    return sorted(rows, key=lambda r: r["epoch"])


def epochs_done(run_dir: Optional[str], epochs: int) -> int:
    rows = epoch_rows(run_dir)
    return min(int(rows[-1]["epoch"]), epochs) if rows else 0


def is_finished(run_dir: Optional[str], epochs: int) -> bool:
    return epochs_done(run_dir, epochs) >= epochs > 0


def has_started(run_dir: Optional[str]) -> bool:
    return bool(run_dir) and os.path.isdir(run_dir) and any(
        n == "metrics.jsonl" or n.endswith(".pth") for n in os.listdir(run_dir))


def selected_row(rows: List[Dict], selection: str) -> Optional[Dict]:
    """The epoch row a table reads under ``selection``: the last, the best by test top-1 (the first of equals;
    for a multi-exit network the deepest exit decides, as BYOT picks its epoch), or the best of the last 10."""
    if not rows:
        return None
    if selection == "last":
        return rows[-1]
    if selection == "best":
        return best_epoch_row(rows)
    if selection == "best_last10":
        return best_epoch_row(rows[-10:])
    raise ValueError(f"unknown selection '{selection}'; one of {', '.join(SELECTIONS)}")


def run_value(run_dir: Optional[str], epochs: int, metric: str, selection: str) -> Optional[float]:
    """A finished run's number for a table (None while it is unfinished or lacks ``metric``)."""
    rows = epoch_rows(run_dir)
    if not rows or int(rows[-1]["epoch"]) < epochs:
        return None
    row = selected_row([r for r in rows if r["epoch"] <= epochs], selection)
    value = None if row is None else row.get(metric)
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def summary_value(run_dir: Optional[str], key: str) -> Optional[float]:
    """A number of a run's summary.json (e.g. ``teacher_acc``, the teacher's test top-1 when the run began)."""
    if not run_dir:
        return None
    path = os.path.join(run_dir, "summary.json")
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            value = json.load(f).get(key)
    except (OSError, ValueError):
        return None
    return float(value) if isinstance(value, (int, float)) else None
