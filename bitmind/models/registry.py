"""Architecture registry: a checkpoint names its architecture and config; this maps
the name back to a constructor, so new detectors can be added beside NPR and the miner
can serve any of them from the file alone."""
from __future__ import annotations

import numbers
from typing import Callable

import numpy as np
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
    """Instantiate a registered architecture with its config (unknown keys are errors, and so
    is a value of another type than the constructor's default: ``config_type_problem``)."""
    try:
        builder = _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown architecture {name!r}; registered: {available_models()}") from None
    if (problem := config_type_problem(name, config)) is not None:
        raise ValueError(problem)
    return builder(**config)


def config_type_problem(name: str, config: dict) -> str | None:
    """Why a value of ``config`` cannot build architecture ``name`` (one line), or None: each
    value must have the type of the constructor's default for that key (an int where the
    default is a float, a list where it is a tuple; a default of None takes anything). Why: a
    checkpoint's config is JSON that a person may edit, and ``width: "8"`` failed deep inside
    the constructor with "not all arguments converted during string formatting"."""
    for key, default in config_defaults(name).items():
        if key not in config or default is None:
            continue
        value, want = config[key], type(default)
        if not _fits(value, default):
            kind = f"a list of {type(default[0]).__name__}" if want is tuple and default else _a(want.__name__)
            shown = list(default) if want is tuple else default
            got = "null" if value is None else _a(type(value).__name__)
            return (f"config {key}={value!r} ({got}): architecture {name!r} takes {kind} "
                    f"(default {shown!r})")
    return None


def _fits(value, default) -> bool:
    """Whether ``value`` has the type of ``default`` (numbers.Integral / Real, so numpy scalars
    from Python callers fit; a bool is no number; a list or tuple where a tuple is the default,
    each item of its first item's type)."""
    if isinstance(default, tuple):
        return isinstance(value, (list, tuple)) and (not default or all(_fits(v, default[0]) for v in value))
    is_bool = isinstance(value, (bool, np.bool_))
    if isinstance(default, bool):
        return is_bool
    if isinstance(default, int):
        return isinstance(value, numbers.Integral) and not is_bool
    if isinstance(default, float):
        return isinstance(value, numbers.Real) and not is_bool
    return isinstance(value, type(default))


def _a(noun: str) -> str:
    return ("an " if noun[:1] in "aeiou" else "a ") + noun


def config_defaults(name: str) -> dict:
    """The keyword defaults of a registered architecture's constructor: what a checkpoint
    config that leaves a key out was built with (older files record fewer keys)."""
    import inspect

    builder = _REGISTRY.get(name)
    if builder is None:
        raise KeyError(f"unknown architecture {name!r}; registered: {available_models()}")
    return {k: p.default for k, p in inspect.signature(builder).parameters.items()
            if p.default is not inspect.Parameter.empty}
