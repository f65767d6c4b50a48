"""The feature-list contract every CIFAR model's ``forward(x, is_feat, preact)`` shares (RepDistiller's), and
the capabilities the distillers ask a model for instead of testing its class.

``is_feat=True`` returns ``(feats, logits)``: the stem output, one map per stage and the pooled vector; with
``preact=True`` the stage maps are taken before their last ReLU. The pooled vector is the same in both lists.
``features(x)`` returns both lists from one forward (:class:`FeatureMaps`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, List, Optional, Tuple

import torch
import torch.nn as nn


@dataclass
class FeatureMaps:
    """One forward's logits and both RepDistiller feature lists (post-activation and pre-activation)."""

    logits: torch.Tensor
    post: List[torch.Tensor]
    pre: List[torch.Tensor]

    def as_forward(self, is_feat: bool, preact: bool):
        """What ``forward(x, is_feat, preact)`` returns: the logits, or ``(feats, logits)``."""
        if not is_feat:
            return self.logits
        return (self.pre if preact else self.post), self.logits


def run_stages(x: torch.Tensor, stages: Iterable[nn.Module]) -> Tuple[torch.Tensor, List[torch.Tensor],
                                                                       List[torch.Tensor]]:
    """Run stages that return ``(output, pre_activation)``; the feature lists start with the stem output ``x``."""
    post, pre = [x], [x]
    for stage in stages:
        x, x_pre = stage(x)
        post.append(x)
        pre.append(x_pre)
    return x, post, pre


def classify(pooled: torch.Tensor, post: List[torch.Tensor], pre: List[torch.Tensor],
             classifier: nn.Module) -> FeatureMaps:
    """Logits of the pooled vector, with the vector appended to both lists."""
    post.append(pooled)
    pre.append(pooled)
    return FeatureMaps(classifier(pooled), post, pre)


class ZooModel:
    """Mixin (listed before ``nn.Module``'s subclass) with the capabilities every zoo model answers.

    The defaults fit a network whose stages end in a ReLU that ``feat[-2]`` is taken after and whose
    ``features`` builds both lists anyway; a family that differs overrides the member concerned.
    """

    # How many stage maps feat[1..S] milestone checking compares (RepDistiller's three CIFAR stages).
    num_stages: int = 3
    # Blocks per stage of a variable-depth (my*) model and its family's nominal ones; None for fixed depths.
    block_depth: Optional[List[int]] = None
    nominal_depth: Optional[List[int]] = None
    # Channels of every stage map of the feature list, feat[1..]; None: found by a probe forward.
    stage_widths: Optional[Tuple[int, ...]] = None
    # The attribute holding the classifier that maps the pooled vector feat[-1] to the logits.
    classifier_attr: str = "fc"

    def features(self, x: torch.Tensor) -> FeatureMaps:
        raise NotImplementedError(f"{type(self).__name__} does not implement features(x)")

    def forward(self, x: torch.Tensor, is_feat: bool = False, preact: bool = False):
        return self.features(x).as_forward(is_feat, preact)

    def stage_channels(self) -> List[int]:
        """Channel counts of the stage maps ``feat[1..num_stages]``."""
        widths = self.stage_widths
        if widths is None:
            widths = self._probe_stage_widths()
        return [int(c) for c in widths[:self.num_stages]]

    def _probe_stage_widths(self) -> Tuple[int, ...]:
        # A family that does not declare its widths: read them off a tiny eval-mode forward, leaving the
        # training flag (and so the BN running statistics) as they were.
        param = next(self.parameters(), None)
        device = param.device if param is not None else None
        dtype = param.dtype if param is not None else None
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                feats, _ = self(torch.zeros(1, 3, 32, 32, device=device, dtype=dtype), is_feat=True)
        finally:
            self.train(was_training)
        return tuple(int(f.shape[1]) for f in feats[1:-1])

    def penultimate_map_module(self) -> Optional[nn.Module]:
        """The module whose output is the post-activation map feeding the pooling, where that map is not
        ``feat[-2]`` (ICKD hooks it); None where ``feat[-2]`` is that map, or stands for it."""
        return None

    def pooled_map_module(self) -> Optional[nn.Module]:
        """The module whose output is exactly the map the global average pooling turns into ``feat[-1]``, where
        that map is not ``feat[-2]`` (CAT-KD builds its class activation maps from it); None where it is."""
        return None

    def get_bn_before_relu(self) -> List[nn.Module]:
        raise NotImplementedError(f"{type(self).__name__} does not name the BNs before its stage ReLUs")

    def bn_channel_offsets(self) -> List[int]:
        """For each module of ``get_bn_before_relu()``, the index of the first channel it produces in its stage's
        pre-activation map. The default: each produces the whole map (offset 0). A family whose map also holds
        channels that no BN produces (ShuffleNetV2 passes half of them through from an earlier ReLU, so they
        are never negative) says where the BN's channels start."""
        return [0] * len(self.get_bn_before_relu())

    def classifier_module(self) -> nn.Module:
        """The classifier that turns the pooled vector ``feat[-1]`` into the logits (SimKD reuses a teacher's)."""
        return getattr(self, self.classifier_attr)

    def pooled_map(self, last_stage_map: torch.Tensor) -> torch.Tensor:
        """The map whose global average is the pooled vector ``feat[-1]``, computed from the last stage map
        ``feat[-2]``. The default: ``feat[-2]`` is that map. A family with a head between the two (WRN's BN-ReLU,
        MobileNetV2's and ShuffleNetV2's 1x1 conv) applies it here; in train mode that head's BatchNorm updates
        its running statistics, as in a forward."""
        return last_stage_map
