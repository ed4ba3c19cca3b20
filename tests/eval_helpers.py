"""Tiny data and models for the evaluation, data and notebook tests (made on the fly)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from PIL import Image

from bitmind.checkpoint import model_meta, save_checkpoint
from bitmind.models import build_model, register_model


class Brightness(nn.Module):
    """logit = gain * (mean pixel value - 0.5): predictions a test can compute by hand."""

    def __init__(self, gain: float = 10.0):
        super().__init__()
        self.config = {"gain": gain}
        self.gain = nn.Parameter(torch.tensor(float(gain)))

    def forward(self, x):
        return (self.gain * (x.mean(dim=(1, 2, 3)) - 0.5)).unsqueeze(1)


try:
    register_model("test_brightness")(lambda gain=10.0: Brightness(gain))
except ValueError:  # already registered by an earlier import of this module
    pass


def brightness_prob(level: int, gain: float = 10.0, temperature: float = 1.0, bias: float = 0.0) -> float:
    """What the Brightness model answers for a solid image of grey level ``level``."""
    return 1.0 / (1.0 + math.exp(-(gain * (level / 255.0 - 0.5) / temperature + bias)))


def solid_image(path: Path, level: int, size: int = 32) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), (level, level, level)).save(path)  # PNG: lossless, so levels are exact
    return path


def solid_pool(root: Path, levels: dict[str, int], stems: list[str]) -> Path:
    """root/CLASS/SOURCE/STEM.png, one solid picture per stem at the source's grey level: with
    the brightness model, a source's level decides whether it is scored right or wrong."""
    for src, level in levels.items():
        for stem in stems:
            solid_image(root / src / f"{stem}.png", level)
    return root


def textured_image(path: Path, seed: int, size: int = 48) -> Path:
    """A seeded colourful image with structure, so geometry changes change model outputs."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    base = np.stack([np.sin(6 * xx + seed), np.cos(5 * yy - seed), xx * yy], -1)
    arr = np.clip((base * 0.5 + 0.5) * 200 + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, quality=95)
    return path


def make_textured_folder(root: Path, per_class: int = 4, seed: int = 0) -> Path:
    """root/{real,fake}/SOURCE/*.jpg with ``per_class`` images per class (two crops per stem)."""
    for cls, src in (("real", "cams"), ("fake", "gen")):
        for k in range(per_class):
            textured_image(root / cls / src / f"{cls}{k // 2}_{k % 2}.jpg", seed=seed + 100 * (cls == "fake") + k)
    return root


def save_brightness_model(path: Path, gain: float = 10.0, temperature: float | None = None, logit_bias: float | None = None) -> Path:
    m = build_model("test_brightness", gain=gain)
    extra = {} if temperature is None else {"temperature": temperature}
    if logit_bias is not None:
        extra["logit_bias"] = logit_bias
    return save_checkpoint(m, path, meta=model_meta(m, arch="test_brightness", **extra))


def save_tiny_npr(path: Path, seed: int = 0, temperature: float | None = None) -> Path:
    torch.manual_seed(seed)
    m = build_model("npr", layers=[1, 1], width=8)
    extra = {} if temperature is None else {"temperature": temperature}
    return save_checkpoint(m, path, meta=model_meta(m, **extra))


def solid_two_class_folder(root: Path) -> Path:
    """16 solid pictures: 8 darker real photos (real/cam), 8 brighter fakes (fake/gen)."""
    for k in range(8):
        solid_image(root / "real" / "cam" / f"r{k}.png", 40 + 12 * k)
        solid_image(root / "fake" / "gen" / f"f{k}.png", 110 + 12 * k)
    return root
