"""How the engine runs a network: memory format, autocast, and the feature lists a method asked for."""
from __future__ import annotations

import contextlib
from typing import Dict, Iterable, Optional

import torch
import torch.nn as nn

from distiller_zoo.base import POST, PRE
from helper.types import Outputs


def use_channels_last(opt, device: torch.device) -> bool:
    flag = opt.channels_last
    return device.type == "cuda" if flag is None else bool(flag)


def autocast_for(opt, device: torch.device):
    if opt.amp:
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def prepare_input(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def network_outputs(model: nn.Module, x: torch.Tensor, kinds: Iterable[Optional[str]]) -> Dict[Optional[str], Outputs]:
    """One forward of ``model`` serving every requested feature kind (None: logits only, POST, PRE).

    A single list uses RepDistiller's call (``is_feat=True``, ``preact`` for PRE), so a compiled network runs
    its compiled forward; both lists at once (a student and a teacher method that read different ones, or
    side-by-side methods) come from the model's ``features(x)``, one forward for the two.
    """
    kinds = set(kinds)
    lists = kinds - {None}
    if not lists:
        return {None: Outputs(logits=model(x))}
    if lists == {POST} or lists == {PRE}:
        f, logits = model(x, is_feat=True, preact=lists == {PRE})
        feats = {lists.pop(): list(f)}
    else:
        maps = model.features(x)
        logits, feats = maps.logits, {POST: list(maps.post), PRE: list(maps.pre)}
    return {kind: Outputs(logits=logits, feats=None if kind is None else feats[kind]) for kind in kinds}


def forward(model: nn.Module, x: torch.Tensor, kind: Optional[str] = None) -> Outputs:
    """``model``'s logits and the one feature list ``kind`` (None, POST or PRE)."""
    return network_outputs(model, x, [kind])[kind]


def teacher_outputs(teacher: nn.Module, x: torch.Tensor, kinds: Iterable[Optional[str]]
                    ) -> Dict[Optional[str], Outputs]:
    """The frozen teacher's forward (:func:`network_outputs`) under inference_mode (no autograd bookkeeping).

    The results are copied out of inference mode: the method losses save them for their backward, which
    inference tensors do not allow. The copies are a few logits and feature maps, not the activations; a
    tensor two kinds share is copied once.
    """
    with torch.inference_mode():
        outs = network_outputs(teacher, x, kinds)
    copies: Dict[int, torch.Tensor] = {}

    def copied(t: torch.Tensor) -> torch.Tensor:
        if id(t) not in copies:
            copies[id(t)] = t.clone()
        return copies[id(t)]

    return {k: Outputs(logits=copied(o.logits), feats=None if o.feats is None else [copied(f) for f in o.feats])
            for k, o in outs.items()}
