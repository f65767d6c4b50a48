"""Pieces the entry scripts share: run set-up and the end-of-run summary file."""
from __future__ import annotations

import json
import os

import torch

from .checkpoint import options_dict
from .util import select_device, set_seed


def setup_run(opt):
    """Seed every RNG and pick the device; returns the device."""
    set_seed(opt.seed)
    device = select_device(opt.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    return device


def place_model(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    model = model.to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    return model


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
