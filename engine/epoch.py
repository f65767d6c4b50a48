"""One training epoch of one or several students on the same batches, and its per-epoch numbers."""
from __future__ import annotations

from typing import Callable, Dict, List, Optional

import torch
import torch.nn as nn

from distiller_zoo.base import Distiller
from helper.distributed import all_reduce_sum, current_env
from helper.logging import progress
from helper.util import correct_topk

from .compile import uses_cuda_graphs
from .teacher import Teacher
from .step import StudentRun, StudentStep, begin_train_epoch, loss_weights, step_runs


# key of a training row (not logged): how many steps of the epoch had a non-finite loss
NONFINITE_STEPS = "nonfinite_steps"


class TrainingDiverged(ValueError):
    """The loss or the weights stopped being finite: the run stops before validating or saving that epoch.

    A ValueError, so that the entry scripts end with its one-line message and a non-zero exit status.
    """


def retry_hint(opt, distiller: Distiller, lr: float) -> str:
    """What to change after a non-finite loss (the loss weights and temperature exist for students only)."""
    hint = f"a lower --learning_rate (lr {lr:g} in this epoch)"
    if distiller.name != "ce":
        hint += (f", and check the loss weights -r/-a/-b (now {opt.gamma:g}/{opt.alpha:g}/{opt.beta:g}) and --kd_T "
                 f"(now {opt.kd_T:g})")
    return hint


class EpochMeter:
    """Sample-weighted sums of one epoch, kept on the device (one host sync per epoch)."""

    def __init__(self, device: torch.device):
        self.zero = torch.zeros((), device=device)
        self.sums = {"loss": self.zero.clone(), "top1": self.zero.clone(), "top5": self.zero.clone()}
        self.terms: Dict[str, torch.Tensor] = {}
        # steps whose loss was nan/inf, counted on the device and read with the epoch's sums (no extra sync)
        self.nonfinite = self.zero.clone()
        self.seen = 0

    def update(self, loss: torch.Tensor, terms: Dict[str, torch.Tensor], logits: torch.Tensor, y: torch.Tensor):
        bs = y.shape[0]
        self.seen += bs
        c1, c5 = correct_topk(logits.detach(), y, (1, 5))
        self.sums["loss"] += loss.detach().float() * bs
        self.sums["top1"] += c1
        self.sums["top5"] += c5
        self.nonfinite += (~torch.isfinite(loss.detach())).sum()
        for k, v in terms.items():
            self.terms[k] = self.terms.get(k, self.zero) + v.detach().float() * bs

    def flat(self):
        """The term names and one tensor of every sum: loss, top-1, top-5, the terms, non-finite steps, samples."""
        keys = list(self.terms)
        return keys, torch.stack([self.sums["loss"], self.sums["top1"].float(), self.sums["top5"].float()]
                                 + [self.terms[k] for k in keys]
                                 + [self.nonfinite.float(), torch.tensor(float(self.seen), device=self.zero.device)])

    def partial_sums(self) -> Dict[str, torch.Tensor]:
        """Every process's sums so far, added up (one collective): what a checkpoint within the epoch keeps, so
        that the resumed epoch reports the numbers of the whole epoch."""
        keys, flat = self.flat()
        return {"keys": keys, "values": all_reduce_sum(flat)}

    def restore(self, saved: Optional[Dict]) -> None:
        """Continue from :meth:`partial_sums` of a checkpoint (process 0 holds them, the others start at zero)."""
        if not saved or not current_env().is_main:
            return
        values = saved["values"].to(self.zero.device)
        self.sums = {"loss": values[0].clone(), "top1": values[1].clone(), "top5": values[2].clone()}
        self.terms = {k: values[3 + i].clone() for i, k in enumerate(saved["keys"])}
        self.nonfinite = values[-2].clone()
        self.seen = int(round(float(values[-1])))

    def result(self) -> Dict[str, float]:
        keys, flat = self.flat()
        flat = all_reduce_sum(flat)  # all processes' samples (identity in one process)
        values = flat.tolist()
        seen = values[-1]
        out = {"train_loss": values[0] / seen, "train_acc": values[1] * 100.0 / seen,
               "train_acc_top5": values[2] * 100.0 / seen, NONFINITE_STEPS: int(values[-2])}
        for k, v in zip(keys, values[3:-2]):
            out[f"loss_{k}"] = v / seen
        return out


def train_runs_one_epoch(epoch: int, data, runs: List[StudentRun], opt, device: torch.device,
                         teacher: Optional[nn.Module] = None, start: int = 0,
                         on_step: Optional[Callable[[int, int, List[EpochMeter]], None]] = None
                         ) -> List[Dict[str, float]]:
    """One pass over the shuffled training split for every run, on the same batches.

    The teacher runs once per batch, for all students; each student steps inside its own RNG stream.
    ``start``: the epoch's samples trained before a resume (the runs' ``epoch_meter`` holds their sums);
    ``on_step(step, samples, meters)`` is called after every step (``--save_steps`` checkpoints), with the step's
    number within the epoch and the epoch's samples trained so far.
    """
    env = current_env()
    teacher = Teacher.of(teacher)
    for r in runs:
        begin_train_epoch(r.student, r.distiller)
    if teacher is not None:
        # eval mode, or the BatchNorm mode of --teacher_bn (engine.teacher.Teacher)
        teacher.begin_epoch(epoch, opt.epochs)
    weights = [loss_weights(r.opt) for r in runs]
    meters = [EpochMeter(device) for _ in runs]
    mark_step = uses_cuda_graphs(opt, device)
    bar = progress(data.num_batches(opt.batch_size, world_size=env.world_size), f"epoch {epoch}")
    batches = data.train_batches(opt.batch_size, opt.data_seed, epoch, rank=env.rank, world_size=env.world_size,
                                 strong_view=any(r.distiller.strong_view for r in runs), start=start)
    step, samples = start // (opt.batch_size * env.world_size), start
    if start:
        for r, meter in zip(runs, meters):
            meter.restore(r.epoch_meter)
        if bar is not None:
            bar.update(step)
    for batch in batches:
        if mark_step:
            torch.compiler.cudagraph_mark_step_begin()
        batch, results = step_runs(batch, epoch, runs, weights, opt, device, teacher, env.world_size)
        for meter, result in zip(meters, results):
            if result is not None:
                meter.update(*result, batch.y)
        if bar is not None:
            # counts steps only: showing the running loss would read it to the host (a sync per update); the
            # epoch's console line reports it
            bar.update(1)
        if on_step is not None:
            step += 1
            samples += batch.y.shape[0] if batch.global_y is None else batch.global_y.shape[0]
            on_step(step, samples, meters)
    if bar is not None:
        bar.close()
    out = []
    for r, meter in zip(runs, meters):
        row = meter.result()
        row.update(r.distiller.epoch_metrics())
        out.append(row)
    return out


def train_one_epoch(epoch: int, data, student: nn.Module, distiller: Distiller, optimizer,
                    opt, device: torch.device, teacher: Optional[nn.Module] = None) -> Dict[str, float]:
    """One pass over the shuffled training split for one student. Sums stay on the device; one sync per epoch."""
    run = StudentRun(opt, student, distiller, optimizer=optimizer, step=StudentStep(student, distiller))
    return train_runs_one_epoch(epoch, data, [run], opt, device, teacher)[0]
