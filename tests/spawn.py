"""Shared by the multi-process tests: a free TCP port and a bounded wait for spawned gloo workers."""
import socket
import time

import pytest
import torch.multiprocessing as mp


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn_and_wait(fn, args, nprocs: int, timeout_s: float) -> None:
    """``mp.spawn(fn, args)`` that fails the test instead of hanging: a rank stuck in a collective would
    otherwise wait for gloo's 30-minute timeout."""
    ctx = mp.spawn(fn, args=args, nprocs=nprocs, join=False)
    deadline = time.monotonic() + timeout_s
    while not ctx.join(timeout=max(0.1, deadline - time.monotonic())):
        if time.monotonic() >= deadline:
            for p in ctx.processes:
                if p.is_alive():
                    p.terminate()
            pytest.fail(f"spawned workers did not finish within {timeout_s}s")
