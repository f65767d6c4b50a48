"""Tian et al. 2020, "Contrastive Representation Distillation" (``--distill crd``)."""
from types import SimpleNamespace

import torch

from crd.criterion import CRDLoss
from crd.sampler import ContrastSampler
from helper.distributed import current_env, shard_bounds

from helper.option import Option, str2bool

from .base import FEAT_DIM, Batch, Distiller, Outputs, POST, register


BANK_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


@register("crd")
class CRD(Distiller):
    """CRD on the pooled features ``feat[-1]``.

    Options (RepDistiller names and defaults): ``feat_dim`` 128, ``nce_k`` 16384, ``nce_t`` 0.07,
    ``nce_m`` 0.5, ``mode`` 'exact' | 'relax'. The contrast indices are drawn on the device for the whole batch
    (:class:`crd.sampler.ContrastSampler`) unless the batch already carries ``contrast_idx``. Set
    ``self.generator`` to a ``torch.Generator`` on the device for reproducible draws.

    Build-time checks (``ValueError``): the training labels must be known, and ``nce_k`` may not exceed the
    number of other-class samples of the largest class (``n_data - max_c n_c``; 49,500 on CIFAR-100). Beyond
    that RepDistiller silently switches that class to drawing with replacement, so every row would hold all of
    its negatives plus repeats; that happens only when ``--nce_k`` was not adapted to a small data set, so it
    is refused here (:class:`ContrastSampler` itself still implements the replacement rule). ``--nce_replace 1``
    draws every row with replacement, as the ImageNet references do (the ImageNet recipe sets it); then any
    ``--nce_k`` is allowed. ``--nce_bank_dtype bfloat16`` stores the memory banks in bf16.

    Trainable: the two embeddings. The memory banks are buffers (in the state dict, not optimised).
    """

    student_features = teacher_features = POST
    defaults = {"gamma": 1.0, "alpha": 0.0, "beta": 0.8}
    options = Distiller.options + (
        FEAT_DIM,
        Option("mode", str, "exact", "exact: negatives drawn from other classes only; relax: from any sample",
               choices=["exact", "relax"]),
        Option("nce_k", int, 16384, "number of negative samples for NCE"),
        Option("nce_t", float, 0.07, "temperature parameter for softmax"),
        Option("nce_m", float, 0.5, "momentum for non-parametric updates"),
        Option("nce_replace", str2bool, False, "draw the negatives with replacement (RepDistiller's and mdistiller's "
               "ImageNet samplers; the ImageNet recipe sets it), which lifts the --nce_k limit"),
        Option("nce_bank_dtype", str, "float32", "storage of the two memory banks: bfloat16 halves them (ImageNet: "
               "0.66 instead of 1.31 GB per process); scores and updates stay float32",
               choices=["float32", "bfloat16"]),
    )

    def __init__(self, ctx):
        super().__init__(ctx)
        opt = ctx.options
        if ctx.train_targets is None:
            raise ValueError("--distill crd needs the training-set labels (DistillContext.train_targets) to draw "
                             "negatives from other classes and to size its memory bank")
        self.crd_opt = SimpleNamespace(
            s_dim=int(ctx.feat_s[-1].reshape(ctx.feat_s[-1].shape[0], -1).shape[1]),
            t_dim=int(ctx.feat_t[-1].reshape(ctx.feat_t[-1].shape[0], -1).shape[1]),
            n_data=ctx.n_data,
            feat_dim=int(opt.feat_dim),
            nce_k=int(opt.nce_k),
            nce_t=float(opt.nce_t),
            nce_m=float(opt.nce_m),
            mode=str(opt.mode),
            replace=bool(opt.nce_replace),
        )
        o = self.crd_opt
        if o.nce_k < 1:
            raise ValueError(f"--nce_k must be at least 1, got {o.nce_k}")
        self.sampler = ContrastSampler(ctx.train_targets, o.nce_k, o.mode, num_classes=ctx.num_classes,
                                       replace=o.replace)
        max_k = self.sampler.min_negatives
        if o.nce_k > max_k and not o.replace:
            raise ValueError(f"--nce_k {o.nce_k} is too large for this training set: CRD draws each row's negatives "
                             f"without replacement from the samples of other classes, and the largest class has "
                             f"only {max_k} of those ({o.n_data} samples in all); use --nce_k {max_k} or less, or "
                             f"--nce_replace 1 to draw with replacement")
        self.criterion = CRDLoss(o, bank_dtype=BANK_DTYPES[opt.nce_bank_dtype])
        self.generator = None

    def method_loss(self, out_s: Outputs, out_t: Outputs, batch: Batch, epoch: int) -> torch.Tensor:
        f_s = out_s.feats[-1]
        f_t = out_t.feats[-1].detach()
        index = batch.index.to(f_s.device).long()
        contrast_idx = batch.contrast_idx
        shard_counts = None
        if contrast_idx is None and batch.shard is not None:
            # torchrun: every process draws the global batch's negatives from the same RNG state and keeps its
            # rows, so K processes use exactly the negatives one process would
            lo, hi = batch.shard
            # every process's rows of the global batch, known here: the bank update's gathers need no size
            # exchange (a host sync per step)
            n, world = batch.global_y.shape[0], current_env().world_size
            shard_counts = [b - a for a, b in (shard_bounds(n, r, world) for r in range(world))]
            contrast_idx = self.sampler.sample(batch.global_index, batch.global_y, generator=self.generator)[lo:hi]
        elif contrast_idx is None:
            contrast_idx = self.sampler.sample(index, batch.y, generator=self.generator)
        return self.criterion(f_s, f_t, index, contrast_idx.to(f_s.device), shard_counts)

    def trainable_modules(self):
        return [self.criterion.embed_s, self.criterion.embed_t]
