"""Pieces the entry scripts share: run set-up and the end-of-run summary file."""
from __future__ import annotations

import json
import os

import torch

from .checkpoint import options_dict
from .distributed import barrier, current_env, destroy, init_distributed
from .util import set_seed


def setup_run(opt):
    """Join the process group when started by torchrun, seed every RNG and pick the device; returns the device."""
    env, device = init_distributed(opt.device)
    opt.world_size = env.world_size
    set_seed(opt.seed)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    return device


def place_model(model: torch.nn.Module, device: torch.device, opt=None) -> torch.nn.Module:
    """Move ``model`` to the device, channels-last when --channels_last says so (default: on CUDA)."""
    model = model.to(device)
    flag = None if opt is None else getattr(opt, "channels_last", None)
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


def write_summary(run_dir: str, opt, **values) -> str:
    path = os.path.join(run_dir, "summary.json")
    os.makedirs(run_dir, exist_ok=True)
    with open(path, "w") as f:
        json.dump({"options": options_dict(opt), **values}, f, indent=2)
    return path


def run_cli(main) -> None:
    """Entry-point wrapper: a bad input (unknown model, missing file, ...) ends with its message, not a trace."""
    import sys
    try:
        main()
    except (ValueError, FileNotFoundError) as exc:
        sys.exit(f"error: {exc}")
