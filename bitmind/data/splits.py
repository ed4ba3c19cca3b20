"""Deterministic train/val/test splits by source picture.

A picture's split is a pure function of (seed, stem): crops ``X_0.jpg``/``X_1.jpg``
and any derived image that keeps the stem (e.g. an autoencoder round trip of a real
photo) always land together, so nothing of a test picture is ever trained on.
"""
from __future__ import annotations

import hashlib

from bitmind.data.sources import ImageSource

SPLITS = ("train", "val", "test")
DEFAULT_FRACTIONS = (0.8, 0.1, 0.1)


def split_of(stem: str, seed: int = 0, fractions=DEFAULT_FRACTIONS) -> str:
    h = hashlib.sha256(f"{seed}:{stem}".encode()).digest()
    u = int.from_bytes(h[:8], "big") / 2**64
    acc = 0.0
    for name, frac in zip(SPLITS, fractions):
        acc += frac
        if u < acc:
            return name
    return SPLITS[-1]


def split_indices(source: ImageSource, seed: int = 0, fractions=DEFAULT_FRACTIONS) -> dict[str, list[int]]:
    """Indices of ``source`` per split name."""
    if abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"split fractions must sum to 1, got {fractions}")
    out: dict[str, list[int]] = {s: [] for s in SPLITS}
    for i in range(len(source)):
        out[split_of(source.stem(i), seed, fractions)].append(i)
    return out


def in_subset(stem: str, fraction: float, seed: int = 0) -> bool:
    """Whether a picture belongs to the first ``fraction`` of its split (learning curves).

    A pure function of (seed, stem) with its own hash salt, independent of the split
    draw; subsets are nested (a picture in the 1/4 subset is also in the 1/2 subset),
    so a learning curve adds data to the same pictures instead of swapping them."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    h = hashlib.sha256(f"subset:{seed}:{stem}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64 < fraction
