"""The teacher of a distillation run: one loader, one name-from-path rule, one interface the loop calls.

:class:`Teacher` wraps one checkpoint (RepDistiller's teacher) or several (CheckpointKD's logit ensembles and
snapshots) behind the forward contract of every zoo model (``forward(x, is_feat=False, preact=False)``,
``features(x)``), so the methods and the loop use any of them alike:

* logits: the member's, or ``sum_j w_j * z_j`` over several members (CheckpointKD averages logits, not
  probabilities), uniform unless ``--teacher_weights`` is given (normalised to sum to 1);
* features: those of one member (``feature_model``), the first unless ``--teacher_feat_index`` names another,
  so feature methods distil from a real network's maps while the logit terms use the average.

The loop calls ``begin_epoch(epoch, epochs)`` at the start of every training epoch: eval mode, then the
BatchNorm mode of ``--teacher_bn``:

* ``eval`` (default): running statistics, as RepDistiller and any "correct" KD.
* ``train``: the reference. CheckpointKD never puts its teachers in eval mode until its first validation,
  which it runs after training epoch ``epochs - 10`` (0-indexed; every epoch when ``epochs < 12``); from
  then on they stay in eval mode. So here the members run in train mode (batch statistics; the no-grad
  forwards update their running statistics) during epochs ``1 .. epochs - 9`` (toolkit epochs count from
  1; only epoch 1 when ``epochs < 12``) and in eval mode afterwards.
* ``train_always``: train mode in every distillation epoch.

Evaluation always sees the teacher in eval mode (``validate`` sets it). In the train modes the teacher is
``stateful``: the student's resumable checkpoints also carry its state (``teacher``), so a resumed run
continues with the running statistics the teacher had reached, as an uninterrupted run would.
"""
from __future__ import annotations

import os
import re
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from helper.checkpoint import load_checkpoint, load_weights, peek_checkpoint, snapshot_paths
from helper.option import Option
from models import CIFAR, build_model, models_of
from models.features import FeatureMaps

BN_MODES = ("eval", "train", "train_always")

_GROUP = "CheckpointKD teachers (snapshots and logit ensembles; any --distill method)"
# the options of the teacher set (train_student.py's parser takes them from here)
TEACHER_OPTIONS = (
    Option("teacher_epochs", str, None, "use the ckpt_epoch_N.pth snapshots of these epochs (e.g. 60,120) of the "
           "run folder --path_t; several are averaged", group=_GROUP),
    Option("teacher_weights", str, None, "weights of the teachers' logits, comma-separated (normalised; default "
           "uniform)", group=_GROUP),
    Option("teacher_feat_index", int, 0, "which teacher's features feature-based methods use (default the first)",
           group=_GROUP),
    Option("teacher_bn", str, "eval", "teacher BatchNorm while distilling: eval (running stats), train "
           "(CheckpointKD: batch stats until its first validation at epoch epochs-9, then eval), train_always",
           choices=BN_MODES, group=_GROUP),
)


def reference_train_bn_epochs(epochs: int) -> int:
    """Last (1-indexed) epoch in which CheckpointKD's teachers are still in train mode."""
    return 1 if epochs < 12 else epochs - 9


class Teacher(nn.Module):
    """The frozen teacher network(s) of a run (see the module docstring)."""

    def __init__(self, members: Sequence[nn.Module], weights: Optional[Sequence[float]] = None,
                 feat_index: int = 0, bn_mode: str = "eval", names: Optional[Sequence[str]] = None,
                 epochs: Optional[Sequence[Optional[int]]] = None, tag: Optional[str] = None):
        super().__init__()
        if not members:
            raise ValueError("a teacher needs at least one network")
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
        # the run-folder name of a teacher set (None: a single checkpoint named by its architecture)
        self.tag = tag

    @classmethod
    def of(cls, model: Optional[nn.Module]) -> Optional["Teacher"]:
        """``model`` as a Teacher (a network given directly, e.g. by a test or a script, is wrapped)."""
        if model is None or isinstance(model, Teacher):
            return model
        return cls([model])

    @property
    def arch(self) -> str:
        """The architecture of the first member (RepDistiller's ``model_t``)."""
        return self.names[0]

    @property
    def label(self) -> str:
        """How run-folder names and console lines call this teacher."""
        return self.tag or self.arch

    @property
    def feature_model(self) -> nn.Module:
        """The member whose features ``is_feat=True`` returns, and whose capabilities the methods ask."""
        return self.members[self.feat_index]

    # the feature member's capabilities, so the teacher can be asked like a network
    @property
    def num_stages(self) -> int:
        return self.feature_model.num_stages

    def stage_channels(self):
        return self.feature_model.stage_channels()

    def penultimate_map_module(self):
        return self.feature_model.penultimate_map_module()

    def get_bn_before_relu(self):
        return self.feature_model.get_bn_before_relu()

    def pooled_map_module(self):
        return self.feature_model.pooled_map_module()

    def bn_channel_offsets(self):
        return self.feature_model.bn_channel_offsets()

    def classifier_module(self):
        return self.feature_model.classifier_module()

    def pooled_map(self, last_stage_map):
        return self.feature_model.pooled_map(last_stage_map)

    @property
    def stateful(self) -> bool:
        """Whether its BatchNorm statistics move while distilling (the --teacher_bn train modes)."""
        return self.bn_mode != "eval"

    def begin_epoch(self, epoch: int, epochs: int) -> None:
        """The loop's call at the start of each distillation epoch: eval mode, then --teacher_bn's mode."""
        self.eval()
        if self.bn_mode == "train_always" or (self.bn_mode == "train" and epoch <= reference_train_bn_epochs(epochs)):
            for m in self.members:
                m.train()

    def _logits(self, j: int, z: torch.Tensor) -> torch.Tensor:
        return z if len(self.members) == 1 else z * self.weights[j].to(z.dtype)

    def forward(self, x, is_feat: bool = False, preact: bool = False):
        feats, total = None, None
        for j, member in enumerate(self.members):
            if is_feat and j == self.feat_index:
                feats, z = member(x, is_feat=True, preact=preact)
            else:
                z = member(x)
            z = self._logits(j, z)
            total = z if total is None else total + z
        return (feats, total) if is_feat else total

    def features(self, x) -> FeatureMaps:
        """Both feature lists of the feature member and the (averaged) logits, one forward per member."""
        maps, total = None, None
        for j, member in enumerate(self.members):
            if j == self.feat_index:
                maps = member.features(x)
                z = maps.logits
            else:
                z = member(x)
            z = self._logits(j, z)
            total = z if total is None else total + z
        return FeatureMaps(logits=total, post=maps.post, pre=maps.pre)

    def extra_repr(self) -> str:
        w = ", ".join(f"{v:.4g}" for v in self.weights.tolist())
        return f"weights=[{w}], feat_index={self.feat_index}, bn_mode={self.bn_mode}"


def split_list(text) -> List[str]:
    if text is None:
        return []
    if isinstance(text, (list, tuple)):
        return [str(t) for t in text]
    return [t.strip() for t in str(text).split(",") if t.strip()]


def check_teacher_file(path: str) -> None:
    """A ``--path_t`` that names a run folder gets the checkpoint files in it (or --teacher_epochs) suggested."""
    if not os.path.isdir(path):
        return
    names = sorted(n for n in os.listdir(path) if n.endswith(".pth") and not n.startswith("."))
    snapshots = snapshot_paths(path)
    best = [os.path.join(path, n) for n in names if n.endswith("_best.pth")]
    # the likeliest teachers: the best model and the latest snapshot, else any two .pth files
    picks = best[:1] + [p for _, p in snapshots[-1:]] or [os.path.join(path, n) for n in names[:2]]
    if picks:
        files = "pass a checkpoint file in it, e.g. " + " or ".join(f"'{p}'" for p in picks)
    else:
        files = "it holds no .pth file; pass a checkpoint file"
    epochs = [str(e) for e, _ in snapshots]
    if len(epochs) > 8:
        epochs = epochs[:3] + ["..."] + epochs[-3:]
    if snapshots:
        files += (f", or keep the folder and add --teacher_epochs {snapshots[-1][0]} (ckpt_epoch_N.pth epochs "
                  f"there: {', '.join(epochs)})")
    else:
        files += ", or give a folder of ckpt_epoch_N.pth snapshots with --teacher_epochs N"
    raise IsADirectoryError(f"--path_t '{path}' is a folder; {files}")


def arch_from_folder(folder: str, family: str = CIFAR) -> Optional[str]:
    """The longest ``_``-separated prefix of a folder name that is a model name, or None."""
    names = models_of(family)
    segments = folder.split("_")
    for n in range(len(segments), 0, -1):
        if "_".join(segments[:n]) in names:
            return "_".join(segments[:n])
    return None


# ``--path_t torchvision``: torchvision's published ImageNet weights through its weights API and cache
TORCHVISION = "torchvision"
# torchvision's weight file names, e.g. resnet34-333f7ec4.pth (the v1 file mdistiller loads) or resnet34-b627a593.pth
_TORCHVISION_FILE = re.compile(r"^resnet(\d+)-[0-9a-f]{8}\.pth$")


def arch_from_file_name(path: str, family: str = CIFAR) -> Optional[str]:
    """The ImageNet ResNet a torchvision weight file name names (``resnet34-333f7ec4.pth`` -> ResNet34), or None."""
    match = _TORCHVISION_FILE.match(os.path.basename(path))
    if match is None or family == CIFAR:
        return None
    name = f"ResNet{match.group(1)}"
    return name if name in models_of(family) else None


def arch_from_path(path_t: Optional[str], model_t: Optional[str], family: str = CIFAR) -> Optional[str]:
    """The (first) teacher's architecture as the command line names it, without reading any file: ``--model_t``,
    else the folder name of ``--path_t`` (the folder itself for --teacher_epochs), else a torchvision weight file's
    name; None when none tells."""
    if model_t:
        return split_list(model_t)[0]
    paths = split_list(path_t)
    if not paths or paths[0] == TORCHVISION:
        return None
    path = os.path.abspath(paths[0])
    folder = path if os.path.isdir(path) else os.path.dirname(path)
    return arch_from_folder(os.path.basename(folder), family) or arch_from_file_name(path, family)


def teacher_name_from_path(path: str, family: str = CIFAR) -> str:
    """The architecture named by a checkpoint's folder: the longest ``_``-separated prefix of the folder name
    that is a model name; for an ImageNet data set also a torchvision weight file's name (``resnet34-333f7ec4.pth``).

    RepDistiller took the first token (three for ``wrn_40_2``); the longest prefix gives the same for its
    names (``resnet32x4_vanilla`` -> resnet32x4, ``wrn_40_2_vanilla`` -> wrn_40_2) and also tells
    ``mobilenetv2_075_cifar100_...`` (mobilenetv2_075) from ``mobilenetv2``.
    """
    if path == TORCHVISION:
        raise ValueError("--path_t torchvision needs --model_t, the architecture whose torchvision weights to take "
                         "(e.g. ResNet34)")
    check_teacher_file(path)
    folder = os.path.basename(os.path.dirname(os.path.abspath(path)))
    name = arch_from_folder(folder, family) or arch_from_file_name(path, family)
    if name is not None:
        return name
    segments = folder.split("_")
    parsed = "_".join(segments[:3]) if segments[0] in ("wrn", "mywrn") else segments[0]
    raise ValueError(f"cannot tell the teacher architecture from the folder name '{folder}' "
                     f"(parsed '{parsed}'); pass --model_t with one of: {', '.join(sorted(models_of(family)))}")


def torchvision_weights(arch: str):
    """torchvision's IMAGENET1K_V1 weights of ``arch`` (the teachers of the published ImageNet KD results), from its
    cache or downloaded by its weights API; one-line errors where there are none or no network."""
    names = {"ResNet18": "ResNet18_Weights", "ResNet34": "ResNet34_Weights", "ResNet50": "ResNet50_Weights",
             "ResNet101": "ResNet101_Weights"}
    if arch not in names:
        raise ValueError(f"--path_t torchvision: torchvision publishes no weights for '{arch}' (it has "
                         f"{', '.join(names)}); give a checkpoint file")
    import torchvision

    weights = torchvision.models.get_weight(f"{names[arch]}.IMAGENET1K_V1")
    try:
        return weights.get_state_dict(progress=False)
    except Exception as exc:  # noqa: BLE001 - offline, a proxy, a full disk: the same advice
        raise ValueError(f"--path_t torchvision: could not fetch {weights.url} ({type(exc).__name__}); download it "
                         f"where a network exists and pass the file as --path_t") from None


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


def load_network(path: str, state, arch: str, num_classes: int, device,
                 family: str = CIFAR) -> Tuple[nn.Module, Optional[int]]:
    """A frozen, eval-mode network of ``arch`` with the checkpoint's weights, and the checkpoint's epoch."""
    model = build_model(arch, num_classes=num_classes, family=family)
    load_weights(model, state, arch, source=f"teacher checkpoint '{path}'")
    model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    epoch = state.get("epoch") if isinstance(state, dict) else None
    return model, (int(epoch) if isinstance(epoch, (int, float)) else None)


def load_teacher(path_t, num_classes: int, device, model_t: Optional[str] = None, teacher_epochs=None,
                 teacher_weights=None, teacher_feat_index: int = 0, teacher_bn: str = "eval",
                 family: str = CIFAR) -> Teacher:
    """The teacher of ``--path_t`` / ``--teacher_epochs`` / ``--model_t`` and the CheckpointKD teacher options.

    ``--model_t`` may be one name for all checkpoints or a comma-separated name per checkpoint; left out, each
    is read from its folder's name (:func:`teacher_name_from_path`). ``family``: the data set's model family
    (``imagenet``: torchvision's ResNets); ``--path_t torchvision`` takes torchvision's published weights.
    """
    paths = resolve_teacher_paths(path_t, teacher_epochs)
    check_model_t(paths, model_t)
    archs = split_list(model_t)
    given = [(archs[i] if len(archs) > 1 else (archs[0] if archs else None)) for i in range(len(paths))]
    # read first: an empty, truncated or foreign file is the problem to report, not its folder's name
    states = [torchvision_weights(teacher_name_from_path(p) if n is None else n) if p == TORCHVISION
              else load_checkpoint(p) for p, n in zip(paths, given)]
    names = member_names(paths, model_t, family)
    members, epochs = [], []
    for path, state, arch in zip(paths, states, names):
        model, epoch = load_network(path, state, arch, num_classes, device, family)
        members.append(model)
        epochs.append(epoch)
    tag = teacher_tag(names, epochs, len(paths), bool(split_list(teacher_epochs)), teacher_bn)
    weights = split_list(teacher_weights) or None
    return Teacher(members, weights=weights, feat_index=teacher_feat_index, bn_mode=teacher_bn, names=names,
                   epochs=epochs, tag=tag).to(device)


def check_model_t(paths: Sequence[str], model_t: Optional[str]) -> None:
    archs = split_list(model_t)
    if len(archs) > 1 and len(archs) != len(paths):
        raise ValueError(f"--model_t names {len(archs)} architectures for {len(paths)} teacher checkpoints")


def member_names(paths: Sequence[str], model_t: Optional[str], family: str = CIFAR) -> List[str]:
    """The architecture of each teacher checkpoint: ``--model_t`` (one for all, or one per checkpoint), else the
    checkpoint's folder name."""
    check_model_t(paths, model_t)
    archs = split_list(model_t)
    return [(archs[i] if len(archs) > 1 else (archs[0] if archs else None)) or teacher_name_from_path(p, family)
            for i, p in enumerate(paths)]


def teacher_label(path_t, model_t: Optional[str] = None, teacher_epochs=None, teacher_bn: str = "eval") -> str:
    """The name run folders give the teacher of these flags (``Teacher.label`` of what :func:`load_teacher` would
    load), found without loading weights: a teacher set's epochs are read from its checkpoints memory-mapped.
    Raises as load_teacher does when ``--teacher_epochs`` names a snapshot that does not exist."""
    paths = resolve_teacher_paths(path_t, teacher_epochs)
    names = member_names(paths, model_t)
    by_epochs = bool(split_list(teacher_epochs))
    epochs: List[Optional[int]] = [None] * len(paths)
    if len(paths) > 1 or by_epochs or teacher_bn != "eval":  # the cases teacher_tag names by epochs
        states = [peek_checkpoint(p) for p in paths]
        epochs = [int(s["epoch"]) if isinstance(s, dict) and isinstance(s.get("epoch"), (int, float)) else None
                  for s in states]
    return teacher_tag(names, epochs, len(paths), by_epochs, teacher_bn) or names[0]


def teacher_tag(archs, epochs, n_paths: int, by_epochs: bool, bn_mode: str) -> Optional[str]:
    """A short run-folder name for a teacher set, e.g. ``wrn_40_2_ep100``, ``wrn_40_2_ep60-120`` or
    ``wrn_40_2x2`` (when the epochs are unknown); ``_bntrain`` marks train-mode teacher BN. None for a single
    checkpoint given by its path (RepDistiller's names)."""
    if n_paths == 1 and not by_epochs and bn_mode == "eval":
        return None
    arch = archs[0] if len(set(archs)) == 1 else "+".join(archs)
    if all(e is not None for e in epochs) and len(set(epochs)) == len(epochs):
        name = f"{arch}_ep{'-'.join(str(e) for e in epochs)}"
    elif n_paths > 1:
        name = f"{arch}x{n_paths}"
    else:
        name = arch
    if bn_mode != "eval":
        name += "_bn" + bn_mode.replace("_", "")
    return name
