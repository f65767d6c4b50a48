"""Checkpoints written on a background thread, so that saving costs the training loop one host copy.

At GPU speed an epoch of CIFAR takes seconds, and ``<model>_last.pth`` (with CRD's two memory banks, ~51 MB)
is written after every one: pickling and writing it in the loop would stall the device each epoch. The
writer copies the state to host memory (one device-to-host copy into pinned memory, one synchronisation),
then ``save_checkpoint`` (temporary file + rename) writes it on its one thread while training continues.
"""
from __future__ import annotations

import queue
import threading
from typing import Any, Callable, Dict, Optional, Sequence, Union

import torch

from .checkpoint import save_checkpoint


def host_copy(obj: Any) -> Any:
    """``obj`` with every tensor copied to host memory; training may change the originals right after.

    Device tensors go into pinned memory with non-blocking copies (the caller synchronises once); host tensors
    are cloned. Strides (channels-last weights) are kept, as torch.save would have stored them.
    """
    if isinstance(obj, torch.Tensor):
        t = obj.detach()
        if t.device.type == "cpu":
            return t.clone()
        out = torch.empty_like(t, device="cpu", pin_memory=t.device.type == "cuda")
        out.copy_(t, non_blocking=True)
        return out
    if isinstance(obj, dict):
        return type(obj)((k, host_copy(v)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(host_copy(v) for v in obj)
    return obj


def holds_cuda_tensor(obj: Any) -> bool:
    if isinstance(obj, torch.Tensor):
        return obj.device.type == "cuda"
    if isinstance(obj, dict):
        return any(holds_cuda_tensor(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return any(holds_cuda_tensor(v) for v in obj)
    return False


class CheckpointWriter:
    """One background thread that writes checkpoints in the order they were given.

    ``save`` returns once the state is in host memory. A second save of a path still being written waits for
    the first (at most one pending copy per file). ``close`` waits for every write;
    :func:`engine.fit.fit_runs` calls it at the end and on any exception or interrupt, so the files a run
    leaves are complete. After an error the remaining queued writes are skipped (the files on disk stay the
    previous, complete ones) and the next ``save`` or ``raise_error`` raises it.
    """

    def __init__(self):
        self.jobs: "queue.Queue" = queue.Queue()
        self.thread: Optional[threading.Thread] = None
        self.pending: Dict[str, threading.Event] = {}
        self.error: Optional[BaseException] = None
        self.written = 0  # files this writer completed

    def save(self, state: Dict[str, Any], paths: Union[str, Sequence[str]],
             then: Optional[Callable[[], None]] = None) -> None:
        """Queue ``state`` for ``paths`` (one host copy, written to each in order); ``then`` runs on the writer
        thread once the last file is in place."""
        paths = [paths] if isinstance(paths, str) else list(paths)
        self.raise_error()
        for path in paths:
            earlier = self.pending.get(path)
            if earlier is not None:
                earlier.wait()
                self.raise_error()
        host = host_copy(state)
        if holds_cuda_tensor(state):
            torch.cuda.synchronize()  # the non-blocking copies into pinned memory are complete
        done = threading.Event()
        self.pending = {p: e for p, e in self.pending.items() if not e.is_set()}
        self.pending.update((path, done) for path in paths)
        if self.thread is None:
            # not a daemon: should the interpreter exit before close(), it still finishes the file being written
            self.thread = threading.Thread(target=self.work, name="checkpoint-writer", daemon=False)
            self.thread.start()
        self.jobs.put((host, paths, then, done))

    def work(self) -> None:
        while True:
            job = self.jobs.get()
            if job is None:
                return
            state, paths, then, done = job
            try:
                for path in paths:
                    if self.error is None:
                        save_checkpoint(state, path)
                        self.written += 1
                if self.error is None and then is not None:
                    then()
            except BaseException as exc:  # noqa: BLE001 - handed to the training thread
                self.error = exc
            finally:
                done.set()

    def close(self) -> None:
        """Wait until every queued file is written (``raise_error`` then tells whether one failed); raises
        nothing itself, so that it can run while another exception propagates."""
        if self.thread is not None:
            self.jobs.put(None)
            self.thread.join()
            self.thread = None
        self.pending.clear()

    def raise_error(self) -> None:
        if self.error is not None:
            error, self.error = self.error, None
            raise error
