"""Per-challenge reward, as an SN34 validator gives it.

A miner earns 1 when its rounded prediction equals the label (0 real, 1 fake) and 0
otherwise. An answer that is missing (the -1.0 default, ``None``), not a number, NaN
or outside [0, 1] is *wrong*, never an error: a broken miner must cost itself, not the
validator's round.
"""
from __future__ import annotations

import math
from typing import Iterable

import numpy as np


def valid_prediction(prediction) -> bool:
    """True when ``prediction`` is a finite real number in [0, 1]."""
    if isinstance(prediction, bool) or prediction is None:
        return False
    try:
        p = float(prediction)
    except (TypeError, ValueError):
        return False
    return math.isfinite(p) and 0.0 <= p <= 1.0


def reward(prediction, label: int) -> float:
    """1.0 if ``round(prediction) == label`` for a valid prediction, else 0.0.

    Python's ``round`` rounds 0.5 to 0, so exactly 0.5 counts as "real", consistent
    with "> 0.5 means AI-generated".
    """
    if label not in (0, 1):
        raise ValueError(f"label must be 0 or 1, got {label!r}")
    if not valid_prediction(prediction):
        return 0.0
    return 1.0 if round(float(prediction)) == label else 0.0


def rewards(predictions: Iterable, label: int) -> np.ndarray:
    """Vectorised ``reward`` over the answers of several miners to one challenge."""
    return np.array([reward(p, label) for p in predictions], dtype=np.float64)
