"""Scoring a network on an evaluation split (top-1, top-5, cross-entropy; every exit of a multi-exit model)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from helper.distributed import all_reduce_sum, current_env
from helper.multihead import evaluate_exits, is_multi_exit
from helper.util import correct_topk

from .compile import uses_cuda_graphs
from .forward import autocast_for, prepare_input, use_channels_last


@dataclass(frozen=True)
class EvalSettings:
    """The options evaluation reads (a training run passes its own options, which have them all; validation.py,
    which has no training options, passes these)."""

    test_batch_size: int = 256
    channels_last: Optional[bool] = None
    amp: bool = False
    compile: bool = False
    compile_mode: str = "auto"


@torch.no_grad()
def validate(model: nn.Module, split, opt, device: torch.device) -> Dict[str, float]:
    """Top-1, top-5 (percent) and mean cross-entropy on an evaluation split.

    Multi-exit models (``exit_logits``) are scored by their deepest exit, plus ``acc_c1..`` per exit and
    ``acc_ensemble``. Under torchrun each process scores its part of the split and the sums are added up.
    """
    channels_last = use_channels_last(opt, device)
    # A CUDA-graph replay writes its outputs into the same memory every call: copy them out (float32 too,
    # where .float() would return the graph's own tensor) so that no result is overwritten by the next batch.
    copy_outputs = uses_cuda_graphs(opt, device)
    if is_multi_exit(model):
        return evaluate_exits(model, split, opt, device, autocast_for(opt, device),
                              lambda x, _device: prepare_input(x, channels_last), copy_outputs=copy_outputs)
    env = current_env()
    model.eval()
    sums = torch.zeros(3, device=device)  # cross-entropy, top-1 hits, top-5 hits
    for batch in split.eval_batches(opt.test_batch_size, rank=env.rank,
                                    world_size=env.world_size):
        if copy_outputs:
            torch.compiler.cudagraph_mark_step_begin()  # a new inference step: the graph may reuse its memory
        with autocast_for(opt, device):
            logits = model(prepare_input(batch.x, channels_last))
        logits = logits.to(torch.float32, copy=copy_outputs)
        c1, c5 = correct_topk(logits, batch.y, (1, 5))
        sums += torch.stack([F.cross_entropy(logits, batch.y, reduction="sum"), c1.float(), c5.float()])
    sums = all_reduce_sum(sums)
    n = len(split)
    return {"acc": (sums[1] * 100.0 / n).item(), "acc_top5": (sums[2] * 100.0 / n).item(),
            "loss": (sums[0] / n).item()}
