"""EMKD's milestone checking (MC): a per-stage feature KL added on top of any distillation method.

For every stage output i = 1..S of ``feat`` (S = 3 for CIFAR ResNets, WRNs, VGG, MobileNet, ShuffleNet;
4 for the 4-stage ResNet18/34/50 family and for 4-stage ``block_depth`` students):

    MC_i = (T^2 / B) * sum_{b,h,w} KL( softmax_c(F_t[b,:,h,w] / T) || softmax_c(F_s[b,:,h,w] / T) )

i.e. RepDistiller's logit KL applied to the channel dimension at every position (T = ``--kd_T``, teacher
detached). The weighted sum ``mc_weight * sum_i B_i * MC_i`` is added to the wrapped method's ``kd`` term,
exactly where EMKD adds it, so ``-b`` scales it too (EMKD's KD+MC line with ``-a 0 -b 0.8`` therefore
trains with CE + 0.8 * mc_weight * MC). ``B_i = nominal depth / actual depth`` of stage i for students
built with ``block_depth`` (``myresnet20 --block_depth 3,7,2`` gives (1, 3/7, 1.5)); other students use
``--B{i}_weight`` (1 by default).

Features come from the same forward the wrapped method uses, so with ``--distill abound`` (pre-activation
features) MC compares pre-ReLU stage outputs, as in EMKD. For WRN they are the raw (pre-BN) block outputs.
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import torch
import torch.nn as nn

from helper.option import Option

from .base import POST, Batch, DistillContext, Distiller, MethodWrapper, Outputs, kd_kl, register_addon


def num_stages(model: nn.Module) -> int:
    """How many stage outputs (``feat[1..S]``) milestone checking compares for this network (its capability)."""
    return int(model.num_stages)


def stage_weights(model: nn.Module, fallback: Sequence[float]) -> List[float]:
    """``nominal / actual`` blocks per stage for ``block_depth`` models, else ``fallback``."""
    n = num_stages(model)
    depth = model.block_depth
    nominal = model.nominal_depth
    if depth and nominal:
        return [float(a) / float(b) for a, b in zip(nominal, depth)]
    if len(fallback) < n:
        raise ValueError(f"milestone checking needs {n} stage weights, got {len(fallback)}")
    return [float(w) for w in fallback[:n]]


def milestone_loss(feats_s: Sequence[torch.Tensor], feats_t: Sequence[torch.Tensor], weights: Sequence[float],
                   T: float) -> torch.Tensor:
    """``sum_i weights[i-1] * KL_T(feats_s[i], feats_t[i])`` over the stage outputs i = 1..len(weights)."""
    total = None
    for i, w in enumerate(weights, start=1):
        term = kd_kl(feats_s[i].float(), feats_t[i].detach().float(), T) * w
        total = term if total is None else total + term
    return total


def check_stage_shapes(feat_s: Sequence[torch.Tensor], feat_t: Sequence[torch.Tensor], n: int) -> None:
    problems = []
    if len(feat_s) < n + 1 or len(feat_t) < n + 1:
        raise ValueError(f"milestone checking compares feat[1..{n}], but the student returns {len(feat_s)} "
                         f"features and the teacher {len(feat_t)}")
    for i in range(1, n + 1):
        if tuple(feat_s[i].shape[1:]) != tuple(feat_t[i].shape[1:]):
            problems.append(f"stage {i}: student {tuple(feat_s[i].shape[1:])} vs teacher {tuple(feat_t[i].shape[1:])}")
    if problems:
        raise ValueError("milestone checking (--mc 1) needs student and teacher stage outputs of identical shape "
                         "(channels, height, width); " + "; ".join(problems)
                         + ". Pick a teacher/student pair of equal widths (e.g. resnet110 -> myresnet20).")


MC_GROUP = "EMKD milestone checking and evaluation"


@register_addon
class MilestoneChecking(MethodWrapper):
    """Wraps a built distiller and adds MC to its ``kd`` term; everything else is the wrapped method's.

    The wrapped method's trainable modules, init stage and state stay its own (under ``inner.`` in the
    state dict).
    """

    student_features = teacher_features = POST
    attach_order = 10  # wraps the method as it is built (after add-ons that change its terms)
    run_suffix = "_mc"
    flag = "--mc"
    options = Distiller.options + (
        Option("mc", int, 0, "1: add the per-stage feature KL (milestone checking) to the method loss",
               choices=[0, 1], group=MC_GROUP),
        Option("mc_weight", float, 0.001, "weight of milestone checking", group=MC_GROUP),
    ) + tuple(Option(f"B{i}_weight", float, 1.0, f"stage-{i} milestone weight for students without block_depth "
                     "(my* students use nominal/actual depth)", group=MC_GROUP) for i in range(1, 5))

    def __init__(self, inner: Distiller, ctx: DistillContext, mc_weight: Optional[float] = None,
                 weights: Optional[Sequence[float]] = None):
        """``ctx.options``: this add-on's typed options (``MilestoneChecking.select_options``)."""
        if ctx.teacher is None or ctx.feat_s is None or ctx.feat_t is None:
            raise ValueError(f"milestone checking (--mc 1) compares student and teacher stage outputs; "
                             f"'{inner.name}' trains without a teacher")
        super().__init__(inner, ctx)
        opt = ctx.options
        self.name = f"{inner.name}+mc"
        # the stage outputs of the lists the wrapped method reads (pre-activation ones for abound, as in EMKD)
        self.student_features = inner.student_features or POST
        self.teacher_features = inner.teacher_features or POST
        self.needs_teacher = True
        self.mc_weight = float(opt.mc_weight if mc_weight is None else mc_weight)
        self.n_stages = num_stages(ctx.student)
        check_stage_shapes(ctx.feat_s, ctx.feat_t, self.n_stages)
        if weights is None:
            fallback = [float(opt.B1_weight), float(opt.B2_weight), float(opt.B3_weight), float(opt.B4_weight)]
            weights = stage_weights(ctx.student, fallback)
        if len(weights) != self.n_stages:
            raise ValueError(f"milestone checking: {self.n_stages} stages but {len(weights)} weights")
        self.stage_weights = [float(w) for w in weights]

    @classmethod
    def enabled(cls, values) -> bool:
        return bool(values.mc)

    @classmethod
    def refusal(cls, method_cls) -> Optional[str]:
        # a method without a teacher is refused when the wrapper is built (it has no teacher stage outputs)
        return None

    @classmethod
    def defaults_for(cls, method_cls, teacher: Optional[str], student: str) -> dict:
        return {}

    @classmethod
    def attach(cls, distiller: Distiller, ctx: DistillContext) -> Distiller:
        return cls(distiller, ctx)

    def mc_loss(self, out_s: Outputs, out_t: Outputs) -> torch.Tensor:
        return milestone_loss(out_s.feats, out_t.feats, self.stage_weights, self.T)

    def loss(self, out_s: Outputs, out_t: Optional[Outputs], batch: Batch, epoch: int):
        terms = dict(self.inner.loss(out_s, out_t, batch, epoch))
        if out_t is None:
            return terms
        mc = self.mc_weight * self.mc_loss(out_s, out_t)
        terms["kd"] = terms["kd"] + mc if "kd" in terms else mc
        return terms

