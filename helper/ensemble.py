"""CheckpointKD teachers: one checkpoint, or a weighted average of several checkpoints' logits.

``EnsembleTeacher`` has the forward contract of every model in ``models.model_dict``
(``forward(x, is_feat=False, preact=False)``), so the training loop and every distillation method use it
like a single teacher:

* logits: ``sum_j w_j * z_j`` over the members (CheckpointKD averages logits, not probabilities), with
  uniform weights unless ``--teacher_weights`` is given (weights are normalised to sum to 1);
* features (``is_feat=True``): those of one member, the first unless ``--teacher_feat_index`` names
  another, so feature methods distil from a real network's maps while the logit terms use the average.

Teacher BatchNorm during distillation (``--teacher_bn``):

* ``eval`` (default): running statistics, as RepDistiller and any "correct" KD.
* ``train``: the reference. CheckpointKD never puts its teachers in eval mode until its first validation,
  which it runs after training epoch ``epochs - 10`` (0-indexed; every epoch when ``epochs < 12``); from
  then on they stay in eval mode. So here the members run in train mode (batch statistics; the no-grad
  forwards update their running statistics) during epochs ``1 .. epochs - 9`` (toolkit epochs count from
  1; only epoch 1 when ``epochs < 12``) and in eval mode afterwards.
* ``train_always``: train mode in every distillation epoch.

Evaluation (``validate``) always sees the teacher in eval mode: the loop calls ``teacher.eval()`` at the start
of every epoch and then ``teacher.begin_epoch(epoch, epochs)``, which is where train mode is switched on.
In these modes the student's resumable checkpoints also carry the teacher's state (``teacher``), so a resumed
run continues with the running statistics the teacher had reached, as an uninterrupted run would.
"""
from __future__ import annotations

import os
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from models import build_model

from .checkpoint import load_checkpoint, load_weights, snapshot_paths
from .teacher import check_teacher_file

BN_MODES = ("eval", "train", "train_always")


def reference_train_bn_epochs(epochs: int) -> int:
    """Last (1-indexed) epoch in which CheckpointKD's teachers are still in train mode."""
    return 1 if epochs < 12 else epochs - 9


class EnsembleTeacher(nn.Module):
    def __init__(self, members: Sequence[nn.Module], weights: Optional[Sequence[float]] = None,
                 feat_index: int = 0, bn_mode: str = "eval", names: Optional[Sequence[str]] = None,
                 epochs: Optional[Sequence[Optional[int]]] = None):
        super().__init__()
        if not members:
            raise ValueError("an ensemble teacher needs at least one member")
        if bn_mode not in BN_MODES:
            raise ValueError(f"--teacher_bn must be one of {', '.join(BN_MODES)}, got '{bn_mode}'")
        self.members = nn.ModuleList(members)
        n = len(self.members)
        if weights is None:
            w = torch.full((n,), 1.0 / n)
        else:
            w = torch.tensor([float(v) for v in weights])
            if w.numel() != n:
                raise ValueError(f"--teacher_weights has {w.numel()} values for {n} teacher checkpoints")
            if (w < 0).any() or float(w.sum()) <= 0:
                raise ValueError("--teacher_weights must be non-negative with a positive sum")
            w = w / w.sum()
        self.register_buffer("weights", w, persistent=False)
        if not 0 <= feat_index < n:
            raise ValueError(f"--teacher_feat_index {feat_index} is out of range for {n} teacher checkpoints")
        self.feat_index = int(feat_index)
        self.bn_mode = bn_mode
        self.names = list(names) if names is not None else [type(m).__name__ for m in members]
        self.epochs = list(epochs) if epochs is not None else [None] * n

    @property
    def feature_model(self) -> nn.Module:
        """The member whose features ``is_feat=True`` returns."""
        return self.members[self.feat_index]

    def begin_epoch(self, epoch: int, epochs: int) -> None:
        """Called by the loop after ``teacher.eval()`` at the start of each distillation epoch."""
        if self.bn_mode == "train_always" or (self.bn_mode == "train" and epoch <= reference_train_bn_epochs(epochs)):
            for m in self.members:
                m.train()

    def forward(self, x, is_feat: bool = False, preact: bool = False):
        feats = None
        total = None
        for j, member in enumerate(self.members):
            if is_feat and j == self.feat_index:
                feats, z = member(x, is_feat=True, preact=preact)
            else:
                z = member(x)
            z = z * self.weights[j].to(z.dtype)
            total = z if total is None else total + z
        return (feats, total) if is_feat else total

    def extra_repr(self) -> str:
        w = ", ".join(f"{v:.4g}" for v in self.weights.tolist())
        return f"weights=[{w}], feat_index={self.feat_index}, bn_mode={self.bn_mode}"


def split_list(text) -> List[str]:
    if text is None:
        return []
    if isinstance(text, (list, tuple)):
        return [str(t) for t in text]
    return [t.strip() for t in str(text).split(",") if t.strip()]


def resolve_teacher_paths(path_t, teacher_epochs=None) -> List[str]:
    """The checkpoint files named by ``--path_t`` (comma-separated) and ``--teacher_epochs``.

    With ``--teacher_epochs 60,120`` the (single) ``--path_t`` is a run folder, or any file inside it, and the
    teachers are its ``ckpt_epoch_60.pth`` and ``ckpt_epoch_120.pth``.
    """
    paths = split_list(path_t)
    if not paths:
        raise ValueError("--path_t is required: the teacher checkpoint(s) to distill from "
                         "(train one with train_teacher.py)")
    epochs = split_list(teacher_epochs)
    if not epochs:
        for path in paths:
            check_teacher_file(path)
        return paths
    if len(paths) != 1:
        raise ValueError("--teacher_epochs takes a single run folder as --path_t, got "
                         f"{len(paths)} paths")
    folder = paths[0] if os.path.isdir(paths[0]) else os.path.dirname(paths[0])
    out = []
    for e in epochs:
        try:
            e = int(e)
        except ValueError:
            raise ValueError(f"--teacher_epochs expects epoch numbers such as 60,120, got '{e}'") from None
        path = os.path.join(folder, f"ckpt_epoch_{e}.pth")
        if not os.path.isfile(path):
            have = ", ".join(str(k) for k, _ in snapshot_paths(folder)) or "none"
            raise FileNotFoundError(f"no snapshot of epoch {e} in '{folder}' (ckpt_epoch_N.pth epochs there: {have};"
                                    f" train the teacher with --save_freq to keep them)")
        out.append(path)
    return out


def teacher_arch(path: str, model_t: Optional[str]) -> str:
    """``model_t``, else the longest ``_``-separated prefix of the checkpoint's folder name that is a model name
    (``mobilenetv2_075_cifar100_...`` is ``mobilenetv2_075``, not ``mobilenetv2``), else RepDistiller's rule."""
    if model_t:
        return model_t
    from models import model_dict

    from .teacher import get_teacher_name
    segments = os.path.basename(os.path.dirname(os.path.abspath(path))).split("_")
    for n in range(len(segments), 0, -1):
        if "_".join(segments[:n]) in model_dict:
            return "_".join(segments[:n])
    return get_teacher_name(path)


def load_member(path: str, state, arch: str, num_classes: int, device) -> Tuple[nn.Module, Optional[int]]:
    model = build_model(arch, num_classes=num_classes)
    load_weights(model, state, arch, source=f"teacher checkpoint '{path}'")
    model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    epoch = state.get("epoch") if isinstance(state, dict) else None
    return model, (int(epoch) if isinstance(epoch, (int, float)) else None)


def needs_ensemble(paths: Sequence[str], opt) -> bool:
    """Whether the plain single-model teacher of RepDistiller is not enough for these options."""
    return (len(paths) > 1 or getattr(opt, "teacher_bn", "eval") != "eval"
            or getattr(opt, "teacher_weights", None) is not None)


def load_teacher_set(opt, num_classes: int, device):
    """``(arch, teacher, tag)`` for ``opt.path_t`` / ``opt.teacher_epochs`` / ``opt.model_t``.

    One checkpoint with default teacher options gives the loaded model itself (RepDistiller's teacher);
    otherwise an :class:`EnsembleTeacher`. ``arch`` is the first member's architecture (``--model_t``
    may be one name for all or a comma-separated name per checkpoint). ``tag`` names the teacher set
    in the run folder (None for a single checkpoint given by its path, as in RepDistiller).
    """
    paths = resolve_teacher_paths(opt.path_t, getattr(opt, "teacher_epochs", None))
    archs = split_list(getattr(opt, "model_t", None))
    if len(archs) > 1 and len(archs) != len(paths):
        raise ValueError(f"--model_t names {len(archs)} architectures for {len(paths)} teacher checkpoints")
    # read first: an empty, truncated or foreign file is the problem to report, not its folder's name
    states = [load_checkpoint(p) for p in paths]
    archs = [teacher_arch(p, archs[i] if len(archs) > 1 else (archs[0] if archs else None))
             for i, p in enumerate(paths)]
    members, epochs = [], []
    for path, state, arch in zip(paths, states, archs):
        model, epoch = load_member(path, state, arch, num_classes, device)
        members.append(model)
        epochs.append(epoch)
    tag = teacher_tag(archs, epochs, paths, opt)
    if not needs_ensemble(paths, opt):
        return archs[0], members[0], tag
    weights = split_list(getattr(opt, "teacher_weights", None)) or None
    teacher = EnsembleTeacher(members, weights=weights, feat_index=int(getattr(opt, "teacher_feat_index", 0)),
                              bn_mode=getattr(opt, "teacher_bn", "eval"), names=archs, epochs=epochs)
    teacher.to(device)
    return archs[0], teacher, tag


def teacher_tag(archs, epochs, paths, opt) -> Optional[str]:
    """A short run-folder name for a teacher set, e.g. ``wrn_40_2_ep100``, ``wrn_40_2_ep60-120`` or
    ``wrn_40_2x2`` (when the epochs are unknown); ``_bntrain`` marks train-mode teacher BN."""
    if len(paths) == 1 and not getattr(opt, "teacher_epochs", None) and getattr(opt, "teacher_bn", "eval") == "eval":
        return None
    arch = archs[0] if len(set(archs)) == 1 else "+".join(archs)
    if all(e is not None for e in epochs) and len(set(epochs)) == len(epochs):
        name = f"{arch}_ep{'-'.join(str(e) for e in epochs)}"
    elif len(paths) > 1:
        name = f"{arch}x{len(paths)}"
    else:
        name = arch
    if getattr(opt, "teacher_bn", "eval") != "eval":
        name += "_bn" + opt.teacher_bn.replace("_", "")
    return name
