"""Optional experiment tracking with Weights & Biases (``--wandb``): every row metrics.jsonl gets, logged to a W&B run.

wandb is an optional install (``pip install wandb``), imported only when ``--wandb`` is given. The default mode is
offline: the run is written under the run folder's ``wandb/`` without any network and uploaded later with
``wandb sync``. A resumed run continues its W&B run: the id is kept in the run folder (``wandb_id.txt``).
Several runs of one process (side-by-side methods, ``--trials``) are one W&B run each (wandb >= 0.19.10).
"""
from __future__ import annotations

import importlib.util
import os
import uuid
import warnings
from typing import Any, Dict, Optional

WANDB_ID_FILE = "wandb_id.txt"
MODES = ("offline", "online")


def missing_wandb() -> Optional[str]:
    """Why --wandb cannot work here, or None."""
    if importlib.util.find_spec("wandb") is None:
        return "--wandb needs the optional package wandb (pip install wandb); leave out --wandb to train without it"
    return None


def run_id(run_dir: str, resumed: bool) -> str:
    """The W&B id of this run folder's run: the one it had when resuming, else a new one (kept in the folder)."""
    path = os.path.join(run_dir, WANDB_ID_FILE)
    if resumed and os.path.isfile(path):
        with open(path) as f:
            kept = f.read().strip()
        if kept:
            return kept
    new = uuid.uuid4().hex[:16]
    os.makedirs(run_dir, exist_ok=True)
    with open(path, "w") as f:
        f.write(new + "\n")
    return new


class WandbTracker:
    """Logs rows to one W&B run; a failure of the tracker warns once and never stops training."""

    def __init__(self, run):
        self.run = run
        self.broken = False

    def log(self, row: Dict[str, Any]) -> None:
        if self.broken:
            return
        try:
            self.run.log(dict(row))
        except Exception as exc:  # noqa: BLE001 - tracking must never stop a run
            self.broken = True
            warnings.warn(f"--wandb logging stopped: {type(exc).__name__}: {exc}")

    def close(self) -> None:
        if not self.broken:
            try:
                self.run.finish()
            except Exception as exc:  # noqa: BLE001
                warnings.warn(f"--wandb could not finish its run: {type(exc).__name__}: {exc}")


def open_wandb(run_dir: str, project: str, name: Optional[str], mode: str, config: Dict[str, Any],
               resumed: bool) -> WandbTracker:
    """A tracker for the run in ``run_dir`` (``name`` defaults to the folder's name)."""
    if mode not in MODES:
        raise ValueError(f"--wandb_mode must be one of {', '.join(MODES)}, got '{mode}'")
    import wandb

    run = wandb.init(project=project, name=name or os.path.basename(os.path.normpath(run_dir)),
                     id=run_id(run_dir, resumed), resume="allow", dir=run_dir, mode=mode, config=config,
                     reinit="create_new")
    return WandbTracker(run)
