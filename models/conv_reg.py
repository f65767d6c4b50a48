"""FitNet's regressor (ConvReg), in its own module so that models.util and models.connectors (AB's Connector
builds on it) both import it at the top without importing each other.

Parameter names follow RepDistiller's ``models/util.py`` (``conv``, ``bn``) so state dicts load in either toolkit.
"""
from __future__ import annotations

import torch
import torch.nn as nn


class ConvReg(nn.Module):
    """FitNet regressor: maps a student feature map onto the teacher's shape, then BN (+ ReLU).

    The spatial match is chosen from the heights only (RepDistiller's rule):

    * student twice as tall as the teacher: 3x3 conv, stride 2;
    * student half as tall: 4x4 transposed conv, stride 2;
    * student at least as tall: a "valid" conv of kernel (1+dH) x (1+dW);
    * anything else cannot be regressed. RepDistiller raises ``NotImplemented(...)`` there, which
      is not callable and ends in a ``TypeError``; this raises ``ValueError`` instead, the error
      the method contract uses for invalid combinations.

    ``s_shape``/``t_shape`` are 4-D shapes (N, C, H, W); N is ignored.
    """

    def __init__(self, s_shape, t_shape, use_relu: bool = True):
        super().__init__()
        if len(s_shape) != 4 or len(t_shape) != 4:
            raise ValueError(f"ConvReg needs 4-D feature shapes, got student {tuple(s_shape)} "
                             f"and teacher {tuple(t_shape)}")
        _, s_c, s_h, s_w = (int(v) for v in s_shape)
        _, t_c, t_h, t_w = (int(v) for v in t_shape)
        self.use_relu = use_relu
        if s_h == 2 * t_h:
            self.conv = nn.Conv2d(s_c, t_c, kernel_size=3, stride=2, padding=1)
        elif 2 * s_h == t_h:
            self.conv = nn.ConvTranspose2d(s_c, t_c, kernel_size=4, stride=2, padding=1)
        elif s_h >= t_h:
            self.conv = nn.Conv2d(s_c, t_c, kernel_size=(1 + s_h - t_h, 1 + s_w - t_w))
        else:
            raise ValueError(f"ConvReg cannot map a student map of height {s_h} "
                             f"onto a teacher map of height {t_h}")
        self.bn = nn.BatchNorm2d(t_c)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn(self.conv(x))
        return self.relu(y) if self.use_relu else y
