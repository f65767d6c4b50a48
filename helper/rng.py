"""RNG streams: several students trained side by side in one process (``--trials N``), each as if it ran alone."""
from __future__ import annotations

import contextlib
from typing import Any, Dict, Optional

from .checkpoint import restore_rng_state, rng_state


class RNGStream:
    """The global torch RNG of one trial, swapped in around everything that trial does.

    Methods draw from the global generator (CRD's negatives, dropout); with several students in one process
    their draws would interleave. Each trial keeps its own stream instead, captured when its student was built,
    so its draws are those of a run of its own. A stream created with ``state=None`` is the global RNG itself
    (the single-student case: nothing is swapped).
    """

    def __init__(self, state: Optional[Dict[str, Any]] = None):
        self.state = state

    @classmethod
    def capture(cls) -> "RNGStream":
        return cls(rng_state())

    @property
    def owns_state(self) -> bool:
        return self.state is not None

    @contextlib.contextmanager
    def active(self):
        if self.state is None:
            yield
            return
        outer = rng_state()
        restore_rng_state(self.state)
        try:
            yield
        finally:
            self.state = rng_state()
            restore_rng_state(outer)

    def snapshot(self) -> Dict[str, Any]:
        """The state to store in a checkpoint (the global one for a stream that is the global RNG)."""
        return rng_state() if self.state is None else self.state

    def restore(self, state: Optional[Dict[str, Any]]) -> None:
        if not state:
            return
        if self.state is None:
            restore_rng_state(state)
        else:
            self.state = state
