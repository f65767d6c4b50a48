"""Input normalisation presets (``--data_norm``): a data set's own mean/std, or another reference's constants."""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch

# name -> (mean, std). "default" keeps the data set's own constants.
NORMALIZATIONS: Dict[str, Optional[Tuple[Tuple[float, ...], Tuple[float, ...]]]] = {
    "default": None,
    # BYOT applies these CIFAR-10 values (with the frequently copied 0.2023/0.1994/0.2010 std) to CIFAR-100.
    "byot": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "cifar100": ((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
}


def normalization(name: str):
    if name not in NORMALIZATIONS:
        raise ValueError(f"--data_norm must be one of {', '.join(NORMALIZATIONS)}, got '{name}'")
    return NORMALIZATIONS[name]


def set_normalization(data, name: Optional[str]) -> None:
    """Re-normalise both splits of a DataBundle with a preset (``default``/None: leave as built)."""
    preset = normalization(name or "default")
    if preset is None:
        return
    mean, std = preset
    for split in (data.train, data.test):
        if split.mean.shape[1] != len(mean):
            raise ValueError(f"--data_norm {name} has {len(mean)} channels, the data set {split.mean.shape[1]}")
        split.mean = torch.tensor(mean, dtype=torch.float32, device=split.device).view(1, -1, 1, 1)
        split.std = torch.tensor(std, dtype=torch.float32, device=split.device).view(1, -1, 1, 1)
