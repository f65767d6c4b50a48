"""Pieces the entry scripts share: run set-up and the end-of-run summary file."""
from __future__ import annotations

import json
import os
import pickle
import signal
import sys
import threading
import traceback
from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from .checkpoint import options_dict
from .distributed import barrier, current_env, destroy, init_distributed
from .logging import finite_or_null
from .util import set_seed


def setup_run(opt):
    """Join the process group when started by torchrun, seed every RNG and pick the device; returns the device."""
    check_save_dir(opt.save_dir)
    env, device = init_distributed(opt.device)
    set_seed(opt.seed)
    if device.type == "cuda":
        if device.index is not None:
            # --device cuda:N: make it the current device, whose RNG state the checkpoints hold
            torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True
        # TF32 tensor cores for float32 matmuls and convolutions (--tf32, docs/speed_and_scale.md)
        torch.backends.cuda.matmul.allow_tf32 = opt.tf32
        torch.backends.cudnn.allow_tf32 = opt.tf32
    return device


def check_save_dir(save_dir: str) -> None:
    """Refuse a ``--save_dir`` that is (or lies inside) a file before any folder or file of the run is made."""
    path = os.path.abspath(save_dir)
    while not os.path.exists(path):
        parent = os.path.dirname(path)
        if parent == path:
            return
        path = parent
    if os.path.isdir(path):
        return
    if path == os.path.abspath(save_dir):
        raise NotADirectoryError(f"--save_dir '{save_dir}' is a file, not a folder; give a folder (it is created "
                                 "if missing) or move the file")
    raise NotADirectoryError(f"--save_dir '{save_dir}' lies inside '{path}', which is a file, not a folder; "
                             "give another --save_dir")


def place_model(model: torch.nn.Module, device: torch.device, opt=None) -> torch.nn.Module:
    """Move ``model`` to the device, channels-last when --channels_last says so (default: on CUDA)."""
    model = model.to(device)
    flag = None if opt is None else opt.channels_last
    if (device.type == "cuda") if flag is None else flag:
        model = model.to(memory_format=torch.channels_last)
    return model


def is_main_process() -> bool:
    return current_env().is_main


def announce(text: str) -> None:
    """A console line, from process 0 only under torchrun."""
    if is_main_process():
        print(text, flush=True)


def describe_processes() -> str:
    env = current_env()
    return f" x {env.world_size} processes" if env.enabled else ""


def finish_processes() -> None:
    """Leave the process group (torchrun) once every process is done."""
    barrier()
    destroy()


def write_summary(run_dir: str, opt, facts: Optional[dict] = None, **values) -> str:
    """summary.json in strict JSON (a NaN is written as null, as in metrics.jsonl), replaced atomically;
    ``facts`` are saved with the options (see ``checkpoint.options_dict``)."""
    path = os.path.join(run_dir, "summary.json")
    os.makedirs(run_dir, exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(finite_or_null({"options": options_dict(opt, **(facts or {})), **values}), f, indent=2, allow_nan=False)
    os.replace(tmp, path)
    return path


DEBUG_FLAG = "--debug"
DEBUG_ENV = "KD_DEBUG"
EXIT_SIGINT = 130  # 128 + the signal number, as a shell reports a process ended by the signal
EXIT_SIGTERM = 143


@dataclass
class Progress:
    """Where the training loop is, for the line printed when a run is interrupted."""

    epoch: Optional[int] = None  # the epoch being trained, validated or saved; None outside the epoch loop


run_progress = Progress()


def record_epoch(epoch: Optional[int]) -> None:
    run_progress.epoch = epoch


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler's kill, ``kill PID``), raised like Ctrl-C so the same clean-up runs."""


def _raise_terminated(signum, frame):
    raise Terminated()


def debug_requested(argv: Sequence[str]) -> bool:
    return DEBUG_FLAG in argv or os.environ.get(DEBUG_ENV, "").strip() not in ("", "0")


def error_line(exc: BaseException) -> str:
    """``exc`` as the one line after ``error: ``; an OS error names its file and the system's reason."""
    if isinstance(exc, OSError) and exc.strerror and exc.filename is not None:
        reason = exc.strerror[:1].lower() + exc.strerror[1:]
        files = f"'{exc.filename}'" + (f" -> '{exc.filename2}'" if exc.filename2 is not None else "")
        text = f"{files}: {reason}"
    elif isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror  # OSError(errno, message): the message is the whole story
    else:
        text = str(exc)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    if len(lines) > 1:
        return f"{lines[0]} ({DEBUG_FLAG} shows the full message)"
    return lines[0]


def run_cli(main, argv: Optional[Sequence[str]] = None) -> None:
    """Entry-point wrapper: bad input, a missing or unreadable file or a full disk ends with one ``error:`` line,
    an interrupt (Ctrl-C, SIGTERM) with the epoch it stopped in. ``--debug`` or KD_DEBUG=1 adds the traceback.

    ``argv``: the command line to look for ``--debug`` in (default ``sys.argv``); ``main`` parses its own.
    """
    debug = debug_requested(sys.argv[1:] if argv is None else list(argv))
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if in_main_thread else None
    record_epoch(None)
    try:
        main()
    except KeyboardInterrupt as exc:
        if debug:
            traceback.print_exc()
        if is_main_process():
            epoch = run_progress.epoch
            where = "" if epoch is None else f" in epoch {epoch}; continue with --resume auto"
            print(f"interrupted{where}", file=sys.stderr, flush=True)
        sys.exit(EXIT_SIGTERM if isinstance(exc, Terminated) else EXIT_SIGINT)
    except (OSError, pickle.UnpicklingError, EOFError, ValueError) as exc:
        if debug:
            raise
        sys.exit(f"error: {error_line(exc)}")
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
