"""Loading (and naming) the teacher of a distillation run."""
from __future__ import annotations

import os

from models import build_model, model_dict

from .checkpoint import load_checkpoint, load_weights, snapshot_paths


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


def get_teacher_name(model_path: str) -> str:
    """RepDistiller's rule: the architecture is the start of the checkpoint's folder name.

    ``.../resnet32x4_vanilla/ckpt_epoch_240.pth`` gives ``resnet32x4``; WRN names span three tokens
    (``wrn_40_2_vanilla`` gives ``wrn_40_2``; likewise ``mywrn_16_2``).
    """
    check_teacher_file(model_path)
    folder = os.path.basename(os.path.dirname(os.path.abspath(model_path)))
    segments = folder.split("_")
    # WRN names span three tokens (wrn_40_2), and so do EMKD's mywrn_40_2
    name = "_".join(segments[:3]) if segments[0] in ("wrn", "mywrn") else segments[0]
    if name not in model_dict:
        raise ValueError(f"cannot tell the teacher architecture from the folder name '{folder}' "
                         f"(parsed '{name}'); pass --model_t with one of: {', '.join(sorted(model_dict))}")
    return name


def load_teacher(path: str, num_classes: int, device, model_t: str = None):
    """Build the teacher named by ``model_t`` (or parsed from ``path``) and load its weights, eval mode."""
    check_teacher_file(path)
    state = load_checkpoint(path)  # before the name: a broken file is the problem to report, not its folder's name
    name = model_t or get_teacher_name(path)
    model = build_model(name, num_classes=num_classes)
    load_weights(model, state, name, source=f"teacher checkpoint '{path}'")
    model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return name, model
