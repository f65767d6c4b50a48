"""Weights files and the deploy form of re-parameterisable models (convert.py, validation.py, --test 1).

The input may be a checkpoint with a 'model' or 'state_dict' entry or a plain state dict ('module.' prefixes
are stripped), or an ``.hdf5``/``.h5`` file holding one data set per state-dict key. A student whose run deploys
more than the student (SimKD) has a 'deploy' entry next to 'model' that rebuilds that network
(``deployed_network``). Fusing turns every AMBB block into one biased k x k conv and every ConvBN into one biased
conv (BN folded in, running statistics), so the deploy model computes what the trained one computes in eval mode;
the output is ``{'model': fused_state_dict}``, written atomically.
"""
from __future__ import annotations

import copy
import os
from typing import Dict, Optional, Sequence

import torch
import torch.nn as nn

import distiller_zoo
from helper.checkpoint import extract_state_dict, load_checkpoint, load_weights, save_checkpoint
from helper.file_diagnosis import describe_not
from models import CIFAR, arch_options, build_model, family_of, model_dict
from models.ambb import convert_to_deploy

HDF5_SUFFIXES = (".hdf5", ".h5")
_CLASSIFIER_KEYS = ("fc.weight", "classifier.weight", "linear.weight")



def read_hdf5(path: str) -> Dict[str, torch.Tensor]:
    """One tensor per data set; nested groups are joined with '.' (state-dict keys are flat names)."""
    try:
        import h5py
    except ImportError:  # pragma: no cover - h5py is in requirements.txt
        raise ValueError(f"reading '{path}' needs the h5py package (pip install h5py)") from None
    import numpy as np

    out: Dict[str, torch.Tensor] = {}

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset):
            out[name.replace("/", ".")] = torch.from_numpy(np.array(obj))

    try:
        with h5py.File(path, "r") as f:
            f.visititems(visit)
    except OSError:
        # h5py's message ("file signature not found") names neither the file nor what it is instead
        raise ValueError(describe_not(path, "a readable HDF5 file")) from None
    if not out:
        raise ValueError(f"'{path}' holds no data sets")
    return out


def read_weights(path: str) -> Dict[str, torch.Tensor]:
    """A state dict from a checkpoint file (weights-only torch load) or an hdf5 file."""
    if os.path.isdir(path):
        raise IsADirectoryError(f"'{path}' is a folder, not a checkpoint file")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint '{path}' does not exist")
    if path.lower().endswith(HDF5_SUFFIXES):
        sd = read_hdf5(path)
        return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in sd.items()}
    return extract_state_dict(load_checkpoint(path))


def deploy_entry(path: str) -> Optional[Dict]:
    """A checkpoint's ``deploy`` entry: how a method's deployed network is built around its ``model`` (SimKD's
    projector and reused teacher classifier); None for a file without one (the student is the network)."""
    if path.lower().endswith(HDF5_SUFFIXES):
        return None
    state = load_checkpoint(path)
    entry = state.get("deploy") if isinstance(state, dict) else None
    return entry if isinstance(entry, dict) else None


def deployed_network(student: nn.Module, entry: Optional[Dict], source: str) -> nn.Module:
    """``student`` as its run deployed it, from the checkpoint's ``deploy`` entry (``student`` itself for None)."""
    if entry is None:
        return student
    method = entry.get("method")
    if method not in distiller_zoo.REGISTRY:
        raise ValueError(f"{source} was deployed by --distill {method}, which this toolkit does not know")
    return distiller_zoo.REGISTRY[method].deployed_from(student, entry)


def infer_num_classes(sd: Dict[str, torch.Tensor], default: int = 100) -> int:
    for key in _CLASSIFIER_KEYS:
        if key in sd and sd[key].dim() == 2:
            return int(sd[key].shape[0])
    return default


def build_for_state_dict(arch: str, num_classes: int, sd: Dict[str, torch.Tensor], block_type: str = "AMBB",
                         deploy: Optional[bool] = None, block_depth: Optional[Sequence[int]] = None,
                         family: str = CIFAR) -> nn.Module:
    """Build ``arch`` in the form (training-time or fused) whose keys are those of ``sd``, without loading.

    ``deploy=None`` picks the form from the keys; True/False force it (a mismatch then fails at loading
    with the list of offending keys). ``family``: the data set's model family (``models.registry``).
    """
    kwargs = dict(block_type=block_type, block_depth=block_depth)
    if family_of(arch, family) != CIFAR:
        return build_model(arch, num_classes=num_classes, family=family)
    if arch not in model_dict or "deploy" not in arch_options(arch):
        return build_model(arch, num_classes=num_classes, **kwargs)
    if deploy is not None:
        return build_model(arch, num_classes=num_classes, deploy=bool(deploy), **kwargs)
    keys = set(sd)
    first = None
    for flag in (False, True):
        model = build_model(arch, num_classes=num_classes, deploy=flag, **kwargs)
        if set(model.state_dict()) == keys:
            return model
        first = first or model
    return first


def is_deployed(model: nn.Module) -> bool:
    """True when the model has re-parameterisable blocks and all of them are in their fused form."""
    blocks = [m for m in model.modules() if hasattr(m, "switch_to_deploy")]
    return bool(blocks) and all(getattr(m, "deploy", False) for m in blocks)


def convert(arch: str, load: str, save: str, block_type: str = "AMBB", num_classes: Optional[int] = None,
            check: bool = True) -> Dict[str, float]:
    sd = read_weights(load)
    n_cls = num_classes or infer_num_classes(sd)
    model = build_model(arch, num_classes=n_cls, block_type=block_type, deploy=False)
    if not any(hasattr(m, "switch_to_deploy") for m in model.modules()):
        rep = ", ".join(sorted(n for n in model_dict if "deploy" in arch_options(n)))
        raise ValueError(f"--arch {arch} has no re-parameterisable blocks, so there is nothing to fuse and no file "
                         f"was written; '{load}' is already its deploy form (convert.py fuses: {rep})")
    load_weights(model, sd, arch, source=f"'{load}'")
    model.eval()
    before = sum(p.numel() for p in model.parameters())
    reference = copy.deepcopy(model) if check else None
    convert_to_deploy(model)
    after = sum(p.numel() for p in model.parameters())
    result = {"params_before": before, "params_after": after}
    if check:
        # A sanity check on the fused arithmetic with the checkpoint's own BN statistics.
        x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            y = reference(x)
            result["max_abs_diff"] = (y - model(x)).abs().max().item()
            result["max_abs_output"] = y.abs().max().item()
    save_checkpoint({"model": model.state_dict()}, save)
    return result
