"""RepDistiller's init stage of the two-stage methods (AB, FT, FSP, PAD, SSKD): the method's modules trained
first."""
from __future__ import annotations

import math
import time
from dataclasses import replace

import torch
import torch.nn as nn

from distiller_zoo.base import Distiller
from helper.distributed import all_reduce_sum, average_gradients, current_env

from .epoch import TrainingDiverged, retry_hint
from .forward import autocast_for, forward, prepare_input, teacher_outputs, use_channels_last
from .step import shard_loss_scale


def run_init_stage(opt, data, student, teacher, distiller: Distiller, device, logger) -> None:
    """RepDistiller's pre-training stage for two-stage methods (AB, FT, FSP; PAD, SSKD).

    As upstream: the student stays in eval mode except the modules being trained, the teacher is
    frozen, and a separate SGD optimizer with the method's init lr runs for ``--init_epochs``.
    """
    modules = distiller.init_modules(student)
    if not modules or opt.init_epochs <= 0:
        return
    env = current_env()
    init_list = nn.ModuleList(modules)
    lr = distiller.init_lr(opt.learning_rate)
    method = f"[{distiller.name}] "
    if opt.init_epochs > opt.epochs:
        logger.print(f"{method}note: the init stage runs --init_epochs {opt.init_epochs} epochs (RepDistiller's 30) "
                     f"before the {opt.epochs} training epoch(s); give a smaller --init_epochs for a short run")
    optimizer = torch.optim.SGD(init_list.parameters(), lr=lr, momentum=opt.momentum,
                                weight_decay=opt.weight_decay)
    channels_last = use_channels_last(opt, device)
    expansion = distiller.batch_expansion
    for epoch in range(1, opt.init_epochs + 1):
        epoch_lr = lr * distiller.init_lr_factor(epoch, opt.init_epochs)
        for group in optimizer.param_groups:
            group["lr"] = epoch_lr
        student.eval()
        teacher.eval()
        init_list.train()
        loss_sum = torch.zeros((), device=device)
        seen = 0  # this process's samples, counted on the host: a device tensor per step would be a copy per step
        t0 = time.time()
        for batch in data.train.train_batches(opt.batch_size, opt.data_seed, -epoch, rank=env.rank,
                                              world_size=env.world_size):
            x = prepare_input(batch.x, channels_last)
            batch = replace(batch, x=x)
            if expansion is not None:
                x = prepare_input(expansion.expand(x), channels_last)
            with autocast_for(opt, device):
                out_s = forward(student, x, distiller.student_features)
                kind = distiller.teacher_features
                out_t = teacher_outputs(teacher, x, [kind])[kind]
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
            hint = retry_hint(opt, distiller, epoch_lr)
            raise TrainingDiverged(f"{method}init epoch {epoch}/{opt.init_epochs}: non-finite init-stage loss; "
                                   f"stopped before training, nothing saved; try {hint}")
        row = {"stage": "init", "epoch": epoch, "init_train_loss": total_loss / seen, "lr": epoch_lr}
        logger.log(row, prefix="init/")
        logger.print(f"{method}init epoch {epoch}/{opt.init_epochs}  loss {row['init_train_loss']:.4f}  "
                     f"({time.time() - t0:.1f}s)")
