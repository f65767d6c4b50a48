"""What a run folder holds and what a run may do to it: refuse to overwrite an earlier run, skip a finished one,
say what will be written and how large it gets, and thin out periodic checkpoints (``--keep_checkpoints last``).

The ``run`` arguments are :class:`engine.step.StudentRun` objects (their ``run_dir``, ``model_name``, ``label``,
``opt``, ``student`` and ``distiller``).
"""
from __future__ import annotations

import glob
import os
from typing import Dict, List, Optional

import torch

from .checkpoint import peek_checkpoint, snapshot_paths, state_dict_mismatch
from .distributed import current_env
from .logging import METRICS_FILE
from .run import announce


# key of a run's result: its checkpoint had reached --epochs before this invocation, which wrote nothing
ALREADY_FINISHED = "already_finished"


class RunFolderInUse(ValueError):
    """A run starting afresh in a folder that already holds a run (refused unless --overwrite)."""


def remove_periodic_checkpoints(run_dir: str, up_to_epoch: int) -> None:
    for epoch, path in snapshot_paths(run_dir):
        if epoch <= up_to_epoch:
            os.remove(path)


def say(text: str, quiet: bool) -> None:
    """A console line of the run set-up (process 0 only), unless the caller runs quietly."""
    if not quiet:
        announce(text)


def finished_result(path: str, epochs: int, model: Optional[torch.nn.Module] = None) -> Optional[Dict[str, float]]:
    """The result of a run whose checkpoint ``path`` already reached ``epochs``; None when epochs remain, when
    the file does not load, or when its weights do not fit ``model`` (prepare_run then says what is wrong: an
    explicit --resume of another architecture must not pass for a finished run)."""
    state = peek_checkpoint(path)
    if not isinstance(state, dict) or "optimizer" not in state or int(state["epoch"]) < epochs:
        return None
    if model is not None and not fits(state.get("model"), model):
        return None
    return {"epoch": int(state["epoch"]), "last_acc": float(state["accuracy"]),
            "best_acc": float(state["best_acc"]), ALREADY_FINISHED: True}


def fits(weights, model: torch.nn.Module) -> bool:
    """Whether ``weights`` has exactly ``model``'s state-dict names and shapes."""
    return isinstance(weights, dict) and not any(state_dict_mismatch(model.state_dict(), weights))


def holds_run(run_dir: str) -> bool:
    """A folder holds a run once it has a metrics row or any checkpoint (an empty metrics.jsonl, left by a run
    stopped before its first epoch, holds nothing to lose; nor does a hidden .tmp_*.pth of a killed save)."""
    if not os.path.isdir(run_dir):
        return False
    metrics = os.path.join(run_dir, METRICS_FILE)
    if os.path.isfile(metrics) and os.path.getsize(metrics) > 0:
        return True
    return any(name.endswith(".pth") and not name.startswith(".") for name in os.listdir(run_dir))


def remove_run_files(run) -> int:
    """Delete what a run of this toolkit writes into ``run.run_dir`` (other files stay); returns the count."""
    folder = glob.escape(run.run_dir)
    paths = (glob.glob(os.path.join(folder, "ckpt_epoch_*.pth"))
             + glob.glob(os.path.join(folder, "tensorboard", "events.out.tfevents.*"))
             + [os.path.join(run.run_dir, n) for n in (METRICS_FILE, "summary.json", f"{run.model_name}_best.pth",
                                                       f"{run.model_name}_last.pth")])
    removed = 0
    for path in paths:
        if os.path.isfile(path):
            os.remove(path)
            removed += 1
    return removed


def claim_run_folders(fresh: List, overwrite: bool, quiet: bool) -> None:
    """Runs starting from epoch 1 without --resume must not silently overwrite an earlier run in their folder:
    refused, or with --overwrite its files are removed first (a stale ckpt_epoch_N.pth of a longer earlier run
    would otherwise be what a later --resume auto picks)."""
    taken = [r for r in fresh if holds_run(r.run_dir)]
    if not taken:
        return
    if not overwrite:
        more = f" (and {len(taken) - 1} more run folders)" if len(taken) > 1 else ""
        raise RunFolderInUse(f"'{taken[0].run_dir}'{more} already holds a run; continue it with --resume auto, "
                             "start another with a new --trial, or start it afresh with --overwrite")
    if current_env().is_main:
        for run in taken:
            removed = remove_run_files(run)
            say(f"{run.label}--overwrite: removed {removed} files of the earlier run in {run.run_dir}", quiet)


def tensor_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def megabytes(n: int) -> str:
    return f"{n / 2 ** 20:.3g} MB"


def checkpoint_plan(run, opt) -> str:
    """What one run writes, with sizes estimated from its tensors (best: the weights; last and periodic: also
    the optimizer's momentum and the method's state, e.g. CRD's memory banks)."""
    weights = tensor_bytes(run.student.state_dict().values())
    trainable = [p for m in [run.student] + list(run.distiller.trainable_modules()) for p in m.parameters()
                 if p.requires_grad]
    momentum = tensor_bytes(trainable) if run.opt.momentum != 0 else 0
    full = weights + tensor_bytes(run.distiller.state_dict().values()) + momentum
    freq, keep_periodic = run.opt.save_freq, run.opt.keep_checkpoints == "all"
    periodic = opt.epochs // freq if freq > 0 and keep_periodic else 0
    text = (f"checkpoints: {run.model_name}_best.pth (~{megabytes(weights)}) when test top-1 improves, "
            f"{run.model_name}_last.pth (~{megabytes(full)}) every epoch")
    if periodic:
        every = "every epoch" if freq == 1 else f"every {freq} epochs"
        text += f", ckpt_epoch_N.pth (~{megabytes(full)} each) {every} ({periodic} file{'s' if periodic > 1 else ''})"
    elif not keep_periodic:
        text += ", no ckpt_epoch_N.pth (--keep_checkpoints last)"
    return text + f": at most ~{megabytes(weights + full * (1 + periodic))} per run"
