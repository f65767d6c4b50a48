"""The model registry: constructors register themselves by name where they are defined.

``model_dict`` stays a plain ``name -> constructor`` dict (RepDistiller's ``from models import model_dict``
keeps working, and ``model_dict.update(...)`` still adds a family by hand). What a name cannot carry, the
architecture keywords its family understands, is declared at registration instead of being read off the
constructor's signature, so wrappers and ``**kwargs`` constructors are described correctly.

Two families share the names' space: ``model_dict`` holds RepDistiller's CIFAR models (32x32 inputs) and
``imagenet_model_dict`` the ImageNet ones (torchvision's ResNets, mdistiller's MobileNetV1). The data set says
which family its names mean (``dataset.registry``: ``input_family``): with an ImageNet-style data set a name of the
ImageNet family means that model (``ResNet50`` is then torchvision's, not RepDistiller's CIFAR one) and every other
name the CIFAR model as before, so no CIFAR name or checkpoint key changes meaning.

This module imports nothing from the model files, so every model file can import it.
"""
from __future__ import annotations

from typing import Callable, Dict, Iterable, Optional, Tuple, Union

import torch.nn as nn

# Architecture keywords the entry scripts pass for every model (they come from command-line flags); a
# family receives only those it declares.
ARCH_OPTIONS = ("block_type", "deploy", "block_depth")

model_dict: Dict[str, Callable[..., nn.Module]] = {}
_arch_options: Dict[str, Tuple[str, ...]] = {}
# the ImageNet family (224x224 inputs); it declares no architecture keywords
imagenet_model_dict: Dict[str, Callable[..., nn.Module]] = {}

CIFAR, IMAGENET = "cifar", "imagenet"
FAMILIES = (CIFAR, IMAGENET)


def register_model(name: str, *, arch_options: Iterable[str] = (), family: str = CIFAR):
    """Decorator: ``model_dict[name] = ctor``, with the architecture keywords (among ``ARCH_OPTIONS``) it takes;
    ``family="imagenet"`` registers into ``imagenet_model_dict`` instead.

    Registering the same constructor twice is a no-op; another constructor under a taken name is a
    ``ValueError`` (two files silently shadowing each other would change what a checkpoint name builds).
    """
    options = tuple(arch_options)
    unknown = [o for o in options if o not in ARCH_OPTIONS]
    if unknown:
        raise ValueError(f"register_model({name!r}): unknown arch option(s) {unknown}; "
                         f"valid: {', '.join(ARCH_OPTIONS)}")
    if family not in FAMILIES:
        raise ValueError(f"register_model({name!r}): unknown family {family!r}; valid: {', '.join(FAMILIES)}")
    if family == IMAGENET:
        if options:
            raise ValueError(f"register_model({name!r}): the ImageNet family takes no arch options")
        return _register_imagenet(name)

    def decorate(ctor: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        existing = model_dict.get(name)
        if existing is not None and existing is not ctor:
            raise ValueError(f"model name {name!r} is already registered to "
                             f"{getattr(existing, '__module__', '?')}.{getattr(existing, '__qualname__', existing)}")
        model_dict[name] = ctor
        _arch_options[name] = options
        return ctor

    return decorate


def _register_imagenet(name: str):
    def decorate(ctor: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        existing = imagenet_model_dict.get(name)
        if existing is not None and existing is not ctor:
            raise ValueError(f"ImageNet model name {name!r} is already registered")
        imagenet_model_dict[name] = ctor
        return ctor

    return decorate


def models_of(family: str = CIFAR) -> Dict[str, Callable[..., nn.Module]]:
    """Every name a data set of ``family`` can build: the CIFAR models, and for ``imagenet`` its own names on top
    (taking the place of a CIFAR model of the same name)."""
    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}; valid: {', '.join(FAMILIES)}")
    return model_dict if family == CIFAR else {**model_dict, **imagenet_model_dict}


def family_of(name: str, family: str = CIFAR) -> str:
    """Which family ``name`` builds from under a data set of ``family``."""
    return IMAGENET if family == IMAGENET and name in imagenet_model_dict else CIFAR


def _unknown(name: str, family: str = CIFAR) -> ValueError:
    names = ", ".join(sorted(models_of(family)))
    if family == CIFAR and name in imagenet_model_dict:
        return ValueError(f"model {name!r} is an ImageNet model; it needs --dataset imagenet or tiny_imagenet "
                          f"(CIFAR names: {names})")
    return ValueError(f"unknown model {name!r}; valid names: {names}")


def arch_options(name: str) -> Tuple[str, ...]:
    """The architecture keywords model ``name`` declares; () for one added to ``model_dict`` by hand."""
    if name not in model_dict:
        raise _unknown(name)
    return _arch_options.get(name, ())


def _name_of(ctor: Callable) -> Optional[str]:
    for name, registered in model_dict.items():
        if registered is ctor:
            return name
    return None


def accepts(ctor_or_name: Union[str, Callable], key: str) -> bool:
    """Whether a model (by name or registered constructor) declares the architecture keyword ``key``.

    A constructor that is not registered declares nothing.
    """
    name = ctor_or_name if isinstance(ctor_or_name, str) else _name_of(ctor_or_name)
    if name is None or name not in model_dict:
        return False
    return key in _arch_options.get(name, ())


def names_with_option(key: str) -> Dict[str, Callable[..., nn.Module]]:
    """The registered models that declare ``key``, in registration order."""
    return {n: c for n, c in model_dict.items() if key in _arch_options.get(n, ())}


def models_defined_in(module_name: str) -> Dict[str, Callable[..., nn.Module]]:
    """The registered models whose constructor is defined in ``module_name``, in registration order."""
    return {n: c for n, c in model_dict.items() if getattr(c, "__module__", None) == module_name}


def build_model(name: str, num_classes: int = 100, family: str = CIFAR, **kwargs) -> nn.Module:
    """Instantiate ``model_dict[name]`` (with ``family="imagenet"``: the ImageNet model of that name where there is
    one); an unknown name is a ``ValueError`` naming the options.

    ``block_type``, ``deploy`` and ``block_depth`` reach only families that declare them and are dropped
    when None; every other keyword is passed through unchanged.
    """
    if family_of(name, family) == IMAGENET:
        for key in ARCH_OPTIONS:
            kwargs.pop(key, None)
        return imagenet_model_dict[name](num_classes=num_classes, **kwargs)
    if name not in model_dict:
        raise _unknown(name, family)
    declared = arch_options(name)
    for key in ARCH_OPTIONS:
        if key in kwargs and (kwargs[key] is None or key not in declared):
            del kwargs[key]
    return model_dict[name](num_classes=num_classes, **kwargs)


__all__ = ["ARCH_OPTIONS", "model_dict", "imagenet_model_dict", "register_model", "arch_options", "accepts",
           "names_with_option", "models_defined_in", "build_model", "models_of", "family_of", "FAMILIES", "CIFAR",
           "IMAGENET"]
