"""Loading (and naming) the teacher of a distillation run."""
from __future__ import annotations

import os


from models import build_model, model_dict

from .checkpoint import load_checkpoint, load_weights


def get_teacher_name(model_path: str) -> str:
    """RepDistiller's rule: the architecture is the start of the checkpoint's folder name.

    ``.../resnet32x4_vanilla/ckpt_epoch_240.pth`` gives ``resnet32x4``; WRN names span three tokens
    (``wrn_40_2_vanilla`` gives ``wrn_40_2``; likewise ``mywrn_16_2``).
    """
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
    name = model_t or get_teacher_name(path)
    model = build_model(name, num_classes=num_classes)
    load_weights(model, load_checkpoint(path), name, source=f"teacher checkpoint '{path}'")
    model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return name, model
