"""The data-set registry: ``@register_dataset("name")`` on each loader makes it a ``--dataset`` value.

A data set also says which model family its names mean (``family``: ``cifar`` for 32x32 sets, ``imagenet`` for
ImageNet-style ones, see ``models.registry``) and may carry its reference training recipe (``recipe``: option values
that apply where no flag, ``--recipe`` or add-on gives one; ``assembly/options.py`` has the precedence rule).
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional

# name -> loader(data_root) returning a dict: train_x, train_y, test_x, test_y (uint8 NCHW / int64), num_classes,
# mean, std and optionally flip; or, for a data set registered with ``bundle=True``, loader(data_root, device,
# settings) returning a DataBundle itself (image folders, read by a DataLoader)
DATASETS: Dict[str, Callable] = {}
FAMILIES: Dict[str, str] = {}
BUNDLE_LOADERS = set()
# name -> f(method name or None for a model trained from scratch, teacher, student) -> option values
RECIPES: Dict[str, Callable[[Optional[str], Optional[str], str], Dict[str, Any]]] = {}


def register_dataset(name: str, family: str = "cifar", bundle: bool = False,
                     recipe: Optional[Callable[[Optional[str], Optional[str], str], Dict[str, Any]]] = None):
    """Decorator on a loader function: ``--dataset name`` reads through it."""

    def wrap(fn):
        if name in DATASETS and DATASETS[name] is not fn:
            raise ValueError(f"data set '{name}' registered twice")
        DATASETS[name] = fn
        FAMILIES[name] = family
        if bundle:
            BUNDLE_LOADERS.add(name)
        if recipe is not None:
            RECIPES[name] = recipe
        return fn

    return wrap


def available_datasets() -> List[str]:
    return sorted(DATASETS)


def input_family(name: str) -> str:
    """The model family (``cifar`` or ``imagenet``) whose names a run on data set ``name`` builds."""
    return FAMILIES.get(name, "cifar")


def dataset_recipe(name: str, method: Optional[str], teacher: Optional[str], student: str) -> Dict[str, Any]:
    """The data set's reference settings for ``method`` (None: training from scratch) and the pair; {} for a data
    set without a recipe (the CIFAR ones: the methods' own defaults are their CIFAR recipes)."""
    recipe = RECIPES.get(name)
    return {} if recipe is None else dict(recipe(method, teacher, student))
