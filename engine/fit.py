"""Fitting runs: optimizer, resume, init stage, the epochs with validation and checkpoints, run folders."""
from __future__ import annotations

import os
import time
from typing import Any, Dict, List, Optional

import torch
import torch.nn as nn

from distiller_zoo.base import Distiller
from helper.checkpoint import latest_checkpoint, load_checkpoint, load_weights, options_dict, remove_stale_temporaries
from helper.checkpoint_writer import CheckpointWriter
from helper.distributed import barrier, broadcast_buffers, convert_sync_batchnorm, current_env, scaled_learning_rate, \
    wrap_ddp
from helper.logging import NullLogger, RunLogger
from helper.run import record_epoch
from helper.run_folder import checkpoint_plan, claim_run_folders, finished_result, remove_periodic_checkpoints, say
from helper.tracking import open_wandb
from helper.util import adjust_learning_rate, parse_epochs

from .compile import compile_network, compile_step, uses_cuda_graphs
from .dot import DOT
from .epoch import NONFINITE_STEPS, TrainingDiverged, retry_hint, train_runs_one_epoch
from .evaluate import validate
from .init_stage import run_init_stage
from .step import StudentRun, StudentStep
from .teacher import Teacher


def build_optimizer(student: nn.Module, distiller: Distiller, opt, device: torch.device):
    """RepDistiller's SGD over the student and the method's modules; one fused kernel per step on CUDA.
    ``--optimizer dot``: DOT's two-momentum SGD over the same parameters (engine/dot.py)."""
    trainable = nn.ModuleList([student] + list(distiller.trainable_modules()))
    if opt.optimizer == "dot":
        return DOT(trainable.parameters(), lr=opt.learning_rate, momentum=opt.momentum, delta=opt.dot_delta,
                   weight_decay=opt.weight_decay)
    extra = {"fused": True} if device.type == "cuda" else {}
    return torch.optim.SGD(trainable.parameters(), lr=opt.learning_rate, momentum=opt.momentum,
                           weight_decay=opt.weight_decay, nesterov=bool(opt.nesterov), **extra)


def load_optimizer_state(optimizer, state: Dict[str, Any]) -> None:
    """``optimizer.load_state_dict`` that keeps each param group's ``fused`` choice (build_optimizer's).

    The loaded groups carry the checkpoint's value instead: a checkpoint written on a CPU (fused None) would
    silently turn the fused CUDA kernel off after resuming on a GPU.
    """
    written, wanted = optimizer_name(state), "dot" if isinstance(optimizer, DOT) else "sgd"
    if written != wanted:
        raise ValueError(f"the --resume checkpoint was written with --optimizer {written}; resume with "
                         f"--optimizer {written}, not {wanted}")
    fused = [group.get("fused") for group in optimizer.param_groups]
    optimizer.load_state_dict(state)
    if wanted == "sgd":
        for group, value in zip(optimizer.param_groups, fused):
            group["fused"] = value


def check_resumed_schedule(state: Dict[str, Any], opt, path: str) -> None:
    """A run resumes under the --lr_schedule it started with (the lr of every epoch is a closed form of the epoch,
    so the same schedule continues exactly); checkpoints written before the option existed are step-schedule ones."""
    written = (state.get("opt") or {}).get("lr_schedule", "step")
    if written != opt.lr_schedule:
        raise ValueError(f"the --resume checkpoint '{path}' was written with --lr_schedule {written}; resume with "
                         f"--lr_schedule {written}, not {opt.lr_schedule}")


def optimizer_name(state: Dict[str, Any]) -> str:
    """The ``--optimizer`` that wrote an optimizer state dict: DOT's param group carries its ``delta``."""
    groups = state.get("param_groups") or [{}]
    return "dot" if "delta" in groups[0] else "sgd"


def tracker_of(run: StudentRun, resumed: bool, several: bool):
    """The ``--wandb`` tracker of a run (None without --wandb); ``several``: the process trains several runs, so a
    given ``--wandb_name`` gets the run folder's name appended."""
    o = run.opt
    if not o.wandb:
        return None
    folder = os.path.basename(os.path.normpath(run.run_dir))
    name = None if o.wandb_name is None else (f"{o.wandb_name}_{folder}" if several else o.wandb_name)
    return open_wandb(run.run_dir, o.wandb_project, name, o.wandb_mode, options_dict(o, **run.facts), resumed)


def prepare_run(run: StudentRun, opt, data, device: torch.device, teacher: Optional[nn.Module],
                quiet: bool = False, resume_path: Optional[str] = None, several: bool = False) -> None:
    """Optimizer, resume from ``resume_path`` (None: from scratch), logger, init stage and (under torchrun)
    the DDP wrapper of one run (``several``: one of several runs of this process)."""
    env = current_env()
    if opt.sync_bn and env.enabled:
        run.student = convert_sync_batchnorm(run.student, device)
    run.optimizer = build_optimizer(run.student, run.distiller, run.opt, device)
    if isinstance(run.optimizer, DOT) and uses_cuda_graphs(opt, device):
        # the second backward would replay the captured backward graph over the first one's gradients
        raise ValueError("--optimizer dot does not run under CUDA graphs (--compile's reduce-overhead/max-autotune); "
                         "give --compile_mode default or max-autotune-no-cudagraphs")
    run.base_lr = scaled_learning_rate(run.opt.learning_rate, env.world_size, opt.lr_scale)
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
        check_resumed_schedule(state, run.opt, path)
        run.start_epoch = int(state["epoch"]) + 1
        run.start_samples = int(state.get("epoch_samples", 0))
        if run.start_samples:
            check_step_resume(path, state, run.opt, env.world_size)
            run.epoch_meter = state.get("epoch_meter")
        run.best_acc = float(state.get("best_acc", 0.0))
        run.rng.restore(state.get("rng"))
        run.teacher_state = state.get("teacher")
    # only now that a --resume checkpoint has been accepted: a refused run leaves no folder behind
    os.makedirs(run.run_dir, exist_ok=True)
    if env.is_main:
        remove_stale_temporaries(run.run_dir)
    if run.logger is None:
        run.own_logger = True
        run.logger = (RunLogger(run.run_dir, resume_epoch=run.start_epoch - 1, quiet=quiet,
                                tracker=tracker_of(run, resumed=path is not None, several=several))
                      if env.is_main else NullLogger())
    if path is not None and run.start_samples:
        run.logger.print(f"{run.label}resumed within epoch {run.start_epoch}, after {run.start_samples} of its "
                         f"samples (best acc {run.best_acc:.2f})")
    elif path is not None:
        run.logger.print(f"{run.label}resumed from epoch {run.start_epoch - 1} (best acc {run.best_acc:.2f})")
    elif teacher is not None:
        with run.rng.active():
            run_init_stage(run.opt, data, run.student, teacher, run.distiller, device, run.logger)
    compile_network(run.student, opt, device)
    step = StudentStep(run.student, run.distiller)
    compile_step(step, opt, device)
    if env.enabled and isinstance(run.optimizer, DOT):
        # DOT's two backwards per forward do not fit DDP's reducer: optimize_dot averages each backward's
        # gradients itself, and the processes start from process 0's weights as DDP would make them
        broadcast_parameters(step)
        run.step = step
    else:
        run.step = wrap_ddp(step, device) if env.enabled else step


def check_step_resume(path: str, state: Dict[str, Any], opt, world_size: int) -> None:
    """A checkpoint written within an epoch continues that epoch's batches: the global batch must be the one it was
    written with (the number of processes may differ when the per-process batch makes up for it)."""
    written = int(state.get("global_batch", 0))
    now = opt.batch_size * world_size
    if written != now:
        raise ValueError(f"'{path}' was written within epoch {int(state['epoch']) + 1} with a global batch of "
                         f"{written}; resume it with the same global batch (now {opt.batch_size} x {world_size} "
                         f"process{'es' if world_size > 1 else ''} = {now}), e.g. --global_batch_size {written}")


def save_within_epoch(run: StudentRun, epoch: int, samples: int, meter, teacher: Optional[nn.Module],
                      writer: CheckpointWriter) -> None:
    """``<model>_last.pth`` after ``samples`` samples of ``epoch`` (--save_steps): what the end-of-epoch checkpoint
    holds, with the epoch still to finish (``epoch`` is the last finished one, ``epoch_samples`` those trained of the
    next) and the epoch's sums so far. Every process takes part (the sums are added up); process 0 writes. After a
    non-finite loss or with non-finite weights nothing is written: the epoch's end stops the run (TrainingDiverged)
    and the last good checkpoint stays the one to resume."""
    sums = meter.partial_sums()
    if not current_env().is_main or float(sums["values"][-2]) > 0 or not finite_weights(run.student):
        return
    opt, name = run.opt, run.model_name
    full = {"epoch": epoch - 1, "epoch_samples": samples, "global_batch": opt.batch_size * current_env().world_size,
            "epoch_meter": sums, "model": run.student.state_dict(), "accuracy": run.result.get("last_acc", 0.0),
            "best_acc": run.best_acc, "optimizer": run.optimizer.state_dict(), "distiller": run.distiller.state_dict(),
            "opt": options_dict(opt, **run.facts), "rng": run.rng.snapshot()}
    if teacher is not None and teacher.stateful:
        full["teacher"] = teacher.state_dict()
    writer.save(full, os.path.join(run.run_dir, f"{name}_last.pth"))


def broadcast_parameters(module: nn.Module, src: int = 0) -> None:
    """Process ``src``'s parameters and buffers in every process (what DDP's constructor does)."""
    import torch.distributed as dist

    with torch.no_grad():
        for p in module.parameters():
            dist.broadcast(p.data, src)
    broadcast_buffers(module, src)


def finish_epoch(run: StudentRun, epoch: int, lr: float, train: Dict[str, float], t_train: float, data,
                 device: torch.device, teacher: Optional[nn.Module], writer: CheckpointWriter) -> None:
    """Validate, log and checkpoint one run after a training epoch (with the teacher's state when it moves);
    the files are written on the ``writer``'s background thread."""
    env = current_env()
    # what the run deploys: the student, or the student with some of the method's modules (SimKD)
    deployed = run.distiller.deployed(run.student)
    if env.enabled:
        # BatchNorm running statistics differ between processes without --sync_bn; validate with process 0's.
        # The rest of the distiller's buffers need no copy: CRD's banks are equal by construction (tested), and
        # the running statistics of a method's other BatchNorms are not used by the training step.
        broadcast_buffers(deployed)
    check_finite_weights(run, epoch, lr)
    test = validate(deployed, data.test, run.opt, device)
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
            "opt": options_dict(opt, **run.facts), "rng": run.rng.snapshot()}
    if teacher is not None and teacher.stateful:
        full["teacher"] = teacher.state_dict()
    best = {"epoch": epoch, "model": run.student.state_dict(), "best_acc": run.best_acc,
            "opt": options_dict(opt, **run.facts)}
    deploy = run.distiller.deploy_state()
    if deploy is not None:
        # how to rebuild the deployed network around 'model' (validation.py reads it)
        full["deploy"] = best["deploy"] = deploy
    if improved:
        writer.save(best, os.path.join(run.run_dir, f"{name}_best.pth"))
    keep_periodic = opt.keep_checkpoints == "all"
    paths = [os.path.join(run.run_dir, f"{name}_last.pth")]
    if keep_periodic and opt.save_freq > 0 and epoch % opt.save_freq == 0:
        paths.insert(0, os.path.join(run.run_dir, f"ckpt_epoch_{epoch}.pth"))
    # one host copy for the periodic and the last file; with --keep_checkpoints last, once the _last.pth
    # resumes from here, the older periodic files go
    writer.save(full, paths, None if keep_periodic else lambda: remove_periodic_checkpoints(run.run_dir, epoch))


def finite_weights(student: nn.Module) -> bool:
    """Whether every floating-point tensor of the student is finite (one host sync for all of them)."""
    tensors = [t for t in student.state_dict().values() if t.is_floating_point()]
    return not tensors or bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all())


def check_finite_weights(run: StudentRun, epoch: int, lr: float) -> None:
    """Refuse to validate or save weights that are nan/inf (one host sync for all tensors of the student)."""
    if not finite_weights(run.student):
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
    # milestone m lowers the lr from epoch m + 1 on, so it applies only when m < --epochs; only the step schedule
    # reads --lr_decay_epochs (multistep's fixed epochs beyond a 200-epoch run are CheckpointKD's own set-up)
    if opt.lr_schedule != "step":
        return
    unused = [m for m in parse_epochs(opt.lr_decay_epochs) if m >= opt.epochs]
    if unused:
        say(f"warning: --lr_decay_epochs {','.join(map(str, unused))} never apply with --epochs {opt.epochs} "
            f"(a milestone m lowers the lr from epoch m+1 on)", quiet)


def train_epochs(runs: List[StudentRun], opt, data, device: torch.device, teacher: Optional[nn.Module],
                 writer: CheckpointWriter) -> None:
    """The epochs of :func:`fit_runs`: train every active run, then validate and checkpoint each."""
    first = min(r.start_epoch for r in runs)
    starts = {r.start_samples for r in runs if r.start_epoch == first}
    if len(starts) > 1:
        raise ValueError(f"the runs resume epoch {first} at different steps ({', '.join(map(str, sorted(starts)))} "
                         "samples trained); resume them one at a time")
    for epoch in range(first, opt.epochs + 1):
        record_epoch(epoch)
        active = [r for r in runs if r.start_epoch <= epoch]
        lrs = [adjust_learning_rate(epoch, r.opt, r.optimizer, base_lr=r.base_lr) for r in active]
        t0 = time.time()
        start = starts.pop() if epoch == first else 0
        on_step = None
        if opt.save_steps > 0:
            def on_step(step, samples, meters, epoch=epoch, active=active):
                if step % opt.save_steps == 0:
                    for run, meter in zip(active, meters):
                        save_within_epoch(run, epoch, samples, meter, teacher, writer)
        trains = train_runs_one_epoch(epoch, data.train, active, opt, device, teacher, start=start, on_step=on_step)
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
    teacher = Teacher.of(teacher)
    all_runs = list(runs)
    resume = opt.resume
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
            prepare_run(run, opt, data, device, teacher, quiet, path, several=len(all_runs) > 1)
    if teacher is not None and teacher.stateful:
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
        quiet: bool = False, facts: Optional[Dict[str, Any]] = None) -> Dict[str, float]:
    """Train one student (see :func:`fit_runs`); ``facts`` are saved with its options."""
    run = StudentRun(opt, student, distiller, run_dir, model_name, logger=logger, own_logger=logger is None,
                     facts=dict(facts or {}))
    return fit_runs([run], opt, data, device, teacher, quiet)[0]
