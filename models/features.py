"""The feature-list contract every CIFAR model's ``forward(x, is_feat, preact)`` shares (RepDistiller's).

``is_feat=True`` returns ``(feats, logits)``: the stem output, one map per stage and the pooled vector; with
``preact=True`` the stage maps are taken before their last ReLU. The pooled vector is the same in both lists.
"""
from __future__ import annotations

from typing import Iterable, List, Tuple

import torch
import torch.nn as nn


def run_stages(x: torch.Tensor, stages: Iterable[nn.Module]) -> Tuple[torch.Tensor, List[torch.Tensor],
                                                                       List[torch.Tensor]]:
    """Run stages that return ``(output, pre_activation)``; the feature lists start with the stem output ``x``."""
    post, pre = [x], [x]
    for stage in stages:
        x, x_pre = stage(x)
        post.append(x)
        pre.append(x_pre)
    return x, post, pre


def classify(pooled: torch.Tensor, post: List[torch.Tensor], pre: List[torch.Tensor], classifier: nn.Module,
             is_feat: bool, preact: bool):
    """Logits of the pooled vector, or ``(feats, logits)`` with the vector appended to the chosen list."""
    logits = classifier(pooled)
    if not is_feat:
        return logits
    feats = pre if preact else post
    feats.append(pooled)
    return feats, logits
