"""Xu et al. 2020, "Knowledge Distillation Meets Self-Supervision" (SSKD, ECCV; ``--distill sskd``), as the original
CIFAR code (in its EMKD fork) and torchdistill's ``AuxSSKDLoss``/``SSKDLoss`` define it.

Every training batch of N images becomes 4N rows, image i turned counter-clockwise by k x 90 degrees at row 4i + k
(:data:`ROTATIONS`, the method's ``batch_expansion``: the engine runs both networks on these rows). A
self-supervision head ``Linear(K, K) -> ReLU -> Linear(K, K)`` on the pooled feature (K its width) is added to each
network; a head's outputs give the 3N x N cosine similarities between the rotated rows and the upright ones, whose
correct column is the row's own image.

Two stages:

1. the init stage (``--init_epochs`` 60): the teacher's head alone learns to find each rotated row's image,
   ``CE(S_t, own image)`` on its cosine matrix, at ``--sskd_init_lr`` 0.05 (the reference's, whatever the
   student's lr) decayed x0.1 after half and after three quarters of the stage (the reference's 30 and 45 of 60);
2. the student with its own head: ``-r 0.1`` CE and ``-a 0.9`` KL at ``--kd_T`` 4 on the upright rows, and as the
   ``kd`` term (``-b 1``) ``2.7 * L_tf + 10 * L_ss``:

   * ``L_tf``: KL at T 4 (times T^2) between the teacher's and the student's logits of the rotated rows, over the
     rows where the teacher ranks the true label first plus the ``int(ratio * #wrong)`` others of smallest rank
     (``--sskd_tf_ratio`` 1: all rows);
   * ``L_ss``: KL at T 0.5 (times T^2) between the softmaxed cosine rows of the teacher's (frozen) head and of the
     student's, over the rows where the teacher's head finds the image plus the ``int(0.75 * #wrong)`` others of
     smallest rank.

Implementation notes: a row's rank is the number of scores strictly above the true one (the references use a
non-stable argsort, so which row survives a tie is theirs to choose; ties are ranked in the row's favour here and
equal ranks keep their order). The kept rows are a mask, so nothing waits for the device. The four views share the
batch's one random crop and flip (the original crops each view separately after rotating the raw image; a single
view's distribution is the same). A selection that keeps no row contributes 0 (the references would divide by 0).
"""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from helper.option import Option
from helper.types import BatchExpansion
from helper.util import at_least_float32

from .base import Batch, Distiller, Outputs, POST, register

SSKD_GROUP = "SSKD (--distill sskd)"
VIEWS = 4


def four_rotations(x: torch.Tensor) -> torch.Tensor:
    """[N, C, H, W] -> [4N, C, H, W]: row 4i + k is image i turned counter-clockwise by k x 90 degrees."""
    if x.shape[-1] != x.shape[-2]:
        raise ValueError(f"--distill sskd rotates the images by 90 degrees, so they must be square; got "
                         f"{x.shape[-2]}x{x.shape[-1]}")
    views = torch.stack([torch.rot90(x, k, dims=(-2, -1)) for k in range(VIEWS)], dim=1)
    return views.reshape(-1, *x.shape[1:])


def upright_rows(t: torch.Tensor) -> torch.Tensor:
    """The rows of the unrotated images (4i) of an output of :func:`four_rotations`' rows."""
    return t[0::VIEWS]


ROTATIONS = BatchExpansion("four rotations of each image (rows 4i+k)", four_rotations, upright_rows)


def split_views(t: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(upright [N, ...], rotated [3N, ...])`` of 4N rows; the rotated ones image-major (row a is image a // 3)."""
    grouped = t.reshape(t.shape[0] // VIEWS, VIEWS, *t.shape[1:])
    return grouped[:, 0], grouped[:, 1:].reshape(-1, *t.shape[1:])


def rotation_similarities(head_outputs: torch.Tensor) -> torch.Tensor:
    """The 3N x N cosine similarities between the rotated rows' and the upright rows' head outputs."""
    upright, rotated = split_views(at_least_float32(head_outputs))
    return F.cosine_similarity(rotated.unsqueeze(1), upright.unsqueeze(0), dim=2)


def true_rank(scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per row, how many scores lie strictly above the target's (0: the target ranks first)."""
    return (scores > scores.gather(1, target[:, None])).sum(dim=1)


def kept_rows(rank: torch.Tensor, ratio: float) -> torch.Tensor:
    """A 0/1 mask of the rows the error-level ranking keeps: every row of rank 0, and of the others the
    ``int(ratio * #others)`` of smallest rank (equal ranks in row order)."""
    wrong = (rank > 0).sum()
    # float64, so that int(ratio * n) rounds as the reference's Python float does (0.7 * 10 is 7, not 6.99..)
    keep = (rank.numel() - wrong) + torch.floor(wrong.double() * ratio)
    order = torch.sort(rank, stable=True).indices
    position = torch.empty_like(order).scatter_(0, order, torch.arange(rank.numel(), device=rank.device))
    return (position < keep).to(torch.float32)


def masked_kl(logit_s: torch.Tensor, logit_t: torch.Tensor, T: float, mask: torch.Tensor) -> torch.Tensor:
    """``T^2 * KL(softmax(z_t/T) || softmax(z_s/T))`` summed over classes and averaged over the kept rows."""
    per_row = F.kl_div(F.log_softmax(logit_s / T, dim=1), F.softmax(logit_t / T, dim=1), reduction="none").sum(1)
    return T * T * (per_row * mask).sum() / mask.sum().clamp(min=1.0)


def self_supervision_head(width: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(width, width), nn.ReLU(inplace=True), nn.Linear(width, width))


def pooled(out: Outputs) -> torch.Tensor:
    return out.feats[-1].flatten(1)


@register("sskd")
class SSKD(Distiller):
    """SSKD (see the module docstring). Trainable: the teacher's head in the init stage, the student's head with the
    student in the main stage; both heads are saved and resumed with the run and discarded at deployment."""

    student_features = teacher_features = POST
    batch_expansion = ROTATIONS
    # the original CIFAR recipe: CE 0.1, KL 0.9 (T 4), the teacher's head trained for 60 epochs first
    defaults = {"gamma": 0.1, "alpha": 0.9, "beta": 1.0, "init_epochs": 60}
    options = Distiller.options + (
        Option("sskd_tf_weight", float, 2.7, "SSKD: weight of the transformation term (KL on the rotated rows) "
               "inside its -b term", group=SSKD_GROUP),
        Option("sskd_ss_weight", float, 10.0, "SSKD: weight of the self-supervision term (KL on the heads' cosine "
               "similarities) inside its -b term", group=SSKD_GROUP),
        Option("sskd_tf_T", float, 4.0, "SSKD: temperature of the transformation term", group=SSKD_GROUP),
        Option("sskd_ss_T", float, 0.5, "SSKD: temperature of the self-supervision term", group=SSKD_GROUP),
        Option("sskd_tf_ratio", float, 1.0, "SSKD: share of the rotated rows the teacher misclassifies that the "
               "transformation term keeps (those of best rank)", group=SSKD_GROUP),
        Option("sskd_ss_ratio", float, 0.75, "SSKD: share of the rotated rows whose image the teacher's head misses "
               "that the self-supervision term keeps (those of best rank)", group=SSKD_GROUP),
        Option("sskd_init_lr", float, 0.05, "SSKD: learning rate of the teacher's head in the init stage (decayed "
               "x0.1 after 1/2 and 3/4 of --init_epochs)", group=SSKD_GROUP),
    )

    def __init__(self, ctx):
        super().__init__(ctx)
        opt = ctx.options
        self.tf_weight, self.ss_weight = float(opt.sskd_tf_weight), float(opt.sskd_ss_weight)
        self.tf_T, self.ss_T = float(opt.sskd_tf_T), float(opt.sskd_ss_T)
        self.tf_ratio, self.ss_ratio = float(opt.sskd_tf_ratio), float(opt.sskd_ss_ratio)
        self.init_learning_rate = float(opt.sskd_init_lr)
        for flag, value in (("sskd_tf_T", self.tf_T), ("sskd_ss_T", self.ss_T),
                            ("sskd_init_lr", self.init_learning_rate)):
            if not value > 0:
                raise ValueError(f"--{flag} must be positive, got {value}")
        for flag, value in (("sskd_tf_ratio", self.tf_ratio), ("sskd_ss_ratio", self.ss_ratio)):
            if not 0 <= value <= 1:
                raise ValueError(f"--{flag} is a share of rows, between 0 and 1; got {value}")
        d_s = int(ctx.feat_s[-1].reshape(ctx.feat_s[-1].shape[0], -1).shape[1])
        d_t = int(ctx.feat_t[-1].reshape(ctx.feat_t[-1].shape[0], -1).shape[1])
        self.head_s = self_supervision_head(d_s)
        self.head_t = self_supervision_head(d_t)

    # --- stage 1: the teacher's head ------------------------------------------------------------
    def init_modules(self, student: nn.Module):
        return [self.head_t]

    def init_loss(self, out_s: Outputs, out_t: Outputs, batch: Batch) -> torch.Tensor:
        similarities = rotation_similarities(self.head_t(pooled(out_t).detach()))
        return F.cross_entropy(similarities, self.own_image(batch.y))

    def init_lr(self, learning_rate: float) -> float:
        return self.init_learning_rate

    def init_lr_factor(self, epoch: int, epochs: int) -> float:
        # MultiStepLR at 30 and 45 of 60 epochs, i.e. after half and three quarters of the stage (rounded up, so that
        # a stage of one epoch keeps the full lr)
        return 0.1 ** ((epoch > -(-epochs // 2)) + (epoch > -(-3 * epochs // 4)))

    # --- stage 2: the student ---------------------------------------------------------------------
    @staticmethod
    def own_image(y: torch.Tensor) -> torch.Tensor:
        """The upright row (column of the cosine matrix) each rotated row comes from."""
        return torch.arange(y.shape[0], device=y.device).repeat_interleave(VIEWS - 1)

    def check_rows(self, out: Outputs, batch: Batch) -> None:
        if out.logits.shape[0] != VIEWS * batch.y.shape[0]:
            raise ValueError(f"--distill sskd reads the outputs of each image's {VIEWS} rotations "
                             f"({VIEWS * batch.y.shape[0]} rows for {batch.y.shape[0]} labels), got "
                             f"{out.logits.shape[0]} rows: run the networks on ROTATIONS.expand(x)")

    def sskd_terms(self, out_s: Outputs, out_t: Outputs, batch: Batch):
        """``(L_tf, L_ss)`` of the rotated rows, unweighted."""
        y = batch.y
        _, rotated_s = split_views(out_s.logits)
        _, rotated_t = split_views(out_t.logits.detach())
        rotated_y = y.repeat_interleave(VIEWS - 1)
        tf_mask = kept_rows(true_rank(rotated_t, rotated_y), self.tf_ratio)
        l_tf = masked_kl(rotated_s, rotated_t, self.tf_T, tf_mask)
        sim_s = rotation_similarities(self.head_s(pooled(out_s)))
        with torch.no_grad():
            sim_t = rotation_similarities(self.head_t(pooled(out_t).detach()))
        ss_mask = kept_rows(true_rank(sim_t, self.own_image(y)), self.ss_ratio)
        l_ss = masked_kl(sim_s, sim_t, self.ss_T, ss_mask)
        return l_tf, l_ss

    def loss(self, out_s, out_t, batch, epoch):
        self.check_rows(out_s, batch)
        upright_s = upright_rows(out_s.logits)
        terms = {"ce": F.cross_entropy(upright_s, batch.y)}
        if out_t is not None:
            self.check_rows(out_t, batch)
            terms["kl"] = self.kl_term(upright_s, upright_rows(out_t.logits))
            l_tf, l_ss = self.sskd_terms(out_s, out_t, batch)
            terms["kd"] = self.tf_weight * l_tf + self.ss_weight * l_ss
        return terms

    def trainable_modules(self):
        return [self.head_s]
