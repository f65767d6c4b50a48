"""Multi-level logit distillation (MLKD, Jin et al., CVPR 2023), as its reference computes it (spec 1.7).

Every image comes in two views: the usual crop and flip (weak) and crop, flip, RandAugment(2) and Cutout (strong,
``Batch.x_strong``, made on the device); the student and the teacher each run on both. With ``T0 = --kd_T`` and the
reference's temperature list ``{T0, 3, 5, 2, 6}``, ``KD_T`` RepDistiller's KL (x T^2), ``p = softmax(z / T)``:

* ``ce`` (``-r``): ``CE(z_s^weak, y) + CE(z_s^strong, y)``;
* ``kd`` (``-b``, the reference's KD weight 0.9):
  ``f_b * sum_T KD_T(weak)`` + ``KD_T0 + KD_3 + KD_5`` on the strong view + ``KD_2 + KD_6`` on the weak view again
  + ``f_c * sum_T CC_T(weak)`` + ``f_b * sum_T BC_T(weak)``, with the class correlation
  ``CC_T = sum((P_t^T P_t - P_s^T P_s)^2) / C`` and the batch correlation ``BC_T = sum((P_t P_t^T - P_s P_s^T)^2) / B``;
* ``kl`` (``-a``, 0 by default): the plain weak-view KL, which the ``kd`` term already holds.

``f_b`` and ``f_c`` are the fractions of samples (classes) whose teacher confidence on the weak view (max softmax;
summed softmax over the batch) is at most its median (numpy's linear-interpolation percentile).

Reproduced from the reference (spec 1.7 bugs 1-4): the confidence masks multiply already-reduced terms, so they act
as the scalars f_b, f_c; the strong-view sum holds two weak-view terms (T 2 and 6); the strong view's CC and BC are
not in the loss; long schedules keep the 150/180/210 milestones. Its unused ``termios``/``turtle`` imports (bug 5)
have no counterpart here. With ``--logit_stand`` the logits are standardised inside the KD terms only, CC and BC
keep the raw ones, and T0 becomes the LS base temperature (so T 2 appears twice), as in the LS repository.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from helper.util import SMALL_LR_MODELS

from .base import Distiller, kd_kl, register

# the reference's temperature list; its first entry is KD.TEMPERATURE (--kd_T here)
EXTRA_TEMPERATURES = (3.0, 5.0, 2.0, 6.0)
STRONG_VIEW_TEMPERATURES = 3  # T0, 3 and 5 on the strong view
WEAK_AGAIN_TEMPERATURES = (2.0, 6.0)  # the two weak-view terms inside the reference's strong-view sum

# (teacher, student) -> (epochs, lr): the MLKD repository's CIFAR-100 configs (configs/cifar100/ours/, spec 1.7);
# milestones stay 150/180/210 whatever the epoch count
PAIRS: Dict[Tuple[str, str], Tuple[int, float]] = {
    ("resnet32x4", "resnet8x4"): (240, 0.025), ("resnet56", "resnet20"): (240, 0.025),
    ("resnet110", "resnet32"): (240, 0.025), ("wrn_40_2", "wrn_16_2"): (240, 0.025),
    ("wrn_40_2", "wrn_40_1"): (240, 0.025), ("vgg13", "vgg8"): (240, 0.025),
    ("vgg13", "MobileNetV2"): (480, 0.01), ("ResNet50", "MobileNetV2"): (480, 0.01),
    ("wrn_40_2", "ShuffleV1"): (480, 0.01), ("resnet32x4", "ShuffleV1"): (960, 0.01),
    ("resnet32x4", "ShuffleV2"): (960, 0.01),
}
# the LS repository's MLKD configs (configs/cifar100/mlkd/), which its MLKD and MLKD+LS numbers come from
LONG_PAIRS: Dict[Tuple[str, str], Tuple[int, float]] = {
    **{pair: (480, 0.025) for pair in [
        ("resnet32x4", "resnet8x4"), ("resnet56", "resnet20"), ("resnet110", "resnet32"), ("resnet110", "resnet20"),
        ("wrn_40_2", "wrn_16_2"), ("wrn_40_2", "wrn_40_1"), ("wrn_40_2", "resnet8x4"), ("resnet32x4", "vgg8"),
        ("resnet32x4", "wrn_16_2"), ("resnet32x4", "wrn_40_2")]},
    ("vgg13", "vgg8"): (480, 0.01), ("vgg13", "MobileNetV2"): (480, 0.01), ("ResNet50", "MobileNetV2"): (480, 0.01),
    ("wrn_40_2", "ShuffleV1"): (480, 0.01), ("resnet32x4", "ShuffleV1"): (960, 0.01),
    ("resnet32x4", "ShuffleV2"): (960, 0.01), ("wrn_40_2", "MobileNetV2"): (480, 0.005),
}
LONG_EPOCHS = 480


def other_pair_lr(student: str) -> float:
    """Every MLKD config uses lr 0.025, or 0.01 for MobileNetV2/ShuffleNet students."""
    return 0.01 if student in SMALL_LR_MODELS else 0.025


def pair_recipe(table, teacher: Optional[str], student: str, epochs: Optional[int]) -> dict:
    if (teacher, student) in table:
        e, lr = table[(teacher, student)]
        return {"epochs": e, "learning_rate": lr}
    out = {"learning_rate": other_pair_lr(student)}
    if epochs is not None:
        out["epochs"] = epochs
    return out


def long_recipe(teacher: Optional[str], student: str) -> dict:
    """``--recipe long``: 480 epochs (960 for resnet32x4 -> ShuffleV1/V2) and the LS repository's lr per pair."""
    return pair_recipe(LONG_PAIRS, teacher, student, LONG_EPOCHS)


def class_correlation(p_s: torch.Tensor, p_t: torch.Tensor) -> torch.Tensor:
    """``sum((P_t^T P_t - P_s^T P_s)^2) / C``: the C x C Gram matrices of the probabilities."""
    diff = p_t.t() @ p_t - p_s.t() @ p_s
    return diff.pow(2).sum() / p_s.shape[1]


def batch_correlation(p_s: torch.Tensor, p_t: torch.Tensor) -> torch.Tensor:
    """``sum((P_t P_t^T - P_s P_s^T)^2) / B``: the B x B Gram matrices of the probabilities."""
    diff = p_t @ p_t.t() - p_s @ p_s.t()
    return diff.pow(2).sum() / p_s.shape[0]


def at_most_median_fraction(values: torch.Tensor) -> torch.Tensor:
    """The fraction of ``values`` at or below their median (linear interpolation, as numpy's 50th percentile);
    on the device, without a host sync."""
    v = values.double()
    ordered = v.sort().values
    n = ordered.numel()
    low, high = ordered[(n - 1) // 2], ordered[n // 2]
    median = low + (high - low) * 0.5  # numpy's lerp at position (n - 1) / 2
    return (v <= median).double().mean().to(values.dtype)


def mlkd_kd_terms(s_weak: torch.Tensor, t_weak: torch.Tensor, s_strong: torch.Tensor, t_strong: torch.Tensor,
                  temperatures: Sequence[float], f_b) -> torch.Tensor:
    """The KD part of the ``kd`` term on (possibly standardised) logits; ``temperatures[0]`` is T0."""
    weak = sum(kd_kl(s_weak, t_weak, T) for T in temperatures)
    strong = sum(kd_kl(s_strong, t_strong, T) for T in temperatures[:STRONG_VIEW_TEMPERATURES])
    weak_again = sum(kd_kl(s_weak, t_weak, T) for T in WEAK_AGAIN_TEMPERATURES)
    return f_b * weak + strong + weak_again


def mlkd_relation_terms(s_weak: torch.Tensor, t_weak: torch.Tensor, temperatures: Sequence[float], f_b, f_c):
    """``f_c * sum_T CC_T + f_b * sum_T BC_T`` on the raw weak-view logits."""
    cc = bc = 0.0
    for T in temperatures:
        p_s, p_t = F.softmax(s_weak / T, dim=1), F.softmax(t_weak / T, dim=1)
        cc = cc + class_correlation(p_s, p_t)
        bc = bc + batch_correlation(p_s, p_t)
    return f_c * cc + f_b * bc


def confidence_fractions(t_weak: torch.Tensor):
    """``(f_b, f_c)`` from the teacher's weak-view softmax: samples and classes at or below the median
    confidence."""
    probs = F.softmax(t_weak, dim=1)
    return at_most_median_fraction(probs.max(dim=1).values), at_most_median_fraction(probs.sum(dim=0))


@register("mlkd")
class MLKD(Distiller):
    """MLKD on two views of every batch (see the module docstring); the loss is ``-r`` ce + ``-b`` kd."""

    softens_logits = True  # --logit_stand standardises its KD terms
    strong_view = True
    # the reference's CE 0.1 and KD 0.9; its configs' lr and epochs per pair are presets (defaults_for)
    defaults = {"gamma": 0.1, "alpha": 0.0, "beta": 0.9}
    recipes = {"long": long_recipe}

    @classmethod
    def defaults_for(cls, teacher: Optional[str], student: str) -> dict:
        return pair_recipe(PAIRS, teacher, student, None)

    def temperatures(self) -> Tuple[float, ...]:
        return (self.T,) + EXTRA_TEMPERATURES

    def loss(self, out_s, out_t, batch, epoch):
        s_weak, s_strong = out_s.logits, out_s.strong.logits
        t_weak, t_strong = out_t.logits.detach(), out_t.strong.logits.detach()
        temperatures = self.temperatures()
        f_b, f_c = confidence_fractions(t_weak)
        sw, tw = self.distill_logits(s_weak, t_weak)
        ss, ts = self.distill_logits(s_strong, t_strong)
        kd = mlkd_kd_terms(sw, tw, ss, ts, temperatures, f_b)
        return {"ce": F.cross_entropy(s_weak, batch.y) + F.cross_entropy(s_strong, batch.y),
                "kl": self.kl_term(s_weak, t_weak),
                "kd": kd + mlkd_relation_terms(s_weak, t_weak, temperatures, f_b, f_c)}
