"""Small helper modules shared by the distillation methods (regressors and embeddings).

Parameter names follow RepDistiller's ``models/util.py`` so that state dicts of the extra modules
load in either toolkit.
"""
from __future__ import annotations

import torch
import torch.nn as nn

# Re-exported: RepDistiller users import all of these from models.util.
from .connectors import Connector, Paraphraser, Translator  # noqa: F401
from .conv_reg import ConvReg  # noqa: F401


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


__all__ = ["ConvReg", "Connector", "Translator", "Paraphraser", "Embed", "LinearEmbed", "Normalize"]
