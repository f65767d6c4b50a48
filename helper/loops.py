"""The shared train/validate/fit loops. They call a Distiller; they never name a method."""
from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import dataclass, field, replace
from typing import Any, Dict, List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from distiller_zoo.base import Batch, Distiller, Outputs

from .checkpoint import latest_checkpoint, load_checkpoint, load_weights, options_dict, remove_stale_temporaries
from .distributed import (all_reduce_sum, average_gradients, barrier, broadcast_buffers, convert_sync_batchnorm,
                          current_env, scaled_learning_rate, wrap_ddp)
from .checkpoint_writer import CheckpointWriter
from .logging import NullLogger, RunLogger, progress
from .multihead import evaluate_exits, is_multi_exit
from .run import record_epoch
from .run_folder import checkpoint_plan, claim_run_folders, finished_result, remove_periodic_checkpoints, say
from .trials import RNGStream
from .util import adjust_learning_rate, correct_topk, parse_epochs


def use_channels_last(opt, device: torch.device) -> bool:
    flag = getattr(opt, "channels_last", None)
    return device.type == "cuda" if flag is None else bool(flag)


def autocast_for(opt, device: torch.device):
    if getattr(opt, "amp", False):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def prepare_input(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def data_seed(opt) -> int:
    seed = getattr(opt, "data_seed", None)
    return opt.seed if seed is None else seed


def forward(model: nn.Module, x: torch.Tensor, feats: bool, preact: bool = False) -> Outputs:
    if feats:
        f, logits = model(x, is_feat=True, preact=preact)
        return Outputs(logits=logits, feats=list(f))
    return Outputs(logits=model(x))


def teacher_outputs(teacher: nn.Module, x: torch.Tensor, feats: bool, preact: bool = False) -> Outputs:
    """The frozen teacher's forward under inference_mode (no autograd bookkeeping at all).

    The results are copied out of inference mode: the method losses save them for their backward, which
    inference tensors do not allow. The copies are a few logits and feature maps, not the activations.
    """
    with torch.inference_mode():
        out = forward(teacher, x, feats, preact)
    return Outputs(logits=out.logits.clone(), feats=None if out.feats is None else [f.clone() for f in out.feats])


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
        out_s = forward(self.student, x, d.needs_feats, d.needs_preact)
        terms = d.float32_loss(out_s, out_t, batch, epoch)
        loss = sum(weights.get(k, 1.0) * v for k, v in terms.items())
        return loss, terms, out_s.logits


def optimize(step: nn.Module, optimizer, x: torch.Tensor, out_t: Optional[Outputs], batch: Batch, epoch: int,
             weights: Dict[str, float], opt, device: torch.device, loss_scale: float = 1.0):
    """Forward through ``step``, backward, optimizer step. ``loss_scale`` re-weights an uneven shard (torchrun)."""
    with autocast_for(opt, device):
        loss, terms, logits = step(x, out_t, batch, epoch, weights)
    optimizer.zero_grad(set_to_none=True)
    (loss if loss_scale == 1.0 else loss * loss_scale).backward()
    optimizer.step()
    return loss, terms, logits


def shard_loss_scale(batch: Batch, world_size: int) -> float:
    """DDP averages the K processes' gradients; a shard of n_k of the global n samples must count n_k*K/n."""
    if batch.shard is None or world_size == 1:
        return 1.0
    return batch.y.shape[0] * world_size / batch.global_y.shape[0]


def begin_train_epoch(epoch: int, student: nn.Module, distiller: Distiller, opt,
                      teacher: Optional[nn.Module] = None) -> None:
    """Train/eval modes for one training epoch (the student and distiller train, the teacher is frozen)."""
    student.train()
    distiller.train()
    if teacher is not None:
        begin_teacher_epoch(teacher, epoch, opt)


def begin_teacher_epoch(teacher: nn.Module, epoch: int, opt) -> None:
    teacher.eval()
    # a teacher wrapper may run (part of) itself in train mode while distilling (CheckpointKD's --teacher_bn)
    begin = getattr(teacher, "begin_epoch", None)
    if begin is not None:
        begin(epoch, opt.epochs)


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
    """One batch for every run: the teacher's forward once, then each student's step in its own RNG stream.

    Returns the batch as the networks saw it and one ``(loss, terms, logits)`` per run.
    """
    x = prepare_input(batch.x, use_channels_last(opt, device))
    batch = replace(batch, x=x)
    out_t = {}
    if teacher is not None:
        feats = any(r.distiller.needs_feats for r in runs)
        with autocast_for(opt, device):
            for preact in sorted({bool(r.distiller.needs_preact) for r in runs}):
                out_t[preact] = teacher_outputs(teacher, x, feats, preact)
    scale = shard_loss_scale(batch, world_size)
    results = []
    for r, w in zip(runs, weights):
        with r.rng.active():
            results.append(optimize(r.step, r.optimizer, x, out_t.get(bool(r.distiller.needs_preact)), batch, epoch,
                                    w, r.opt, device, scale))
    return batch, results


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

    def result(self) -> Dict[str, float]:
        keys = list(self.terms)
        flat = torch.stack([self.sums["loss"], self.sums["top1"].float(), self.sums["top5"].float()]
                           + [self.terms[k] for k in keys]
                           + [self.nonfinite.float(), torch.tensor(float(self.seen), device=self.zero.device)])
        flat = all_reduce_sum(flat)  # all processes' samples (identity in one process)
        values = flat.tolist()
        seen = values[-1]
        out = {"train_loss": values[0] / seen, "train_acc": values[1] * 100.0 / seen,
               "train_acc_top5": values[2] * 100.0 / seen, NONFINITE_STEPS: int(values[-2])}
        for k, v in zip(keys, values[3:-2]):
            out[f"loss_{k}"] = v / seen
        return out


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
    teacher_state: Optional[Dict[str, torch.Tensor]] = None  # a stateful teacher's state from the resumed checkpoint
    finished: bool = False  # its checkpoint had already reached --epochs: skipped, nothing in its folder written
    result: Dict[str, float] = field(default_factory=dict)


def train_runs_one_epoch(epoch: int, data, runs: List[StudentRun], opt, device: torch.device,
                         teacher: Optional[nn.Module] = None) -> List[Dict[str, float]]:
    """One pass over the shuffled training split for every run, on the same batches.

    The teacher runs once per batch, for all students; each student steps inside its own RNG stream.
    """
    env = current_env()
    for r in runs:
        begin_train_epoch(epoch, r.student, r.distiller, r.opt)
    if teacher is not None:
        begin_teacher_epoch(teacher, epoch, opt)
    weights = [loss_weights(r.opt) for r in runs]
    meters = [EpochMeter(device) for _ in runs]
    mark_step = uses_cuda_graphs(opt, device)
    bar = progress(data.num_batches(opt.batch_size, world_size=env.world_size), f"epoch {epoch}")
    batches = data.train_batches(opt.batch_size, data_seed(opt), epoch, rank=env.rank, world_size=env.world_size)
    for batch in batches:
        if mark_step:
            torch.compiler.cudagraph_mark_step_begin()
        batch, results = step_runs(batch, epoch, runs, weights, opt, device, teacher, env.world_size)
        for meter, (loss, terms, logits) in zip(meters, results):
            meter.update(loss, terms, logits, batch.y)
        if bar is not None:
            # counts steps only: showing the running loss would read it to the host (a sync per update); the
            # epoch's console line reports it
            bar.update(1)
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
    for batch in split.eval_batches(getattr(opt, "test_batch_size", 256), rank=env.rank,
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


def run_init_stage(opt, data, student, teacher, distiller: Distiller, device, logger) -> None:
    """RepDistiller's pre-training stage for two-stage methods (AB, FT, FSP).

    As upstream: the student stays in eval mode except the modules being trained, the teacher is
    frozen, and a separate SGD optimizer with the method's init lr runs for ``--init_epochs``.
    """
    modules = distiller.init_modules(student)
    if not modules or opt.init_epochs <= 0:
        return
    env = current_env()
    init_list = nn.ModuleList(modules)
    lr = distiller.init_lr(opt)
    method = f"[{distiller.name}] "
    if opt.init_epochs > opt.epochs:
        logger.print(f"{method}note: the init stage runs --init_epochs {opt.init_epochs} epochs (RepDistiller's 30) "
                     f"before the {opt.epochs} training epoch(s); give a smaller --init_epochs for a short run")
    optimizer = torch.optim.SGD(init_list.parameters(), lr=lr, momentum=opt.momentum,
                                weight_decay=opt.weight_decay)
    channels_last = use_channels_last(opt, device)
    for epoch in range(1, opt.init_epochs + 1):
        student.eval()
        teacher.eval()
        init_list.train()
        loss_sum = torch.zeros((), device=device)
        seen = 0  # this process's samples, counted on the host: a device tensor per step would be a copy per step
        t0 = time.time()
        for batch in data.train.train_batches(opt.batch_size, data_seed(opt), -epoch, rank=env.rank,
                                              world_size=env.world_size):
            x = prepare_input(batch.x, channels_last)
            batch = replace(batch, x=x)
            with autocast_for(opt, device):
                out_s = forward(student, x, True, distiller.needs_preact)
                out_t = teacher_outputs(teacher, x, True, distiller.needs_preact)
                loss = distiller.float32_init_loss(out_s, out_t, batch)
            optimizer.zero_grad(set_to_none=True)
            scale = shard_loss_scale(batch, env.world_size)
            (loss if scale == 1.0 else loss * scale).backward()
            average_gradients(init_list.parameters())
            optimizer.step()
            loss_sum += loss.detach().float() * batch.y.shape[0]
            seen += batch.y.shape[0]
        total = torch.stack([loss_sum, torch.tensor(float(seen), device=device)])
        total_loss, seen = all_reduce_sum(total).tolist()
        # a nan or inf loss of any step makes the epoch's sum non-finite, so the sum read here tells it
        if not math.isfinite(total_loss):
            raise TrainingDiverged(f"{method}init epoch {epoch}/{opt.init_epochs}: non-finite init-stage loss; "
                                   f"stopped before training, nothing saved; try {retry_hint(opt, distiller, lr)}")
        row = {"stage": "init", "epoch": epoch, "init_train_loss": total_loss / seen, "lr": lr}
        logger.log(row, prefix="init/")
        logger.print(f"{method}init epoch {epoch}/{opt.init_epochs}  loss {row['init_train_loss']:.4f}  "
                     f"({time.time() - t0:.1f}s)")


def build_optimizer(student: nn.Module, distiller: Distiller, opt, device: torch.device):
    """RepDistiller's SGD over the student and the method's modules; one fused kernel per step on CUDA."""
    trainable = nn.ModuleList([student] + list(distiller.trainable_modules()))
    extra = {"fused": True} if device.type == "cuda" else {}
    return torch.optim.SGD(trainable.parameters(), lr=opt.learning_rate, momentum=opt.momentum,
                           weight_decay=opt.weight_decay, nesterov=bool(getattr(opt, "nesterov", False)), **extra)


def load_optimizer_state(optimizer, state: Dict[str, Any]) -> None:
    """``optimizer.load_state_dict`` that keeps each param group's ``fused`` choice (build_optimizer's).

    The loaded groups carry the checkpoint's value instead: a checkpoint written on a CPU (fused None) would
    silently turn the fused CUDA kernel off after resuming on a GPU.
    """
    fused = [group.get("fused") for group in optimizer.param_groups]
    optimizer.load_state_dict(state)
    for group, value in zip(optimizer.param_groups, fused):
        group["fused"] = value


def compile_mode(opt, device: torch.device) -> Optional[str]:
    """The torch.compile mode of ``--compile``, None without it."""
    if not getattr(opt, "compile", False):
        return None
    mode = getattr(opt, "compile_mode", "auto") or "auto"
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


def prepare_run(run: StudentRun, opt, data, device: torch.device, teacher: Optional[nn.Module],
                quiet: bool = False, resume_path: Optional[str] = None) -> None:
    """Optimizer, resume from ``resume_path`` (None: from scratch), logger, init stage and (under torchrun)
    the DDP wrapper of one run."""
    env = current_env()
    if getattr(opt, "sync_bn", False) and env.enabled:
        run.student = convert_sync_batchnorm(run.student, device)
    run.optimizer = build_optimizer(run.student, run.distiller, run.opt, device)
    run.base_lr = scaled_learning_rate(run.opt.learning_rate, env.world_size, getattr(opt, "lr_scale", "none"))
    path = resume_path
    if path is not None:
        state = load_checkpoint(path, map_location=device)
        if not isinstance(state, dict) or "optimizer" not in state or "distiller" not in state:
            raise ValueError(f"'{path}' holds weights only; resume needs a ckpt_epoch_N.pth or "
                             f"{run.model_name}_last.pth written by this toolkit")
        load_weights(run.student, state["model"], run.model_name, source=f"--resume checkpoint '{path}'",
                     hint="resume a checkpoint of this run's own folder (--resume auto) or match its --model_s/--model")
        try:
            run.distiller.load_state_dict(state["distiller"])
        except RuntimeError:
            raise ValueError(f"--resume checkpoint '{path}' was written with another --distill method or method "
                             "options (its distiller state does not fit); resume with those") from None
        load_optimizer_state(run.optimizer, state["optimizer"])
        run.start_epoch = int(state["epoch"]) + 1
        run.best_acc = float(state.get("best_acc", 0.0))
        run.rng.restore(state.get("rng"))
        run.teacher_state = state.get("teacher")
    # only now that a --resume checkpoint has been accepted: a refused run leaves no folder behind
    os.makedirs(run.run_dir, exist_ok=True)
    if env.is_main:
        remove_stale_temporaries(run.run_dir)
    if run.logger is None:
        run.own_logger = True
        run.logger = (RunLogger(run.run_dir, resume_epoch=run.start_epoch - 1, quiet=quiet) if env.is_main
                      else NullLogger())
    if path is not None:
        run.logger.print(f"{run.label}resumed from epoch {run.start_epoch - 1} (best acc {run.best_acc:.2f})")
    elif teacher is not None:
        with run.rng.active():
            run_init_stage(run.opt, data, run.student, teacher, run.distiller, device, run.logger)
    compile_network(run.student, opt, device)
    step = StudentStep(run.student, run.distiller)
    compile_step(step, opt, device)
    run.step = wrap_ddp(step, device) if env.enabled else step


def stateful_teacher(teacher: Optional[nn.Module]) -> bool:
    """A teacher whose BatchNorm statistics move while distilling (CheckpointKD's --teacher_bn train modes)."""
    return teacher is not None and getattr(teacher, "bn_mode", "eval") != "eval"


def finish_epoch(run: StudentRun, epoch: int, lr: float, train: Dict[str, float], t_train: float, data,
                 device: torch.device, teacher: Optional[nn.Module], writer: CheckpointWriter) -> None:
    """Validate, log and checkpoint one run after a training epoch (with the teacher's state when it moves);
    the files are written on the ``writer``'s background thread."""
    env = current_env()
    if env.enabled:
        # BatchNorm running statistics differ between processes without --sync_bn; validate with process 0's.
        # The distiller's buffers need no copy: CRD's banks are equal by construction (tested), and the rest
        # (running statistics of a method's own BatchNorms) are not used by the training step.
        broadcast_buffers(run.student)
    check_finite_weights(run, epoch, lr)
    test = validate(run.student, data.test, run.opt, device)
    row = {"epoch": epoch, "lr": lr, **train, "test_acc": test["acc"], "test_acc_top5": test["acc_top5"],
           "test_loss": test["loss"], "epoch_time": t_train}
    extra = {f"test_{k}": v for k, v in test.items() if k not in ("acc", "acc_top5", "loss")}
    row.update(extra)
    improved = test["acc"] > run.best_acc
    run.best_acc = max(run.best_acc, test["acc"])
    row["best_acc"] = run.best_acc
    log = run.logger
    log.log(row)
    log.print(f"{run.label}epoch {epoch}/{run.opt.epochs}  lr {lr:.5g}  train loss {train['train_loss']:.4f}  "
              f"train acc {train['train_acc']:.2f}  test acc {test['acc']:.2f}  (top5 {test['acc_top5']:.2f})  "
              f"best {run.best_acc:.2f}  {t_train:.1f}s")
    if extra:
        log.print("  " + "  ".join(f"{k[5:]} {v:.2f}" for k, v in extra.items()))
    run.result = {"epoch": epoch, "last_acc": test["acc"], "last_acc_top5": test["acc_top5"],
                  "best_acc": run.best_acc}
    if not env.is_main:
        return
    opt, name = run.opt, run.model_name
    full = {"epoch": epoch, "model": run.student.state_dict(), "accuracy": test["acc"], "best_acc": run.best_acc,
            "optimizer": run.optimizer.state_dict(), "distiller": run.distiller.state_dict(),
            "opt": options_dict(opt), "rng": run.rng.snapshot()}
    if stateful_teacher(teacher):
        full["teacher"] = teacher.state_dict()
    if improved:
        writer.save({"epoch": epoch, "model": run.student.state_dict(), "best_acc": run.best_acc,
                     "opt": options_dict(opt)}, os.path.join(run.run_dir, f"{name}_best.pth"))
    keep_periodic = opt.keep_checkpoints == "all"
    paths = [os.path.join(run.run_dir, f"{name}_last.pth")]
    if keep_periodic and opt.save_freq > 0 and epoch % opt.save_freq == 0:
        paths.insert(0, os.path.join(run.run_dir, f"ckpt_epoch_{epoch}.pth"))
    # one host copy for the periodic and the last file; with --keep_checkpoints last, once the _last.pth
    # resumes from here, the older periodic files go
    writer.save(full, paths, None if keep_periodic else lambda: remove_periodic_checkpoints(run.run_dir, epoch))


def check_finite_weights(run: StudentRun, epoch: int, lr: float) -> None:
    """Refuse to validate or save weights that are nan/inf (one host sync for all tensors of the student)."""
    tensors = [t for t in run.student.state_dict().values() if t.is_floating_point()]
    if tensors and not bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all()):
        raise TrainingDiverged(f"{run.label}epoch {epoch}: non-finite weights; stopped before validating or saving "
                               f"them, {kept_checkpoint(run, epoch)}; try {retry_hint(run.opt, run.distiller, lr)}")


def kept_checkpoint(run: StudentRun, epoch: int) -> str:
    """Which checkpoint survives a run stopped during ``epoch`` (every finished epoch wrote its _last.pth)."""
    if epoch <= 1:
        return "nothing saved"
    return f"{run.model_name}_last.pth of epoch {epoch - 1} is kept for --resume auto"


def resume_paths(runs: List[StudentRun], resume: Optional[str], quiet: bool = False) -> List[Optional[str]]:
    """The checkpoint each run resumes from (None: from scratch) for ``--resume PATH|auto``.

    With ``auto``, a run folder without a resumable checkpoint starts from epoch 1, and says so: a sweep that
    always passes ``--resume auto`` then restarts a run killed before its first checkpoint (or never started).
    """
    if not resume:
        return [None] * len(runs)
    if resume != "auto":
        return [resume] * len(runs)
    paths = [latest_checkpoint(r.run_dir, r.model_name) for r in runs]
    for run, path in zip(runs, paths):
        if path is None:
            say(f"{run.label}no checkpoint in {run.run_dir} yet: starting from epoch 1", quiet)
    return paths


def warn_unused_milestones(opt, quiet: bool) -> None:
    # milestone m lowers the lr from epoch m + 1 on, so it applies only when m < --epochs
    unused = [m for m in parse_epochs(opt.lr_decay_epochs) if m >= opt.epochs]
    if unused:
        say(f"warning: --lr_decay_epochs {','.join(map(str, unused))} never apply with --epochs {opt.epochs} "
            f"(a milestone m lowers the lr from epoch m+1 on)", quiet)


def train_epochs(runs: List[StudentRun], opt, data, device: torch.device, teacher: Optional[nn.Module],
                 writer: CheckpointWriter) -> None:
    """The epochs of :func:`fit_runs`: train every active run, then validate and checkpoint each."""
    for epoch in range(min(r.start_epoch for r in runs), opt.epochs + 1):
        record_epoch(epoch)
        active = [r for r in runs if r.start_epoch <= epoch]
        lrs = [adjust_learning_rate(epoch, r.opt, r.optimizer, base_lr=r.base_lr) for r in active]
        t0 = time.time()
        trains = train_runs_one_epoch(epoch, data.train, active, opt, device, teacher)
        t_train = time.time() - t0
        diverged = []
        for run, lr, train in zip(active, lrs, trains):
            nonfinite = train.pop(NONFINITE_STEPS)
            if nonfinite:
                diverged.append((run, nonfinite))
            else:
                finish_epoch(run, epoch, lr, train, t_train, data, device, teacher, writer)
        if diverged:
            run, nonfinite = diverged[0]
            others = f" ({len(diverged) - 1} other runs too)" if len(diverged) > 1 else ""
            lr = lrs[active.index(run)]
            raise TrainingDiverged(f"{run.label}epoch {epoch}: non-finite training loss ({nonfinite} steps){others}; "
                                   f"stopped before validating or saving it, {kept_checkpoint(run, epoch)}; "
                                   f"try {retry_hint(run.opt, run.distiller, lr)}")


def fit_runs(runs: List[StudentRun], opt, data, device: torch.device, teacher: Optional[nn.Module] = None,
             quiet: bool = False) -> List[Dict[str, float]]:
    """Train every run for ``opt.epochs`` epochs on the same batches, with checkpoints every epoch and resume.

    ``opt`` holds what the runs share (epochs, batch size, data seed, precision); each run's own options hold
    its seed, trial id and loss weights. Files in each run folder (RepDistiller names): ``ckpt_epoch_N.pth``
    every ``--save_freq`` epochs, ``<model>_best.pth`` when test top-1 improves, ``<model>_last.pth`` after
    every epoch. The periodic and last files carry optimizer, distiller and RNG state, so ``--resume``
    continues exactly where a killed run stopped; runs that got one epoch further before the kill wait for
    the others.

    Before anything is written: a run whose checkpoint already reached ``opt.epochs`` is skipped (its folder
    untouched, its result marked ``ALREADY_FINISHED``); without ``--resume`` a folder that holds a run is refused
    unless ``--overwrite``. A non-finite loss or weights stop the run (:class:`TrainingDiverged`) before that
    epoch is validated or saved, so the previous epoch's ``_last.pth`` stays the one to resume.
    """
    all_runs = list(runs)
    resume = getattr(opt, "resume", None)
    paths = resume_paths(all_runs, resume, quiet)
    for run, path in zip(all_runs, paths):
        done = None if path is None else finished_result(path, opt.epochs, run.student)
        if done is not None:
            run.finished, run.result, run.best_acc = True, done, done["best_acc"]
            say(f"{run.label}already finished (epoch {done['epoch']} of {opt.epochs}): nothing to do "
                f"({run.run_dir})", quiet)
    # every check comes before the first run writes anything; with --resume auto a folder without a resumable
    # checkpoint starts afresh (resume_paths said so)
    if not resume:
        claim_run_folders(all_runs, opt.overwrite, quiet)
    barrier()  # under torchrun, no process writes into a run folder before every process has looked at it
    runs = [r for r in all_runs if not r.finished]
    if not runs:
        return [run.result for run in all_runs]
    warn_unused_milestones(opt, quiet)
    plans = [checkpoint_plan(run, opt) for run in runs]
    several = len(set(plans)) > 1
    for run, plan in zip(runs, plans):
        if several or run is runs[0]:
            say((run.label if several else "") + plan, quiet)
    for run, path in zip(all_runs, paths):
        if not run.finished:
            prepare_run(run, opt, data, device, teacher, quiet, path)
    if stateful_teacher(teacher):
        # the shared teacher continues from where the run that resumes earliest left it
        resumed = sorted((r.start_epoch, i) for i, r in enumerate(runs) if r.teacher_state is not None)
        if resumed:
            teacher.load_state_dict(runs[resumed[0][1]].teacher_state)
    if teacher is not None:
        compile_network(teacher, opt, device)
    writer = CheckpointWriter()
    try:
        train_epochs(runs, opt, data, device, teacher, writer)
    finally:
        # also on an error or interrupt: the files the run leaves are complete (a queued write is finished)
        writer.close()
    writer.raise_error()
    record_epoch(None)
    for run in runs:
        if run.own_logger:
            run.logger.close()
    barrier()
    return [run.result or {"best_acc": run.best_acc} for run in all_runs]


def fit(opt, data, student: nn.Module, distiller: Distiller, run_dir: str, model_name: str,
        device: torch.device, teacher: Optional[nn.Module] = None, logger: Optional[RunLogger] = None,
        quiet: bool = False) -> Dict[str, float]:
    """Train one student (see :func:`fit_runs`)."""
    run = StudentRun(opt, student, distiller, run_dir, model_name, logger=logger, own_logger=logger is None)
    return fit_runs([run], opt, data, device, teacher, quiet)[0]
