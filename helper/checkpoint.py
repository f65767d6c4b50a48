"""RepDistiller-format checkpoints, written atomically and read without executing code."""
from __future__ import annotations

import dataclasses
import errno
import glob
import os
import re
import tempfile
import warnings
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.nn as nn

from .file_diagnosis import describe_unloadable


TEMPORARY_PREFIX = ".tmp_"
TEMPORARY_SUFFIX = ".pth"


def save_checkpoint(state: Dict[str, Any], path: str) -> str:
    """Write to a temporary file in the same folder, then rename: a crash never leaves half a file.

    The data reach the disk (fsync) before the rename and the rename reaches it after, so a power loss leaves
    either the old or the new checkpoint, not an empty file under the checkpoint's name.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TEMPORARY_PREFIX, suffix=TEMPORARY_SUFFIX, dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            raise OSError(errno.ENOSPC, f"could not write '{path}': no space left on device; the earlier "
                                        "checkpoints are intact; free space, then --resume auto") from None
        raise
    sync_folder(folder)
    return path


def sync_folder(folder: str) -> None:
    """fsync a folder so that a rename in it is durable; a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on a folder; the rename itself has happened
    finally:
        os.close(fd)


def remove_stale_temporaries(folder: str) -> List[str]:
    """Delete the partial ``.tmp_*.pth`` files a run killed while saving left in its folder; returns them."""
    removed = []
    for path in glob.glob(os.path.join(glob.escape(folder), TEMPORARY_PREFIX + "*" + TEMPORARY_SUFFIX)):
        try:
            os.remove(path)
            removed.append(path)
        except FileNotFoundError:
            pass
    return removed


def load_checkpoint(path: str, map_location="cpu") -> Any:
    if os.path.isdir(path):
        raise IsADirectoryError(f"'{path}' is a folder, not a checkpoint file")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint '{path}' does not exist")
    try:
        with warnings.catch_warnings():
            # said of any plain pickle (a legacy-format or foreign file) just before it fails or loads; noise
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - every failure gets a one-line reason from the file's bytes
        raise ValueError(describe_unloadable(path, exc)) from None


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


ARCH_HINT = "check --model/--model_t and the number of classes of the data set"
_KEY_CHARS = 60


def _short_key(key: str) -> str:
    return key if len(key) <= _KEY_CHARS else key[:_KEY_CHARS - 3] + "..."


def state_dict_mismatch(own: Dict[str, torch.Tensor], sd: Dict[str, Any]) -> Tuple[List[str], List[str], List[str]]:
    """The keys of ``own`` missing from ``sd``, those of ``sd`` that ``own`` lacks, and those of different shape."""
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    mis_shaped = [k for k in own if k in sd and getattr(sd[k], "shape", None) != own[k].shape]
    return missing, unexpected, mis_shaped


def load_weights(model: nn.Module, obj: Any, arch: str, source: str = "checkpoint",
                 hint: str = ARCH_HINT) -> nn.Module:
    """Strict load; a mismatch is one short line: the architecture, the counts and the first key of each kind."""
    sd = extract_state_dict(obj)
    own = model.state_dict()
    missing, unexpected, mis_shaped = state_dict_mismatch(own, sd)
    shape = [f"{_short_key(k)} {tuple(sd[k].shape)} in the file vs {tuple(own[k].shape)}" for k in mis_shaped]
    if missing or unexpected or shape:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys, first {_short_key(missing[0])}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys, first {_short_key(unexpected[0])}")
        if shape:
            parts.append(f"{len(shape)} shape mismatch{'es' if len(shape) > 1 else ''}, first {shape[0]}")
        raise ValueError(f"{source} does not fit architecture '{arch}' ({'; '.join(parts)}); {hint}")
    model.load_state_dict(sd, strict=True)
    return model


def options_dict(opt, **facts) -> Dict[str, Any]:
    """The options (a dataclass or a namespace) and ``facts`` of the run (the teacher's name, the number of
    processes) as plain values, so checkpoints stay loadable with weights_only=True."""
    values = {f.name: getattr(opt, f.name) for f in dataclasses.fields(opt)} if dataclasses.is_dataclass(opt) \
        else dict(vars(opt))
    out = {}
    for k, v in {**values, **facts}.items():
        if isinstance(v, (str, int, float, bool)) or v is None:
            out[k] = v
        elif isinstance(v, (list, tuple)) and all(isinstance(e, (str, int, float, bool)) for e in v):
            out[k] = list(v)
    return out


def rng_state() -> Dict[str, Any]:
    """The CPU generator's state and, on a CUDA machine, that of this process's current device only.

    Not every visible GPU's: a checkpoint must resume on a machine with fewer GPUs, and under torchrun each
    process draws on its own device. The processes' CUDA streams are equal by construction (same seed, same
    draws: CRD draws the global batch's negatives on every process), so the state process 0 writes is every
    process's.
    """
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state(torch.cuda.current_device())
    return state


def _current_device_state(saved) -> torch.Tensor:
    """The CUDA state to restore on the current device; older checkpoints hold a list, one per visible GPU."""
    if isinstance(saved, torch.Tensor):
        return saved.cpu()
    index = torch.cuda.current_device()
    return (saved[index] if index < len(saved) else saved[0]).cpu()


def restore_rng_state(state: Optional[Dict[str, Any]]) -> None:
    if not state:
        return
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(_current_device_state(state["cuda"]), torch.cuda.current_device())


_EPOCH_RE = re.compile(r"ckpt_epoch_(\d+)\.pth$")


def snapshot_paths(run_dir: str) -> List[Tuple[int, str]]:
    """``(epoch, path)`` of the periodic ``ckpt_epoch_N.pth`` files of a run folder, by epoch."""
    found = []
    for path in glob.glob(os.path.join(glob.escape(run_dir), "ckpt_epoch_*.pth")):
        m = _EPOCH_RE.search(os.path.basename(path))
        if m:
            found.append((int(m.group(1)), path))
    return sorted(found)


def peek_checkpoint(path: str) -> Any:
    """A checkpoint's contents with its tensors left on disk (memory-mapped): enough to read its epoch and key
    names without reading megabytes of weights and CRD banks. None when the file does not load this way."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - the caller loads it properly, and then says what is wrong with it
        return None


def latest_checkpoint(run_dir: str, model_name: str) -> Optional[str]:
    """The resumable checkpoint of ``run_dir`` furthest on (``<model>_last.pth`` or periodic): the highest epoch, and
    of equal epochs the one written furthest into the next (``epoch_samples``, --save_steps)."""
    best_path, best = None, (-1, -1)
    candidates = glob.glob(os.path.join(run_dir, "ckpt_epoch_*.pth"))
    last = os.path.join(run_dir, f"{model_name}_last.pth")
    if os.path.isfile(last):
        candidates.append(last)
    for path in candidates:
        state = peek_checkpoint(path)
        if not isinstance(state, dict) or "optimizer" not in state:
            continue
        where = (int(state.get("epoch", -1)), int(state.get("epoch_samples", 0)))
        if where > best:
            best_path, best = path, where
    return best_path
