"""RepDistiller-format checkpoints, written atomically and read without executing code."""
from __future__ import annotations

import glob
import os
import re
import tempfile
from typing import Any, Dict, Optional

import torch
import torch.nn as nn


def save_checkpoint(state: Dict[str, Any], path: str) -> str:
    """Write to a temporary file in the same folder, then rename: a crash never leaves half a file."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp_", suffix=".pth", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def load_checkpoint(path: str, map_location="cpu") -> Any:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint '{path}' does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise ValueError(f"'{path}' is not a loadable weights-only checkpoint: {exc}") from None


def extract_state_dict(obj: Any) -> Dict[str, torch.Tensor]:
    """Accept {'model': sd}, {'state_dict': sd} or a plain state dict; strip DataParallel's 'module.'."""
    if isinstance(obj, dict):
        for key in ("model", "state_dict"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError("checkpoint holds no state dict (expected a 'model' or 'state_dict' entry)")
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in obj.items()}


def load_weights(model: nn.Module, obj: Any, arch: str, source: str = "checkpoint") -> nn.Module:
    """Strict load with a message naming the architecture and the first mismatching keys."""
    sd = extract_state_dict(obj)
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shape = [f"{k} {tuple(sd[k].shape)} vs {tuple(own[k].shape)}" for k in own
             if k in sd and sd[k].shape != own[k].shape]
    if missing or unexpected or shape:
        parts = []
        if missing:
            parts.append(f"missing keys: {', '.join(missing[:5])}")
        if unexpected:
            parts.append(f"unexpected keys: {', '.join(unexpected[:5])}")
        if shape:
            parts.append(f"shape mismatch: {'; '.join(shape[:5])}")
        raise ValueError(f"{source} does not fit architecture '{arch}' ({len(missing)} missing, "
                         f"{len(unexpected)} unexpected, {len(shape)} mis-shaped): " + " | ".join(parts)
                         + ". Check --model/--model_t and the number of classes of the data set.")
    model.load_state_dict(sd, strict=True)
    return model


def options_dict(opt) -> Dict[str, Any]:
    """The parsed options as plain values, so checkpoints stay loadable with weights_only=True."""
    out = {}
    for k, v in vars(opt).items():
        if isinstance(v, (str, int, float, bool)) or v is None:
            out[k] = v
        elif isinstance(v, (list, tuple)) and all(isinstance(e, (str, int, float, bool)) for e in v):
            out[k] = list(v)
    return out


def rng_state() -> Dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Optional[Dict[str, Any]]) -> None:
    if not state:
        return
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


_EPOCH_RE = re.compile(r"ckpt_epoch_(\d+)\.pth$")


def latest_checkpoint(run_dir: str, model_name: str) -> Optional[str]:
    """The resumable checkpoint of ``run_dir`` with the highest epoch (``<model>_last.pth`` or periodic)."""
    best_path, best_epoch = None, -1
    candidates = glob.glob(os.path.join(run_dir, "ckpt_epoch_*.pth"))
    last = os.path.join(run_dir, f"{model_name}_last.pth")
    if os.path.isfile(last):
        candidates.append(last)
    for path in candidates:
        try:
            state = load_checkpoint(path)
        except ValueError:
            continue
        if isinstance(state, dict) and "optimizer" in state and int(state.get("epoch", -1)) > best_epoch:
            best_path, best_epoch = path, int(state["epoch"])
    return best_path
