"""Method recipes (option values a method's reference trained with) and input normalisation presets.

A distiller's ``recipe`` (e.g. BYOT: 200 epochs, lr 0.1 decayed after 75/130/180, batch 128, T 3) replaces
the toolkit's defaults only for options the user did not write on the command line, so
``train_student.py --distill byot --model_s multi_resnet18_kd`` reproduces the reference and any flag given
explicitly (even one equal to the toolkit default) wins.
"""
from __future__ import annotations

import argparse
import sys
from typing import Dict, Iterable, Optional, Sequence, Set, Tuple

# name -> (mean, std). "default" keeps the data set's own constants.
NORMALIZATIONS: Dict[str, Optional[Tuple[Tuple[float, ...], Tuple[float, ...]]]] = {
    "default": None,
    # BYOT applies these CIFAR-10 values (with the frequently copied 0.2023/0.1994/0.2010 std) to CIFAR-100.
    "byot": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "cifar100": ((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
}


def explicit_dests(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]]) -> Set[str]:
    """The ``dest`` of every option that ``argv`` (default ``sys.argv[1:]``) sets explicitly."""
    argv = list(sys.argv[1:] if argv is None else argv)
    probe = argparse.ArgumentParser(add_help=False, allow_abbrev=parser.allow_abbrev)
    for action in parser._actions:  # noqa: SLF001 - argparse has no public accessor
        if not action.option_strings or isinstance(action, argparse._HelpAction):  # noqa: SLF001
            continue
        kwargs = dict(dest=action.dest, default=argparse.SUPPRESS)
        if action.nargs == 0:
            kwargs["action"] = "store_true"
        else:
            kwargs["nargs"] = action.nargs
        probe.add_argument(*action.option_strings, **kwargs)
    seen, _ = probe.parse_known_args(argv)
    return set(vars(seen))


def apply_recipe(opt, recipe: Dict, explicit: Iterable[str]) -> Dict:
    """Set ``opt.<k> = v`` for every recipe entry the user did not give; returns what was applied."""
    explicit = set(explicit)
    applied = {}
    for key, value in recipe.items():
        if key in explicit or not hasattr(opt, key):
            continue
        setattr(opt, key, value)
        applied[key] = value
    return applied


def normalization(name: str):
    if name not in NORMALIZATIONS:
        raise ValueError(f"--data_norm must be one of {', '.join(NORMALIZATIONS)}, got '{name}'")
    return NORMALIZATIONS[name]


def set_normalization(data, name: Optional[str]) -> None:
    """Re-normalise both splits of a DataBundle with a preset (``default``/None: leave as built)."""
    preset = normalization(name or "default")
    if preset is None:
        return
    import torch
    mean, std = preset
    for split in (data.train, data.test):
        if split.mean.shape[1] != len(mean):
            raise ValueError(f"--data_norm {name} has {len(mean)} channels, the data set {split.mean.shape[1]}")
        split.mean = torch.tensor(mean, dtype=torch.float32, device=split.device).view(1, -1, 1, 1)
        split.std = torch.tensor(std, dtype=torch.float32, device=split.device).view(1, -1, 1, 1)
