"""Small helper modules shared by the distillation methods (regressors and embeddings).

Parameter names follow RepDistiller's ``models/util.py`` so that state dicts of the extra modules
load in either toolkit.
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


class Normalize(nn.Module):
    """Divide each row by its L_power norm (no epsilon, as in RepDistiller)."""

    def __init__(self, power: int = 2):
        super().__init__()
        self.power = power

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = x.pow(self.power).sum(dim=1, keepdim=True).pow(1.0 / self.power)
        return x / norm


class LinearEmbed(nn.Module):
    """Flatten, then one linear layer (the CC embedding)."""

    def __init__(self, dim_in: int = 1024, dim_out: int = 128):
        super().__init__()
        self.linear = nn.Linear(dim_in, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.reshape(x.shape[0], -1))


class Embed(nn.Module):
    """Flatten, one linear layer, then L2 normalisation (the CRD embedding)."""

    def __init__(self, dim_in: int = 1024, dim_out: int = 128):
        super().__init__()
        self.linear = nn.Linear(dim_in, dim_out)
        self.l2norm = Normalize(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.l2norm(self.linear(x.reshape(x.shape[0], -1)))


# Imported last: models/connectors.py builds on ConvReg defined above.
from .connectors import Connector, Translator, Paraphraser  # noqa: E402,F401
