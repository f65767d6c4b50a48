"""BYOT, "Be Your Own Teacher" self-distillation (Zhang et al. 2019), as in luanyunteng/pytorch-be-your-own-teacher.

No separate teacher: the deepest classifier of a multi-exit student (``multi_resnet18_kd``/``multi_resnet50_kd``)
teaches the three shallow branch classifiers. With z4 the deepest logits, z1..z3 the branch logits, f4 and
f1..f3 the pooled (B, 512e) features of the deepest and the branch classifiers, and sg() a stop-gradient:

    L = (1 - alpha) * sum_{k=1..4} CE(z_k, y)
        + alpha * sum_{k=1..3} T^2 * mean_b[ -sum_c softmax(sg(z4) / T)_c * log_softmax(z_k / T)_c ]
        + beta * sum_{k=1..3} sum_{b,d} (f_k - sg(f4))^2 * 1[(f_k > 0) or (sg(f4) > 0)]

(reference: alpha 0.1, T 3, beta 1e-6). The middle term is the reference's soft-target cross-entropy, not a
KL: same gradient, but its value is higher by the entropy of the softened deepest classifier. The feature
term is a sum over batch and channels, so beta is tied to the batch size (128) and width; its mask never
removes a non-zero entry here (both features are non-negative, post-ReLU then pooled) and is kept as written.

The three sums are returned as the loop's ``ce``, ``kl`` and ``kd`` terms, weighted by ``-r``, ``-a``, ``-b``:
the reference is ``-r 0.9 -a 0.1 -b 1e-6`` (``-r`` = 1 - alpha), the default when none of the three is given.
Give ``-r`` and ``-a`` together to change alpha (``-a`` alone leaves ``-r`` at 1).

``recipe`` holds the reference's training set-up, used for options the user did not give: 200 epochs, lr 0.1
decayed x0.1 after epochs 75/130/180 (this toolkit counts epochs from 1; the reference's 0-indexed epoch e
is epoch e+1 here, so its lr 0.01 from epoch index 75 on is "after 75"), batch 128, T 3, and the CIFAR-10
normalisation constants the reference applies to CIFAR-100 (``--data_norm byot``). SGD momentum 0.9 and
weight decay 5e-4 are the toolkit defaults.

Fixed here (spec 2.6): the per-term meters held autograd graphs (every number kept per step is detached),
``--resume`` repeated the checkpoint's epoch (the toolkit resumes at the next one) and validation ran
without ``no_grad``.
"""
from __future__ import annotations

from typing import Dict, List

import torch
import torch.nn.functional as F

from .base import Distiller, POST, register


def soft_target_ce(logits: torch.Tensor, target_probs: torch.Tensor, T: float) -> torch.Tensor:
    """``-mean_b sum_c target_probs * log_softmax(logits / T)`` (the reference's ``kd_loss_function``)."""
    return -(target_probs * F.log_softmax(logits / T, dim=1)).sum(dim=1).mean()


def masked_feature_sse(fea: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Sum of squared differences where either feature is positive (the reference's ``feature_loss_function``)."""
    mask = ((fea > 0) | (target > 0)).to(fea.dtype)
    return ((fea - target) ** 2 * mask).sum()


def byot_terms(exits: List[torch.Tensor], branch_feats: List[torch.Tensor], final_feat: torch.Tensor,
               y: torch.Tensor, T: float) -> Dict[str, torch.Tensor]:
    """The three unweighted BYOT sums. ``exits`` = [z1, z2, z3, z4] (deepest last)."""
    exits = [z.float() for z in exits]
    deepest = exits[-1]
    ce = sum(F.cross_entropy(z, y) for z in exits)
    p4 = F.softmax(deepest.detach() / T, dim=1)
    kl = sum(soft_target_ce(z, p4, T) for z in exits[:-1]) * (T ** 2)
    target = final_feat.detach().float()
    kd = sum(masked_feature_sse(f.float(), target) for f in branch_feats)
    return {"ce": ce, "kl": kl, "kd": kd}


@register("byot")
class BYOT(Distiller):
    """Self-distillation of a multi-exit student; no teacher. Reports every exit's training accuracy."""

    student_features = teacher_features = POST
    needs_teacher = False
    defaults = {"gamma": 0.9, "alpha": 0.1, "beta": 1e-6,
                "epochs": 200, "learning_rate": 0.1, "lr_decay_epochs": "75,130,180", "lr_decay_rate": 0.1,
                "batch_size": 128, "kd_T": 3.0, "data_norm": "byot"}

    def __init__(self, ctx):
        super().__init__(ctx)
        student = ctx.student
        if not (hasattr(student, "branch_outputs") and hasattr(student, "exit_logits")):
            raise ValueError("--distill byot needs a multi-exit student (multi_resnet18_kd or multi_resnet50_kd), "
                             f"got {type(student).__name__}")
        # A plain attribute, not a submodule: the student's parameters are already in the optimizer and
        # in the checkpoint's 'model' entry.
        self.__dict__["_student"] = student
        self._reset_counts()

    def _reset_counts(self):
        self._correct = None
        self._seen = 0

    def trainable_modules(self):
        return []

    def loss(self, out_s, out_t, batch, epoch):
        branch_logits, branch_feats = self._student.branch_outputs(out_s.feats)
        exits = branch_logits + [out_s.logits]
        with torch.no_grad():
            hits = torch.stack([(z.argmax(dim=1) == batch.y).sum() for z in exits])
            self._correct = hits if self._correct is None else self._correct + hits
            self._seen += int(batch.y.shape[0])
        return byot_terms(exits, branch_feats, out_s.feats[-1], batch.y, self.T)

    def epoch_metrics(self) -> Dict[str, float]:
        if self._correct is None or self._seen == 0:
            return {}
        acc = (self._correct.float() * 100.0 / self._seen).tolist()
        self._reset_counts()
        return {f"train_acc_c{k}": a for k, a in enumerate(acc, start=1)}
