"""Auxiliary modules of the two-stage feature methods: AB's connector, FT's paraphraser and translator.

Layer order and attribute names follow RepDistiller's ``models/util.py`` so that state-dict keys
(``connectors.0.conv.weight``, ``encoder.3.weight``, ...) are interchangeable with its checkpoints.
``models.util`` re-exports the three classes.
"""
from __future__ import annotations

from typing import Sequence

import torch.nn as nn

from .conv_reg import ConvReg

_SLOPE = 0.1  # LeakyReLU slope of both FT modules (RepDistiller)


def _norm(channels: int, use_bn: bool) -> nn.Module:
    # The parameter-free placeholder keeps the Sequential indices (hence the state-dict keys) the same
    # with and without BN.
    return nn.BatchNorm2d(channels) if use_bn else nn.Identity()


def _conv_stack(channels: Sequence[int], use_bn: bool, transposed: bool = False) -> nn.Sequential:
    """3x3, stride 1, 'same' padding convs, each followed by (BN or a placeholder) and LeakyReLU(0.1)."""
    conv = nn.ConvTranspose2d if transposed else nn.Conv2d
    layers = []
    for c_in, c_out in zip(channels[:-1], channels[1:]):
        layers += [conv(c_in, c_out, 3, 1, 1), _norm(c_out, use_bn), nn.LeakyReLU(_SLOPE, inplace=True)]
    return nn.Sequential(*layers)


class Paraphraser(nn.Module):
    """FT's teacher-side auto-encoder (Kim et al. 2018): 3 conv encoder to ``int(C*k)`` "factor"
    channels, 3 transposed-conv decoder back to C. Pre-trained on reconstruction, then frozen."""

    def __init__(self, t_shape, k: float = 0.5, use_bn: bool = False):
        super().__init__()
        c = int(t_shape[1])
        c_factor = int(c * k)
        self.encoder = _conv_stack([c, c, c_factor, c_factor], use_bn)
        self.decoder = _conv_stack([c_factor, c_factor, c, c], use_bn, transposed=True)

    def forward(self, f_t, is_factor: bool = False):
        factor = self.encoder(f_t)
        if is_factor:
            return factor
        return factor, self.decoder(factor)


class Translator(nn.Module):
    """FT's student-side encoder: maps the student feature to the paraphraser's factor width."""

    def __init__(self, s_shape, t_shape, k: float = 0.5, use_bn: bool = True):
        super().__init__()
        c_in = int(s_shape[1])
        c_factor = int(int(t_shape[1]) * k)
        self.encoder = _conv_stack([c_in, c_in, c_factor, c_factor], use_bn)

    def forward(self, f_s):
        return self.encoder(f_s)


class Connector(nn.Module):
    """AB's per-stage student-to-teacher adapters: identity where channels and height already agree,
    otherwise RepDistiller's ConvReg (conv + BN, no ReLU)."""

    def __init__(self, s_shapes, t_shapes):
        super().__init__()
        if len(s_shapes) != len(t_shapes):
            raise ValueError(f"Connector: {len(s_shapes)} student features but {len(t_shapes)} teacher features")
        self.s_shapes = s_shapes
        self.t_shapes = t_shapes
        self.connectors = nn.ModuleList([self._adapter(s, t) for s, t in zip(s_shapes, t_shapes)])

    @staticmethod
    def _adapter(s_shape, t_shape) -> nn.Module:
        if s_shape[1] == t_shape[1] and s_shape[2] == t_shape[2]:
            return nn.Identity()
        return ConvReg(s_shape, t_shape, use_relu=False)

    def forward(self, g_s):
        return [adapt(f) for adapt, f in zip(self.connectors, g_s)]
