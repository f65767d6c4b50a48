"""DOT, the Distillation-Oriented Trainer (Zhao et al., ICCV 2023): SGD with one momentum buffer for the task
gradient and one for the distillation gradient.

The distillation gradient gets the larger momentum (m + delta) and the task gradient the smaller one (m - delta),
so that the student follows the smoother distillation direction and the noisier task loss matters less. Use:
backward of the distillation loss, :meth:`DOT.record_kd_grads`, backward of the task loss, :meth:`DOT.step`.
"""
from __future__ import annotations

from typing import Dict, Optional

import torch


def accumulate(state, key: str, beta: float, d: torch.Tensor) -> torch.Tensor:
    """SGD momentum without dampening: the buffer starts as the first increment, then ``beta * buf + d``."""
    buf = state.get(key)
    if buf is None:
        buf = state[key] = torch.clone(d).detach()
    else:
        buf.mul_(beta).add_(d)
    return buf


class DOT(torch.optim.Optimizer):
    """Two-momentum SGD (one param group; dampening 0, no Nesterov, as the reference trainer).

    Per parameter with both gradients: ``b_task = (m - delta) b_task + g_task + wd theta``,
    ``b_kd = (m + delta) b_kd + g_kd``, ``theta -= lr b_task + lr b_kd`` (each buffer starts as its first
    increment). A parameter with only a task gradient steps as SGD with momentum m and weight decay; one with
    only a distillation gradient as SGD with momentum m and weight decay on its KD buffer, the first step
    included (the reference skips the decay there, which makes a KD-only parameter's first step differ from a
    task-only one's for no reason). State: ``momentum_buffer`` and ``momentum_kd_buffer``.
    """

    def __init__(self, params, lr: float, momentum: float = 0.9, delta: float = 0.075, weight_decay: float = 0.0):
        if not lr > 0:
            raise ValueError(f"DOT: the learning rate must be positive, got {lr}")
        if not 0.0 <= delta <= momentum:
            raise ValueError(f"DOT: delta must lie in [0, momentum={momentum}], got {delta}")
        if weight_decay < 0:
            raise ValueError(f"DOT: weight_decay must be non-negative, got {weight_decay}")
        super().__init__(params, dict(lr=lr, momentum=momentum, delta=delta, weight_decay=weight_decay))
        if len(self.param_groups) != 1:
            raise ValueError("DOT takes one param group (the buffers' momenta are the group's)")
        # the distillation gradients of the current step, taken off the parameters by record_kd_grads; keyed by
        # the parameter itself, so finding a parameter's KD gradient costs one dict look-up
        self.kd_grads: Dict[torch.Tensor, torch.Tensor] = {}

    def add_param_group(self, param_group):
        if self.param_groups:
            raise ValueError("DOT takes one param group (the buffers' momenta are the group's)")
        super().add_param_group(param_group)

    @torch.no_grad()
    def record_kd_grads(self) -> None:
        """Take the gradients now on the parameters as the distillation gradients of this step.

        Each gradient is moved off its parameter (``grad`` becomes None), so the task backward that follows
        starts from nothing whether or not the caller's ``zero_grad`` sets to None: zeroing in place would
        otherwise erase the recorded tensors.
        """
        for p in self.param_groups[0]["params"]:
            if p.grad is not None:
                self.kd_grads[p] = p.grad
                p.grad = None

    @torch.no_grad()
    def step(self, closure=None) -> Optional[torch.Tensor]:
        """Apply the task gradients now on the parameters and the recorded distillation gradients."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        group = self.param_groups[0]
        lr, m, delta, wd = group["lr"], group["momentum"], group["delta"], group["weight_decay"]
        kd_grads, self.kd_grads = self.kd_grads, {}
        for p in group["params"]:
            g_task = p.grad
            g_kd = kd_grads.get(p)
            if g_task is None and g_kd is None:
                continue
            state = self.state[p]
            if g_task is not None:
                d = g_task.add(p, alpha=wd) if wd != 0 else g_task
                buf = accumulate(state, "momentum_buffer", m - delta if g_kd is not None else m, d)
            if g_kd is not None:
                # weight decay enters once per parameter: on the task branch when there is one
                d_kd = g_kd.add(p, alpha=wd) if g_task is None and wd != 0 else g_kd
                kd_buf = accumulate(state, "momentum_kd_buffer", m + delta if g_task is not None else m, d_kd)
            # both increments from gradients at the old theta: a simultaneous update
            if g_task is not None:
                p.add_(buf, alpha=-lr)
            if g_kd is not None:
                p.add_(kd_buf, alpha=-lr)
        return loss
