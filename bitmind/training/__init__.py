"""Training the detector: options (``TrainConfig``) and the loop (``train``).

The package is lazy (PEP 562): its names are imported on first use, not when the package
is. ``python -m bitmind.training.sweep`` (and any ``bitmind.training.<module>``) imports
this package before its own first line runs; were ``train`` imported here, torch (~2 s)
would load in that window, where the command cannot catch a Ctrl-C and Python prints a
KeyboardInterrupt traceback. ``from bitmind.training import train`` works as ever.
"""
import importlib

#: Each public name, and the submodule it lives in.
_LAZY = {
    "TrainConfig": "bitmind.training.config",
    "build_parser": "bitmind.training.config",
    "parse_config": "bitmind.training.config",
    "train": "bitmind.training.trainer",
}

__all__ = ["TrainConfig", "build_parser", "parse_config", "train"]


def __getattr__(name: str):
    try:
        module = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
