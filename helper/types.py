"""The values the layers pass each other: a training batch, how a method expands it, and what one network forward
produced."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, List, Optional, Tuple

import torch

from .util import at_least_float32


@dataclass
class Batch:
    """One training batch: images, labels and their indices in the training set.

    Under torchrun each process holds rows ``shard = (start, stop)`` of a global batch whose indices and
    labels are ``global_index``/``global_y``; methods that draw per-sample randomness (CRD's negatives) draw
    it for the global batch and keep their rows, so that K processes compute what one process would.
    """

    x: torch.Tensor
    y: torch.Tensor
    index: torch.Tensor
    global_index: Optional[torch.Tensor] = None
    global_y: Optional[torch.Tensor] = None
    shard: Optional[Tuple[int, int]] = None
    # CRD's negatives for this batch when they were drawn outside the method (tests, benchmarks); None: the
    # method draws them
    contrast_idx: Optional[torch.Tensor] = None
    # a second, strongly augmented view of the same images (MLKD), normalised like x; None unless a method of the
    # run asks for it (Distiller.strong_view)
    x_strong: Optional[torch.Tensor] = None


@dataclass
class Outputs:
    """What one model forward produced for a method. ``feats`` is the feature list the method asked for
    (post- or pre-activation, RepDistiller's layout with the pooled vector last); None when it reads none."""

    logits: torch.Tensor
    feats: Optional[List[torch.Tensor]] = None
    # the same network's outputs on the batch's strong view (Batch.x_strong), for a method that reads both views
    strong: Optional["Outputs"] = None


def float32_outputs(out: Optional[Outputs]) -> Optional[Outputs]:
    """``out`` with logits and features in float32 at least; float32 (and float64) tensors are passed through
    as the same objects, so the float32 path is unchanged."""
    if out is None:
        return None
    feats = None if out.feats is None else [at_least_float32(f) for f in out.feats]
    return replace(out, logits=at_least_float32(out.logits), feats=feats, strong=float32_outputs(out.strong))


@dataclass(frozen=True)
class BatchExpansion:
    """How a method has both networks see every training batch (``Distiller.batch_expansion``).

    ``expand(x)`` gives the rows the student and the teacher run on instead of ``x`` (SSKD: each image's four
    rotations); ``originals(t)`` picks from an output of the expanded rows those of the batch's own images, in
    the batch's order (the logits the training accuracy counts). ``name`` says what it is in messages.
    """

    name: str
    expand: Callable[[torch.Tensor], torch.Tensor]
    originals: Callable[[torch.Tensor], torch.Tensor]
