"""``--compile``: torch.compile of the networks and of the training step, and dynamo's graph budget."""
from __future__ import annotations

from typing import Any, Dict, Optional

import torch
import torch.nn as nn

from helper.distributed import current_env

from .step import StudentStep


def compile_mode(opt, device: torch.device) -> Optional[str]:
    """The torch.compile mode of ``--compile``, None without it."""
    if not opt.compile:
        return None
    mode = opt.compile_mode or "auto"
    if mode == "auto":
        # CUDA graphs need static shapes (a fixed batch size: yes) and no collectives inside the graph
        return "reduce-overhead" if device.type == "cuda" and not current_env().enabled else "default"
    return mode


def uses_cuda_graphs(opt, device: torch.device) -> bool:
    return device.type == "cuda" and compile_mode(opt, device) in ("reduce-overhead", "max-autotune")


# torch.compile's backend. Tests of what dynamo captures set "aot_eager": the same graphs and autograd, without
# inductor's code generation, which takes minutes per graph on a small CPU.
COMPILE_BACKEND = "inductor"


def compile_kwargs(mode: str) -> Dict[str, Any]:
    # dynamic=False: one static graph per input shape, the last smaller batch of an epoch included
    return {"mode": mode, "dynamic": False} if COMPILE_BACKEND == "inductor" else \
        {"backend": COMPILE_BACKEND, "dynamic": False}


# Graphs one compiled network or step can need: train and eval mode x its forward variants (logits only,
# is_feat, is_feat with preact) x batch shapes (the full batch and the last, smaller one of an epoch).
GRAPHS_PER_COMPILED_INSTANCE = 2 * 3 * 2


compiled_instances = 0  # compiled in this process so far (search.py and the scripts fit one run after another)


def reserve_compiled_graphs(instances: int) -> int:
    """Raise dynamo's graph limits to what ``instances`` more compiled networks/steps need; returns the limit.

    Dynamo keeps its graphs per code object, and every instance of one class (a teacher and its students are
    all ResNets, the trials' steps are all StudentSteps) shares its forward's code object; beyond
    ``recompile_limit`` (8 by default) it stops compiling and runs that code eagerly for the rest of the
    process. The instances of earlier runs keep their entries, so the count is cumulative.
    """
    global compiled_instances
    compiled_instances += instances
    config = torch._dynamo.config
    need = GRAPHS_PER_COMPILED_INSTANCE * compiled_instances
    config.recompile_limit = max(config.recompile_limit, need)
    config.accumulated_recompile_limit = max(config.accumulated_recompile_limit, need)
    return config.recompile_limit


def compile_network(model: nn.Module, opt, device: torch.device) -> None:
    """Compile ``model`` in place (its state-dict keys stay the same). dynamic=False: one static graph per input
    shape, so the last, smaller batch of an epoch gets its own graph once and both are reused every epoch."""
    mode = compile_mode(opt, device)
    if mode is not None:
        reserve_compiled_graphs(1)
        model.compile(**compile_kwargs(mode))


def compile_step(step: StudentStep, opt, device: torch.device) -> None:
    """Compile the student's forward and the method's loss as one graph per batch shape.

    Compiling the networks alone left the loss (a few hundred small ops for CRD, AT, ICKD) and the glue
    between them eager, one kernel launch each. Under torchrun the step stays eager around the compiled
    networks: DDP's hooks and the CPU cross-process BatchNorm communicate inside the forward.
    """
    mode = compile_mode(opt, device)
    if mode is not None and not current_env().enabled:
        reserve_compiled_graphs(1)
        step.compiled = torch.compile(step.loss_and_logits, **compile_kwargs(mode))
