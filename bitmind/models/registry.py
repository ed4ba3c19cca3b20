"""Architecture registry: a checkpoint names its architecture and config; this maps
the name back to a constructor, so new detectors can be added beside NPR and the miner
can serve any of them from the file alone."""
from __future__ import annotations

from typing import Callable

import torch.nn as nn

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str):
    """Class/function decorator: ``@register_model("npr")``."""

    def deco(builder):
        if name in _REGISTRY and _REGISTRY[name] is not builder:
            raise ValueError(f"model name {name!r} is already registered")
        _REGISTRY[name] = builder
        return builder

    return deco


def available_models() -> list[str]:
    return sorted(_REGISTRY)


def build_model(name: str, **config) -> nn.Module:
    """Instantiate a registered architecture with its config (unknown keys are errors)."""
    try:
        builder = _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown architecture {name!r}; registered: {available_models()}") from None
    return builder(**config)


def config_defaults(name: str) -> dict:
    """The keyword defaults of a registered architecture's constructor: what a checkpoint
    config that leaves a key out was built with (older files record fewer keys)."""
    import inspect

    builder = _REGISTRY.get(name)
    if builder is None:
        raise KeyError(f"unknown architecture {name!r}; registered: {available_models()}")
    return {k: p.default for k, p in inspect.signature(builder).parameters.items()
            if p.default is not inspect.Parameter.empty}
