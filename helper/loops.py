"""The shared train/validate/fit loops. They call a Distiller; they never name a method."""
from __future__ import annotations

import contextlib
import os
import time
from typing import Dict, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from distiller_zoo.base import Batch, Distiller, Outputs

from .checkpoint import (latest_checkpoint, load_checkpoint, options_dict, restore_rng_state, rng_state,
                         save_checkpoint)
from .logging import RunLogger, progress
from .multihead import evaluate_exits, is_multi_exit
from .util import adjust_learning_rate, correct_topk


def autocast_for(opt, device: torch.device):
    if getattr(opt, "amp", False) and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def prepare_input(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    if device.type == "cuda":
        return x.contiguous(memory_format=torch.channels_last)
    return x


def forward(model: nn.Module, x: torch.Tensor, feats: bool, preact: bool = False) -> Outputs:
    if feats:
        f, logits = model(x, is_feat=True, preact=preact)
        return Outputs(logits=logits, feats=list(f))
    return Outputs(logits=model(x))


def loss_weights(opt) -> Dict[str, float]:
    return {"ce": float(opt.gamma), "kl": float(opt.alpha), "kd": float(opt.beta)}


def begin_train_epoch(epoch: int, student: nn.Module, distiller: Distiller, opt,
                      teacher: Optional[nn.Module] = None) -> None:
    """Train/eval modes for one training epoch (the student and distiller train, the teacher is frozen)."""
    student.train()
    distiller.train()
    if teacher is not None:
        teacher.eval()
        # a teacher wrapper may run (part of) itself in train mode while distilling (CheckpointKD's --teacher_bn)
        begin = getattr(teacher, "begin_epoch", None)
        if begin is not None:
            begin(epoch, opt.epochs)


def train_step(batch: Batch, epoch: int, student: nn.Module, distiller: Distiller, optimizer, opt,
               device: torch.device, weights: Dict[str, float], teacher: Optional[nn.Module] = None):
    """One optimisation step on ``batch``: forward(s), weighted loss, backward, optimizer step.

    Returns ``(batch, out_s, terms, loss)``; ``batch`` carries the input as the networks saw it.
    train_one_epoch and scripts/benchmark.py both run exactly this.
    """
    x = prepare_input(batch.x, device)
    batch = Batch(x, batch.y, batch.index)
    with autocast_for(opt, device):
        out_s = forward(student, x, distiller.needs_feats, distiller.needs_preact)
        out_t = None
        if teacher is not None:
            with torch.no_grad():
                out_t = forward(teacher, x, distiller.needs_feats, distiller.needs_preact)
        terms = distiller.loss(out_s, out_t, batch, epoch)
        loss = sum(weights.get(k, 1.0) * v for k, v in terms.items())
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return batch, out_s, terms, loss


def train_one_epoch(epoch: int, data, student: nn.Module, distiller: Distiller, optimizer,
                    opt, device: torch.device, teacher: Optional[nn.Module] = None) -> Dict[str, float]:
    """One pass over the shuffled training split. Sums stay on the device; one sync per epoch."""
    begin_train_epoch(epoch, student, distiller, opt, teacher)
    weights = loss_weights(opt)
    n_steps = data.num_batches(opt.batch_size)
    bar = progress(n_steps, f"epoch {epoch}")
    zero = torch.zeros((), device=device)
    sums = {"loss": zero.clone(), "top1": zero.clone(), "top5": zero.clone()}
    term_sums: Dict[str, torch.Tensor] = {}
    seen = 0
    for step, batch in enumerate(data.train_batches(opt.batch_size, opt.seed, epoch)):
        batch, out_s, terms, loss = train_step(batch, epoch, student, distiller, optimizer, opt, device, weights,
                                               teacher)
        bs = batch.y.shape[0]
        seen += bs
        c1, c5 = correct_topk(out_s.logits.detach(), batch.y, (1, 5))
        sums["loss"] += loss.detach().float() * bs
        sums["top1"] += c1
        sums["top5"] += c5
        for k, v in terms.items():
            term_sums[k] = term_sums.get(k, zero) + v.detach().float() * bs
        if bar is not None:
            bar.update(1)
            if step % max(1, opt.print_freq) == 0:
                bar.set_postfix(loss=f"{loss.item():.4f}")
    if bar is not None:
        bar.close()
    out = {"train_loss": (sums["loss"] / seen).item(), "train_acc": (sums["top1"] * 100.0 / seen).item(),
           "train_acc_top5": (sums["top5"] * 100.0 / seen).item()}
    for k, v in term_sums.items():
        out[f"loss_{k}"] = (v / seen).item()
    out.update(distiller.epoch_metrics())
    return out


@torch.no_grad()
def validate(model: nn.Module, split, opt, device: torch.device) -> Dict[str, float]:
    """Top-1, top-5 (percent) and mean cross-entropy on an evaluation split.

    Multi-exit models (``exit_logits``) are scored by their deepest exit, plus ``acc_c1..`` per exit and
    ``acc_ensemble``.
    """
    if is_multi_exit(model):
        return evaluate_exits(model, split, opt, device, autocast_for(opt, device), prepare_input)
    model.eval()
    loss = torch.zeros((), device=device)
    c1 = torch.zeros((), device=device)
    c5 = torch.zeros((), device=device)
    for batch in split.eval_batches(getattr(opt, "test_batch_size", 256)):
        with autocast_for(opt, device):
            logits = model(prepare_input(batch.x, device))
        logits = logits.float()
        loss += F.cross_entropy(logits, batch.y, reduction="sum")
        a, b = correct_topk(logits, batch.y, (1, 5))
        c1 += a
        c5 += b
    n = len(split)
    return {"acc": (c1 * 100.0 / n).item(), "acc_top5": (c5 * 100.0 / n).item(), "loss": (loss / n).item()}


def run_init_stage(opt, data, student, teacher, distiller: Distiller, device, logger: RunLogger) -> None:
    """RepDistiller's pre-training stage for two-stage methods (AB, FT, FSP).

    As upstream: the student stays in eval mode except the modules being trained, the teacher is
    frozen, and a separate SGD optimizer with the method's init lr runs for ``--init_epochs``.
    """
    modules = distiller.init_modules(student)
    if not modules or opt.init_epochs <= 0:
        return
    init_list = nn.ModuleList(modules)
    lr = distiller.init_lr(opt)
    optimizer = torch.optim.SGD(init_list.parameters(), lr=lr, momentum=opt.momentum,
                                weight_decay=opt.weight_decay)
    for epoch in range(1, opt.init_epochs + 1):
        student.eval()
        teacher.eval()
        init_list.train()
        total = torch.zeros((), device=device)
        seen = 0
        t0 = time.time()
        for batch in data.train.train_batches(opt.batch_size, opt.seed, -epoch):
            x = prepare_input(batch.x, device)
            batch = Batch(x, batch.y, batch.index)
            with autocast_for(opt, device):
                out_s = forward(student, x, True, distiller.needs_preact)
                with torch.no_grad():
                    out_t = forward(teacher, x, True, distiller.needs_preact)
                loss = distiller.init_loss(out_s, out_t, batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach().float() * batch.y.shape[0]
            seen += batch.y.shape[0]
        row = {"stage": "init", "epoch": epoch, "init_train_loss": (total / seen).item(), "lr": lr}
        logger.log(row, prefix="init/")
        logger.print(f"init epoch {epoch}/{opt.init_epochs}  loss {row['init_train_loss']:.4f}  "
                     f"({time.time() - t0:.1f}s)")


def _optimizer_for(student: nn.Module, distiller: Distiller, opt):
    trainable = nn.ModuleList([student] + list(distiller.trainable_modules()))
    return torch.optim.SGD(trainable.parameters(), lr=opt.learning_rate, momentum=opt.momentum,
                           weight_decay=opt.weight_decay, nesterov=bool(getattr(opt, "nesterov", False)))


def fit(opt, data, student: nn.Module, distiller: Distiller, run_dir: str, model_name: str,
        device: torch.device, teacher: Optional[nn.Module] = None, logger: Optional[RunLogger] = None,
        quiet: bool = False) -> Dict[str, float]:
    """Train ``student`` for ``opt.epochs`` epochs, with checkpoints every epoch and resume.

    Files in ``run_dir`` (RepDistiller names): ``ckpt_epoch_N.pth`` every ``--save_freq`` epochs,
    ``<model>_best.pth`` when test top-1 improves, ``<model>_last.pth`` after every epoch. The
    periodic and last files carry optimizer, distiller and RNG state, so ``--resume`` continues
    exactly where a killed run stopped.
    """
    os.makedirs(run_dir, exist_ok=True)
    optimizer = _optimizer_for(student, distiller, opt)
    start_epoch, best_acc = 1, 0.0
    resume = getattr(opt, "resume", None)
    if resume:
        path = latest_checkpoint(run_dir, model_name) if resume == "auto" else resume
        if path is None:
            raise FileNotFoundError(f"--resume auto: no resumable checkpoint in '{run_dir}'")
        state = load_checkpoint(path, map_location=device)
        if "optimizer" not in state or "distiller" not in state:
            raise ValueError(f"'{path}' holds weights only; resume needs a ckpt_epoch_N.pth or "
                             f"{model_name}_last.pth written by this toolkit")
        student.load_state_dict(state["model"])
        distiller.load_state_dict(state["distiller"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch = int(state["epoch"]) + 1
        best_acc = float(state.get("best_acc", 0.0))
        restore_rng_state(state.get("rng"))
    own_logger = logger is None
    if own_logger:
        logger = RunLogger(run_dir, resume_epoch=start_epoch - 1, quiet=quiet)
    if resume:
        logger.print(f"resumed from epoch {start_epoch - 1} (best acc {best_acc:.2f})")
    elif teacher is not None:
        run_init_stage(opt, data, student, teacher, distiller, device, logger)

    result = {"best_acc": best_acc}
    for epoch in range(start_epoch, opt.epochs + 1):
        lr = adjust_learning_rate(epoch, opt, optimizer)
        t0 = time.time()
        train = train_one_epoch(epoch, data.train, student, distiller, optimizer, opt, device, teacher)
        t_train = time.time() - t0
        test = validate(student, data.test, opt, device)
        row = {"epoch": epoch, "lr": lr, **train, "test_acc": test["acc"], "test_acc_top5": test["acc_top5"],
               "test_loss": test["loss"], "epoch_time": t_train}
        extra = {f"test_{k}": v for k, v in test.items() if k not in ("acc", "acc_top5", "loss")}
        row.update(extra)
        improved = test["acc"] > best_acc
        best_acc = max(best_acc, test["acc"])
        row["best_acc"] = best_acc
        logger.log(row)
        logger.print(f"epoch {epoch}/{opt.epochs}  lr {lr:.5g}  train loss {train['train_loss']:.4f}  "
                     f"train acc {train['train_acc']:.2f}  test acc {test['acc']:.2f}  "
                     f"(top5 {test['acc_top5']:.2f})  best {best_acc:.2f}  {t_train:.1f}s")
        if extra:
            logger.print("  " + "  ".join(f"{k[5:]} {v:.2f}" for k, v in extra.items()))
        full = {"epoch": epoch, "model": student.state_dict(), "accuracy": test["acc"], "best_acc": best_acc,
                "optimizer": optimizer.state_dict(), "distiller": distiller.state_dict(),
                "opt": options_dict(opt), "rng": rng_state()}
        if improved:
            save_checkpoint({"epoch": epoch, "model": student.state_dict(), "best_acc": best_acc,
                             "opt": options_dict(opt)}, os.path.join(run_dir, f"{model_name}_best.pth"))
        if opt.save_freq > 0 and epoch % opt.save_freq == 0:
            save_checkpoint(full, os.path.join(run_dir, f"ckpt_epoch_{epoch}.pth"))
        save_checkpoint(full, os.path.join(run_dir, f"{model_name}_last.pth"))
        result = {"epoch": epoch, "last_acc": test["acc"], "last_acc_top5": test["acc_top5"], "best_acc": best_acc}
    if own_logger:
        logger.close()
    return result
