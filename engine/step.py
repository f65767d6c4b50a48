"""One optimisation step: the student's forward and the method's weighted loss, for one or several runs."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Dict, List, Optional

import torch
import torch.nn as nn

from distiller_zoo.base import Distiller
from helper.distributed import average_gradients
from helper.rng import RNGStream
from helper.types import Batch, BatchExpansion, Outputs

from .dot import DOT
from .forward import autocast_for, forward, prepare_input, teacher_outputs, use_channels_last


def loss_weights(opt) -> Dict[str, float]:
    return {"ce": float(opt.gamma), "kl": float(opt.alpha), "kd": float(opt.beta)}


class StudentStep(nn.Module):
    """The student's forward and the method's weighted loss as one module.

    Under torchrun this is what DistributedDataParallel wraps, so the gradients of the student and of the
    method's own modules (embeddings, regressors) are averaged together.
    """

    def __init__(self, student: nn.Module, distiller: Distiller):
        super().__init__()
        self.student = student
        self.distiller = distiller
        self.compiled: Any = None  # torch.compile of loss_and_logits (compile_step); None: eager
        self.epoch_seen: Optional[int] = None
        self.epoch_on_device: Optional[torch.Tensor] = None

    def forward(self, x: torch.Tensor, out_t: Optional[Outputs], batch: Batch, epoch: int,
                weights: Dict[str, float]):
        if self.compiled is None:
            return self.loss_and_logits(x, out_t, batch, epoch, weights)
        return self.compiled(x, out_t, batch, self.epoch_tensor(epoch, x.device), weights)

    def epoch_tensor(self, epoch: int, device: torch.device) -> torch.Tensor:
        """The epoch as a float32 device scalar for the compiled step: a Python int would be a constant of the
        graph, so a method that reads it (DKD's warm-up) would compile a new graph every epoch. Made once per
        epoch, so the step itself copies nothing from the host."""
        if self.epoch_seen != epoch:
            self.epoch_on_device = torch.tensor(float(epoch), device=device)
            self.epoch_seen = epoch
        return self.epoch_on_device

    def loss_and_logits(self, x: torch.Tensor, out_t: Optional[Outputs], batch: Batch, epoch,
                        weights: Dict[str, float]):
        d = self.distiller
        out_s = forward(self.student, x, d.student_features)
        if d.strong_view:
            # the strong view's own forward, after the weak one's, as MLKD's reference runs them
            out_s = replace(out_s, strong=forward(self.student, batch.x_strong, d.student_features))
        terms, logits = d.step_loss(out_s, out_t, batch, epoch)
        loss = sum(weights.get(k, 1.0) * v for k, v in terms.items())
        if d.batch_expansion is not None:
            logits = d.batch_expansion.originals(logits)
        return loss, terms, logits


def optimize(step: nn.Module, optimizer, x: torch.Tensor, out_t: Optional[Outputs], batch: Batch, epoch: int,
             weights: Dict[str, float], opt, device: torch.device, loss_scale: float = 1.0):
    """Forward through ``step``, backward, optimizer step. ``loss_scale`` re-weights an uneven shard (torchrun)."""
    if isinstance(optimizer, DOT):
        return optimize_dot(step, optimizer, x, out_t, batch, epoch, weights, opt, device, loss_scale)
    with autocast_for(opt, device):
        loss, terms, logits = step(x, out_t, batch, epoch, weights)
    optimizer.zero_grad(set_to_none=True)
    (loss if loss_scale == 1.0 else loss * loss_scale).backward()
    optimizer.step()
    return loss, terms, logits


def split_task_loss(terms: Dict[str, torch.Tensor], weights: Dict[str, float]):
    """``(task, distillation)`` of the weighted loss for DOT: ``gamma*ce``, and every other term (None if none)."""
    if "ce" not in terms:
        raise ValueError(f"--optimizer dot needs the method's cross-entropy term 'ce'; it returned "
                         f"{', '.join(terms) or 'no terms'}")
    task = weights.get("ce", 1.0) * terms["ce"]
    rest = [weights.get(k, 1.0) * v for k, v in terms.items() if k != "ce"]
    return task, (sum(rest) if rest else None)


def optimize_dot(step: nn.Module, optimizer: DOT, x: torch.Tensor, out_t: Optional[Outputs], batch: Batch,
                 epoch: int, weights: Dict[str, float], opt, device: torch.device, loss_scale: float = 1.0):
    """:func:`optimize` with DOT: the distillation and the task loss each get a backward of their own.

    Under torchrun the step is not wrapped in DDP (its static graph refuses a second backward on one forward,
    and ``no_sync`` with it); each backward's gradients are averaged here instead, over exactly the parameters
    the optimizer updates (a no-op in one process).
    """
    with autocast_for(opt, device):
        loss, terms, logits = step(x, out_t, batch, epoch, weights)
    task, distillation = split_task_loss(terms, weights)
    if loss_scale != 1.0:
        task = task * loss_scale
        distillation = None if distillation is None else distillation * loss_scale
    params = optimizer.param_groups[0]["params"]
    optimizer.zero_grad(set_to_none=True)
    if distillation is not None and distillation.requires_grad:
        distillation.backward(retain_graph=True)
        average_gradients(params)
        optimizer.record_kd_grads()
        optimizer.zero_grad(set_to_none=True)
    task.backward()
    average_gradients(params)
    optimizer.step()
    return loss, terms, logits


def shard_loss_scale(batch: Batch, world_size: int) -> float:
    """DDP averages the K processes' gradients; a shard of n_k of the global n samples must count n_k*K/n."""
    if batch.shard is None or world_size == 1:
        return 1.0
    return batch.y.shape[0] * world_size / batch.global_y.shape[0]


def begin_train_epoch(student: nn.Module, distiller: Distiller) -> None:
    """Train mode for one training epoch of a student and its method's modules (the teacher: its
    ``begin_epoch``)."""
    student.train()
    distiller.train()


@dataclass
class StudentRun:
    """One student being trained: its options, networks, optimizer, run folder, RNG stream and progress."""

    opt: Any
    student: nn.Module
    distiller: Distiller
    run_dir: str = ""
    model_name: str = ""
    rng: RNGStream = field(default_factory=RNGStream)
    label: str = ""  # console prefix when several students train side by side
    optimizer: Any = None
    step: Optional[nn.Module] = None
    logger: Any = None
    own_logger: bool = True
    start_epoch: int = 1
    best_acc: float = 0.0
    base_lr: float = 0.0
    facts: Dict[str, Any] = field(default_factory=dict)  # saved next to the options (teacher name, world size)
    teacher_state: Optional[Dict[str, torch.Tensor]] = None  # a stateful teacher's state from the resumed checkpoint
    # a checkpoint written within an epoch (--save_steps): the samples of epoch start_epoch already trained, and the
    # epoch's sums over them (engine.epoch.EpochMeter.partial_sums)
    start_samples: int = 0
    epoch_meter: Optional[Dict[str, Any]] = None
    finished: bool = False  # its checkpoint had already reached --epochs: skipped, nothing in its folder written
    result: Dict[str, float] = field(default_factory=dict)


def train_step(batch: Batch, epoch: int, student: nn.Module, distiller: Distiller, optimizer, opt,
               device: torch.device, weights: Dict[str, float], teacher: Optional[nn.Module] = None,
               step: Optional[nn.Module] = None):
    """One optimisation step on ``batch``: forward(s), weighted loss, backward, optimizer step.

    Returns ``(batch, out_s, terms, loss)``; ``batch`` carries the input as the networks saw it and ``out_s``
    the student's logits. The training loop runs the same code (:func:`step_runs`).
    """
    run = StudentRun(opt, student, distiller, optimizer=optimizer,
                     step=step if step is not None else StudentStep(student, distiller))
    batch, [(loss, terms, logits)] = step_runs(batch, epoch, [run], [weights], opt, device, teacher)
    return batch, Outputs(logits=logits), terms, loss


def step_runs(batch: Batch, epoch: int, runs: List["StudentRun"], weights: List[Dict[str, float]], opt,
              device: torch.device, teacher: Optional[nn.Module] = None, world_size: int = 1):
    """One batch for every run: one teacher forward per input the runs read, each student's step in its own RNG
    stream.

    Returns the batch as the networks saw it and one ``(loss, terms, logits)`` per run, None for a run whose
    method trains on full batches only and skipped this smaller one. The inputs: the batch, a method's
    ``batch_expansion`` of it (both networks run on the expanded rows) and the batch's strong view (``strong_view``,
    read next to the batch). Each run steps right after the teacher's forward of its last input, so that a method
    hooking a teacher module (ICKD's and CAT-KD's taps) reads the forward of its own input.
    """
    channels_last = use_channels_last(opt, device)
    x = prepare_input(batch.x, channels_last)
    strong = None if batch.x_strong is None else prepare_input(batch.x_strong, channels_last)
    batch = replace(batch, x=x, x_strong=strong)
    scale = shard_loss_scale(batch, world_size)
    # the global batch's rows, the same number in every process (so all skip a step alike)
    n_rows = batch.y.shape[0] if batch.global_y is None else batch.global_y.shape[0]
    groups: Dict[Optional[BatchExpansion], List[int]] = {}
    for i, r in enumerate(runs):
        groups.setdefault(r.distiller.batch_expansion, []).append(i)
    results: List[Any] = [None] * len(runs)

    def step(i: int, rows: torch.Tensor, own_t: Optional[Outputs]) -> None:
        r = runs[i]
        if r.distiller.full_batches_only and n_rows < r.opt.batch_size * world_size:
            return  # a method sized by the batch (SemCKD) skips the last, smaller one: its result stays None
        with r.rng.active():
            results[i] = optimize(r.step, r.optimizer, rows, own_t, batch, epoch, weights[i], r.opt, device, scale)

    for expansion, members in groups.items():
        rows = x if expansion is None else prepare_input(expansion.expand(x), channels_last)
        out_t = {}
        if teacher is not None:
            # every need of the group's runs, from one teacher forward
            with autocast_for(opt, device):
                out_t = teacher_outputs(teacher, rows, {runs[i].distiller.teacher_features for i in members})
        # the runs that read these rows alone step before the teacher's forward of the strong view, so that a
        # method hooking a teacher module reads the forward of its own input
        for i in members:
            if not runs[i].distiller.strong_view:
                step(i, rows, out_t.get(runs[i].distiller.teacher_features))
        kinds_strong = {runs[i].distiller.teacher_features for i in members if runs[i].distiller.strong_view}
        if not kinds_strong:
            continue
        out_t_strong = {}
        if teacher is not None:
            with autocast_for(opt, device):
                out_t_strong = teacher_outputs(teacher, strong, kinds_strong)
        for i in members:
            if runs[i].distiller.strong_view:
                kind = runs[i].distiller.teacher_features
                own_t = out_t.get(kind)
                if own_t is not None:
                    own_t = replace(own_t, strong=out_t_strong[kind])
                step(i, rows, own_t)
    return batch, results
