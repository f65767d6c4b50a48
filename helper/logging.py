"""Per-run logging: tensorboard scalars, one JSON row per epoch, and a console line per epoch."""
from __future__ import annotations

import json
import math
import os
import sys
import warnings
from typing import Dict

METRICS_FILE = "metrics.jsonl"


def metrics_line(row: Dict) -> str:
    """One strict-JSON line: a non-finite number (nan, inf) is written as null, which json.dumps would write
    as the bare NaN/Infinity that strict readers reject; :func:`read_metrics` reads null back as nan."""
    return json.dumps(finite_or_null(row), allow_nan=False) + "\n"


def finite_or_null(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_or_null(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_null(v) for v in value]
    return value


class RunLogger:
    """Writes ``metrics.jsonl`` and tensorboard events into the run folder.

    On resume after epoch k, rows of later epochs (from the interrupted attempt) are dropped so the
    file holds exactly one row per finished epoch.
    """

    def __init__(self, run_dir: str, resume_epoch: int = 0, tensorboard: bool = True, quiet: bool = False,
                 tracker=None):
        """``tracker``: an object with ``log(row)`` and ``close()`` (``--wandb``) that gets every row too."""
        os.makedirs(run_dir, exist_ok=True)
        self.tracker = tracker
        self.run_dir = run_dir
        self.path = os.path.join(run_dir, METRICS_FILE)
        self.quiet = quiet
        rows = read_metrics(run_dir) if resume_epoch > 0 else []
        with open(self.path, "w") as f:
            for row in rows:
                if row.get("epoch", 0) <= resume_epoch and row.get("stage", "train") == "train":
                    f.write(metrics_line(row))
                elif row.get("stage") == "init":
                    f.write(metrics_line(row))
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.writer = SummaryWriter(log_dir=os.path.join(run_dir, "tensorboard"))
            except Exception as exc:  # noqa: BLE001 - logging must never stop a run
                warnings.warn(f"tensorboard logging disabled: {exc}")

    def log(self, row: Dict, prefix: str = "") -> None:
        with open(self.path, "a") as f:
            f.write(metrics_line(row))
        if self.tracker is not None:
            self.tracker.log(row)
        if self.writer is not None:
            step = int(row.get("epoch", 0))
            for k, v in row.items():
                if k != "epoch" and isinstance(v, (int, float)):
                    self.writer.add_scalar(prefix + k, v, step)
            self.writer.flush()

    def print(self, text: str) -> None:
        if not self.quiet:
            print(text, flush=True)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.tracker is not None:
            self.tracker.close()
            self.tracker = None


class NullLogger:
    """The logger of every process but the first under torchrun: outputs are written by process 0 only."""

    def log(self, row: Dict, prefix: str = "") -> None:
        pass

    def print(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass


def read_metrics(run_dir: str):
    """The rows of ``metrics.jsonl``; a null value (a non-finite number when written) is read as nan, so that
    the numeric columns stay numbers."""
    path = os.path.join(run_dir, METRICS_FILE)
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [{k: (math.nan if v is None else v) for k, v in row.items()} for row in rows]


def progress(total: int, desc: str):
    """A tqdm bar on a terminal; None elsewhere (the loop then prints one plain line per epoch)."""
    if not sys.stderr.isatty():
        return None
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        return None
    return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True)
