"""The data-set registry: ``@register_dataset("name")`` on each loader makes it a ``--dataset`` value."""
from __future__ import annotations

from typing import Callable, Dict, List

# name -> loader(data_root) returning a dict: train_x, train_y, test_x, test_y (uint8 NCHW / int64), num_classes,
# mean, std and optionally flip
DATASETS: Dict[str, Callable] = {}


def register_dataset(name: str):
    """Decorator on a loader function: ``--dataset name`` reads through it."""

    def wrap(fn):
        if name in DATASETS and DATASETS[name] is not fn:
            raise ValueError(f"data set '{name}' registered twice")
        DATASETS[name] = fn
        return fn

    return wrap


def available_datasets() -> List[str]:
    return sorted(DATASETS)
