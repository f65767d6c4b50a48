"""The data-set registry: ``@register_dataset("name")`` on each loader makes it a ``--dataset`` value.

A data set also says which model family its names mean (``family``: ``cifar`` for 32x32 sets, ``imagenet`` for
ImageNet-style ones, see ``models.registry``) and may carry named reference training recipes (``recipes``: option
values that apply where no flag, ``--recipe`` or add-on gives one, the first one unless ``--data_recipe`` names another
or ``none``; ``assembly/options.py`` has the precedence rule).
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional

# name -> loader(data_root) returning a dict: train_x, train_y, test_x, test_y (uint8 NCHW / int64), num_classes,
# mean, std and optionally flip; or, for a data set registered with ``bundle=True``, loader(data_root, device,
# settings) returning a DataBundle itself (image folders, read by a DataLoader)
DATASETS: Dict[str, Callable] = {}
FAMILIES: Dict[str, str] = {}
BUNDLE_LOADERS = set()
# data set -> {recipe name -> f(method name or None for a model trained from scratch, teacher, student) -> values}
RECIPES: Dict[str, Dict[str, Callable[[Optional[str], Optional[str], str], Dict[str, Any]]]] = {}
NO_RECIPE = "none"


def register_dataset(name: str, family: str = "cifar", bundle: bool = False,
                     recipes: Optional[Dict[str, Callable[[Optional[str], Optional[str], str], Dict[str, Any]]]] = None):
    """Decorator on a loader function: ``--dataset name`` reads through it."""

    def wrap(fn):
        if name in DATASETS and DATASETS[name] is not fn:
            raise ValueError(f"data set '{name}' registered twice")
        DATASETS[name] = fn
        FAMILIES[name] = family
        if bundle:
            BUNDLE_LOADERS.add(name)
        if recipes:
            RECIPES[name] = dict(recipes)
        return fn

    return wrap


def available_datasets() -> List[str]:
    return sorted(DATASETS)


def input_family(name: str) -> str:
    """The model family (``cifar`` or ``imagenet``) whose names a run on data set ``name`` builds."""
    return FAMILIES.get(name, "cifar")


def recipe_name(name: str, chosen: Optional[str]) -> Optional[str]:
    """The data set's recipe a run takes: ``--data_recipe`` (checked), else its first; None for none."""
    known = RECIPES.get(name, {})
    if chosen is None:
        return next(iter(known), None)
    if chosen == NO_RECIPE:
        return None
    if chosen not in known:
        names = ", ".join(list(known) + [NO_RECIPE])
        raise ValueError(f"--data_recipe {chosen}: --dataset {name} has no recipe of that name (its recipes: {names})")
    return chosen


def dataset_recipe(name: str, method: Optional[str], teacher: Optional[str], student: str,
                   chosen: Optional[str] = None) -> Dict[str, Any]:
    """The data set's reference settings for ``method`` (None: training from scratch) and the pair; {} for a data
    set without a recipe (the CIFAR ones: the methods' own defaults are their CIFAR recipes) or ``--data_recipe none``."""
    which = recipe_name(name, chosen)
    return {} if which is None else dict(RECIPES[name][which](method, teacher, student))
