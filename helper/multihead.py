"""Evaluation of multi-exit networks (models with ``exit_logits(x)``, e.g. BYOT's multi_resnet*_kd).

``evaluate_exits`` returns what ``engine.evaluate.validate`` returns for the deepest exit (``acc``,
``acc_top5``, ``loss``) plus the top-1 of every exit (``acc_c1`` .. ``acc_cK``, deepest last, i.e. BYOT's
"classifier k/K") and of their ensemble (``acc_ensemble``: the mean of the exits' softmax probabilities).
The reference evaluates no ensemble; averaging probabilities is this toolkit's choice.
"""
from __future__ import annotations

from typing import Dict, List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .util import correct_topk


def is_multi_exit(model: nn.Module) -> bool:
    return callable(getattr(model, "exit_logits", None))


@torch.no_grad()
def evaluate_exits(model: nn.Module, split, opt, device: torch.device, autocast=None,
                   prepare=None, copy_outputs: bool = False) -> Dict[str, float]:
    """``copy_outputs``: copy each batch's exits before using them (CUDA graphs reuse their output memory,
    see ``engine.evaluate.validate``)."""
    model.eval()
    n_exits = None
    correct: Optional[torch.Tensor] = None
    ens = torch.zeros((), device=device)
    top5 = torch.zeros((), device=device)
    loss = torch.zeros((), device=device)
    for batch in split.eval_batches(opt.test_batch_size):
        x = prepare(batch.x, device) if prepare is not None else batch.x
        if autocast is not None:
            with autocast:
                exits: List[torch.Tensor] = model.exit_logits(x)
        else:
            exits = model.exit_logits(x)
        exits = [z.to(torch.float32, copy=copy_outputs) for z in exits]
        n_exits = len(exits)
        hits = torch.stack([(z.argmax(dim=1) == batch.y).sum() for z in exits])
        correct = hits if correct is None else correct + hits
        probs = torch.stack([F.softmax(z, dim=1) for z in exits]).mean(dim=0)
        ens += (probs.argmax(dim=1) == batch.y).sum()
        top5 += correct_topk(exits[-1], batch.y, (5,))[0]
        loss += F.cross_entropy(exits[-1], batch.y, reduction="sum")
    n = len(split)
    accs = (correct.float() * 100.0 / n).tolist()
    out = {"acc": accs[-1], "acc_top5": (top5 * 100.0 / n).item(), "loss": (loss / n).item()}
    for k in range(n_exits):
        out[f"acc_c{k + 1}"] = accs[k]
    out["acc_ensemble"] = (ens * 100.0 / n).item()
    return out


def exit_keys(row: Dict, prefix: str = "test_") -> List[str]:
    """The per-exit and ensemble keys present in a metrics row, in exit order."""
    keys = sorted((k for k in row if k.startswith(prefix + "acc_c") and k[len(prefix) + 5:].isdigit()),
                  key=lambda k: int(k[len(prefix) + 5:]))
    if prefix + "acc_ensemble" in row:
        keys.append(prefix + "acc_ensemble")
    return keys


def best_epoch_row(rows: List[Dict]) -> Optional[Dict]:
    """The first epoch row with the highest ``test_acc`` (the deepest exit), as BYOT picks its best epoch."""
    best = None
    for row in rows:
        if row.get("stage", "train") != "train" or "test_acc" not in row:
            continue
        if best is None or row["test_acc"] > best["test_acc"]:
            best = row
    return best


def exits_table(row: Dict, prefix: str = "test_") -> str:
    """A one-row markdown table like the BYOT README's ("Classifier 1/4 .. 4/4", plus the ensemble)."""
    keys = exit_keys(row, prefix)
    exits = [k for k in keys if not k.endswith("ensemble")]
    names = [f"Classifier {i}/{len(exits)}" for i in range(1, len(exits) + 1)] + ["Ensemble"] * (len(keys) > len(exits))
    head = "| epoch | " + " | ".join(names) + " |"
    rule = "|" + "---|" * (len(names) + 1)
    body = f"| {row.get('epoch', '')} | " + " | ".join(f"{row[k]:.2f}" for k in keys) + " |"
    return "\n".join([head, rule, body])
