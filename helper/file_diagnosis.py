"""One-line explanations of files that fail to load as checkpoints, found by looking at their bytes.

PyTorch's own messages for these cases span many lines and (for anything its weights-only unpickler refuses)
advise ``weights_only=False``, which would run whatever code the file carries. Nothing here unpickles: the
pickle streams are only walked opcode by opcode with :mod:`pickletools`.
"""
from __future__ import annotations

import io
import os
import pickletools
import re
import zipfile
from typing import BinaryIO, List, Optional

ZIP_MAGIC = b"PK\x03\x04"
PICKLE_PROTO = 0x80
# A legacy (pre-1.6) torch.save file is several pickles in a row (magic number, protocol, system info, the
# object, storage keys) followed by raw storage bytes; the globals of interest are in the first few.
_LEGACY_PICKLES = 5

# Modules whose globals run code when a pickle calls them. A weights file only names torch and collections
# types, so a reference to one of these is an attack (or a mistake), never data.
CODE_MODULES = frozenset({
    "os", "posix", "nt", "subprocess", "sys", "shutil", "socket", "importlib",
    "runpy", "code", "codeop", "pty", "ctypes", "pickle", "_pickle", "marshal", "types", "operator",
    "functools", "webbrowser", "multiprocessing", "signal", "tempfile", "pathlib", "io", "_io", "asyncio",
})
_DATA_MODULES = ("torch", "collections")
# builtins that only build data (torch itself pickles sets and slices); every other builtin is a call to refuse
_DATA_BUILTINS = frozenset({"set", "frozenset", "slice", "bytearray", "bytes", "complex", "range", "int", "float",
                            "str", "bool", "list", "dict", "tuple"})

# torch names the global it blocked in its (otherwise misleading) message.
_TORCH_BLOCKED_GLOBAL = re.compile(r"unsupported GLOBAL ([\w.]+)")
_STRING_OPS = {"STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "BINUNICODE", "SHORT_BINUNICODE",
               "BINUNICODE8"}
_GET_OPS = {"GET", "BINGET", "LONG_BINGET"}
_PUT_OPS = {"PUT", "BINPUT", "LONG_BINPUT"}


class PickleTruncated(Exception):
    """The pickle stream ends before its STOP opcode."""


def pickle_globals(stream: BinaryIO) -> List[str]:
    """``module.name`` of every global one pickle in ``stream`` refers to, in order, without unpickling.

    Protocol 4 pushes module and name as strings (often memoised) before STACK_GLOBAL; the last two string
    values pushed are tracked, which is exact for what pickle.dump and torch.save write.
    """
    names: List[str] = []
    strings: List[str] = []
    memo = {}
    last_value: Optional[str] = None
    try:
        for op, arg, _pos in pickletools.genops(stream):
            if op.name in ("GLOBAL", "INST"):
                names.append(str(arg).replace(" ", "."))
                last_value = None
            elif op.name == "STACK_GLOBAL":
                if len(strings) >= 2:
                    names.append(f"{strings[-2]}.{strings[-1]}")
                last_value = None
            elif op.name in _STRING_OPS:
                last_value = arg.decode("latin-1") if isinstance(arg, bytes) else str(arg)
                strings.append(last_value)
            elif op.name in _GET_OPS:
                last_value = memo.get(arg)
                if last_value is not None:
                    strings.append(last_value)
            elif op.name in _PUT_OPS:
                memo[arg] = last_value
            elif op.name == "MEMOIZE":
                memo[len(memo)] = last_value
            else:
                last_value = None
    except ValueError as exc:
        # pickletools says "pickle exhausted before seeing STOP" (or fails to read an argument) at the end
        raise PickleTruncated(str(exc)) from None
    return names


def runs_code(name: str) -> bool:
    module, _, attr = name.rpartition(".")
    if module in ("builtins", "__builtin__"):
        return attr not in _DATA_BUILTINS
    return module.split(".")[0] in CODE_MODULES


def offending_global(names: List[str]) -> Optional[str]:
    """The first global that runs code, else the first that is not a torch/collections/builtins type, else None."""
    for name in names:
        if runs_code(name):
            return name
    for name in names:
        if name.split(".")[0] not in _DATA_MODULES + ("builtins", "__builtin__"):
            return name
    return None


def checkpoint_globals(path: str, head: bytes) -> List[str]:
    """Globals of the object pickle(s) of a torch.save file (zip or legacy format); PickleTruncated when cut."""
    if head.startswith(ZIP_MAGIC):
        with zipfile.ZipFile(path) as archive:
            member = next((n for n in archive.namelist() if n.endswith("data.pkl")), None)
            if member is None:
                return []
            return pickle_globals(io.BytesIO(archive.read(member)))
    names: List[str] = []
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        for _ in range(_LEGACY_PICKLES):
            if f.tell() >= size:
                break
            if f.read(1) != bytes([PICKLE_PROTO]):
                break  # the raw storage bytes after the pickles
            f.seek(-1, os.SEEK_CUR)
            names += pickle_globals(f)
    return names


def describe_start(head: bytes) -> str:
    """The first bytes as the user would recognise them, with a guess of what the file is."""
    text = head[:40].split(b"\n")[0].strip()
    if text and all(32 <= b < 127 for b in text):
        shown = "'" + text[:20].decode("ascii") + "'"
    else:
        shown = "bytes " + head[:8].hex(" ")
    low = head.lstrip().lower()
    if low.startswith(b"<"):
        guess = ": a web page?"
    elif low.startswith(b"version https://git-lfs"):
        guess = ": a Git LFS pointer; fetch the file itself with git lfs pull"
    elif low.startswith((b"{", b"[")):
        guess = ": a JSON file?"
    elif head.startswith(b"\x89HDF"):
        guess = ": an HDF5 file; give it an .h5 or .hdf5 name where .hdf5 weights are read"
    else:
        guess = ""
    return f"starts with {shown}{guess}"


def describe_not(path: str, what: str) -> str:
    """``path`` is not ``what`` (a PyTorch checkpoint, a readable HDF5 file): empty, or what its start says."""
    if os.path.getsize(path) == 0:
        return f"'{path}' is empty (0 bytes; an interrupted copy or download?)"
    with open(path, "rb") as f:
        head = f.read(64)
    return f"'{path}' is not {what} ({describe_start(head)})"


def describe_unloadable(path: str, exc: BaseException) -> str:
    """Why ``torch.load(path, weights_only=True)`` raised ``exc``, in one line naming ``path``."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(64)
    if size == 0 or (not head.startswith(ZIP_MAGIC) and head[0] != PICKLE_PROTO):
        return describe_not(path, "a PyTorch checkpoint")
    truncated = f"'{path}' is truncated ({size:,} bytes; an interrupted download or copy?)"
    if head.startswith(ZIP_MAGIC) and not zipfile.is_zipfile(path):
        return truncated  # the zip directory is at the end of the file
    blocked = _TORCH_BLOCKED_GLOBAL.search(str(exc))
    name = blocked.group(1) if blocked else None
    if name is None:
        try:
            name = offending_global(checkpoint_globals(path, head))
        except (PickleTruncated, zipfile.BadZipFile, EOFError):
            return truncated
    if name is not None:
        if runs_code(name):
            return f"refused: loading '{path}' would call {name}, which a weights file never does; nothing was run"
        return (f"'{path}' holds an object of type {name}, which a weights-only load does not build (nothing was run); "
                f"where it was made, save the weights as {{'model': model.state_dict()}} instead")
    if isinstance(exc, EOFError):
        return truncated
    return f"'{path}' is a damaged PyTorch checkpoint ({type(exc).__name__}); copy or download it again"
