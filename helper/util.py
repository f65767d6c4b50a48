"""Schedules, metrics and run-time set-up shared by every entry script."""
from __future__ import annotations

import math
import random
import re
from typing import Optional, Sequence

import torch

# RepDistiller lowers the base lr of these students to 0.01 (train_student.py / train_teacher.py).
SMALL_LR_MODELS = ("MobileNetV2", "ShuffleV1", "ShuffleV2")


def parse_epochs(text) -> list:
    if isinstance(text, (list, tuple)):
        return [int(v) for v in text]
    return [int(v) for v in str(text).split(",") if v.strip()]


# --lr_schedule values: RepDistiller's step schedule and CheckpointKD's two others
LR_SCHEDULES = ("step", "cosine", "multistep")
# CheckpointKD's --multistep_lr: MultiStepLR(milestones=[149, 179, 209, 239]) stepped with its 0-indexed epoch e
# (student.py), i.e. the lr is lowered from 0-indexed epoch 149, which is epoch 150 here: milestone m of lr_at
CHECKPOINTKD_MULTISTEP = (149, 179, 209, 239)
# BYOT's --warm-up (train.py, adjust_learning_rate): lr 0.01 in its epoch 0, whatever --lr is
WARM_UP_LR = 0.01


def lr_at(epoch: int, base_lr: float, decay_epochs: Sequence[int], decay_rate: float) -> float:
    """RepDistiller's step schedule, epochs counted from 1: decay once for every milestone passed."""
    steps = sum(1 for m in decay_epochs if epoch > m)
    return base_lr * (decay_rate ** steps)


def cosine_lr_at(epoch: int, base_lr: float, epochs: int) -> float:
    """CheckpointKD's --cos_lr, epochs counted from 1: ``CosineAnnealingLR(T_max=epochs, eta_min=0)`` stepped once
    at the start of every epoch with its 0-indexed epoch e = epoch - 1, whose closed form is
    ``base_lr * (1 + cos(pi * e / T_max)) / 2`` (per epoch, not per step; epoch 1 has the full ``base_lr``)."""
    return base_lr * (1.0 + math.cos(math.pi * (epoch - 1) / epochs)) / 2.0


def scheduled_lr(epoch: int, base_lr: float, opt) -> float:
    """The lr of ``epoch`` (from 1) under ``opt.lr_schedule`` and ``opt.warm_up``, for a run whose first-epoch lr
    is ``base_lr`` (--learning_rate, or that scaled for several processes: the warm-up's 0.01 scales with it)."""
    if opt.warm_up and epoch == 1:
        return WARM_UP_LR * (base_lr / opt.learning_rate)
    if opt.lr_schedule == "cosine":
        return cosine_lr_at(epoch, base_lr, opt.epochs)
    milestones = CHECKPOINTKD_MULTISTEP if opt.lr_schedule == "multistep" else parse_epochs(opt.lr_decay_epochs)
    return lr_at(epoch, base_lr, milestones, opt.lr_decay_rate)


def adjust_learning_rate(epoch: int, opt, optimizer, base_lr=None) -> float:
    """Set the lr of ``epoch``; ``base_lr`` replaces --learning_rate (e.g. scaled for several processes).

    Every schedule is a closed form of the epoch, so a resumed run continues it exactly."""
    base = opt.learning_rate if base_lr is None else base_lr
    lr = scheduled_lr(epoch, base, opt)
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr


def default_learning_rate(model_name: str) -> float:
    return 0.01 if model_name in SMALL_LR_MODELS else 0.05


def correct_topk(output: torch.Tensor, target: torch.Tensor, topk=(1, 5)):
    """Number of samples whose target is among the top-k predictions, as device tensors (no sync)."""
    maxk = min(max(topk), output.shape[1])
    pred = output.topk(maxk, dim=1).indices
    hit = pred.eq(target[:, None])
    return [hit[:, :min(k, maxk)].any(dim=1).sum() for k in topk]


def accuracy(output: torch.Tensor, target: torch.Tensor, topk=(1,)):
    """RepDistiller's helper: top-k accuracy in percent, one tensor per k."""
    return [c.float() * (100.0 / target.shape[0]) for c in correct_topk(output, target, topk)]


def at_least_float32(t: torch.Tensor) -> torch.Tensor:
    """``t`` upcast to float32 when it is of a lower precision (bf16/fp16 under autocast); float32 and float64
    tensors are returned as they are (the same object)."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def set_seed(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def device_names() -> list:
    """The --device values this torch build can mean (cuda:N stands for any GPU index)."""
    names = ["auto", "cpu", "cuda", "cuda:N"]
    if hasattr(torch.backends, "mps"):
        names.append("mps")
    return names


def unknown_device(name: str) -> Optional[str]:
    """Why ``name`` is no --device value, or None when it is one (whether this machine has it is checked later)."""
    known = device_names()
    if (name in known and name != "cuda:N") or re.fullmatch(r"cuda:\d+", name):
        return None
    return f"--device '{name}' is not a device; use one of {', '.join(known)}"


def select_device(name: str = "auto") -> torch.device:
    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    problem = unknown_device(name)
    if problem:
        # validation.py, search.py and select_teacher.py reach here without the training scripts' parse check
        raise ValueError(problem)
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine; use --device cpu")
    return dev
