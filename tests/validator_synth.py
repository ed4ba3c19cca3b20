"""Synthetic data and tiny models for the validator tests (no real data, seconds of CPU).

Real images are smooth colour gradients; fake ones add a 2x nearest-upsampled noise
pattern shifted by one pixel, so the NPR residual (x minus its nearest down/up copy)
is near zero on real images and large on fake ones, even after a JPEG round trip at
quality 75. A tiny NPR learns that in a few seconds; a "constant" NPR (fc1 zero, bias
set) answers the same probability whatever the image.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bitmind.checkpoint import save_checkpoint
from bitmind.image_transforms import base_transforms, jpeg_roundtrip
from bitmind.models import build_model

SIZE = 256


def gradient_image(rng: np.random.Generator, size: int = SIZE) -> np.ndarray:
    """A smooth two-colour gradient at a random angle, float32 HxWx3 in [0, 255]."""
    a = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    t = (np.cos(a) * xx + np.sin(a) * yy + 1.5) / 3.0
    c0, c1 = rng.uniform(30, 225, 3), rng.uniform(30, 225, 3)
    return (c0[None, None] * (1 - t[..., None]) + c1[None, None] * t[..., None]).astype(np.float32)


def synth_image(label: int, rng: np.random.Generator, size: int = SIZE) -> Image.Image:
    img = gradient_image(rng, size)
    if label == 1:
        noise = rng.uniform(-40, 40, (size // 2 + 1, size // 2 + 1, 1)).astype(np.float32)
        up = np.repeat(np.repeat(noise, 2, axis=0), 2, axis=1)[1:size + 1, 1:size + 1]  # shifted by one pixel
        img = img + up
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def make_folder(root: Path, n_per_class: int = 6, seed: int = 0, size: int = SIZE) -> Path:
    """``root/{real,fake}/synth/*.png`` with ``n_per_class`` images each."""
    rng = np.random.default_rng(seed)
    for label, cls in ((0, "real"), (1, "fake")):
        d = root / cls / "synth"
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            synth_image(label, rng, size).save(d / f"{cls}{i}_0.png")
    return root


def train_tiny_npr(path: Path, steps: int = 80, batch: int = 16, crop: int = 64, seed: int = 0) -> Path:
    """Train NPR(layers=[1,1], width=8) on synthetic images as the miner sees them
    (JPEG quality 75, base transforms) and save it to ``path``.

    Trains on 8-aligned ``crop`` x ``crop`` patches (same pixel grid and JPEG blocks as
    the full image); the network ends in global pooling, so it then runs on 256x256.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convolutions: extra threads only fight other processes for the cores
    try:
        return _train(path, steps, batch, crop, seed)
    finally:
        torch.set_num_threads(threads)


def _train(path: Path, steps: int, batch: int, crop: int, seed: int) -> Path:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed + 1000)
    pool = [(y, base_transforms(jpeg_roundtrip(synth_image(y, rng), 75))) for y in [0, 1] * 8]
    model = build_model("npr", layers=[1, 1], width=8)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    model.train()
    for _ in range(steps):
        picks = [pool[int(i)] for i in rng.integers(0, len(pool), batch)]
        xs = []
        for _, t in picks:
            top, left = (int(v) * 8 for v in rng.integers(0, (SIZE - crop) // 8 + 1, 2))
            xs.append(t[:, top:top + crop, left:left + crop])
        x = torch.stack(xs)
        y = torch.tensor([float(lbl) for lbl, _ in picks])
        loss = loss_fn(model(x)[:, 0], y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    save_checkpoint(model, path)
    return path


def constant_npr(path: Path, prob: float = 0.9) -> Path:
    """A tiny NPR that answers ``prob`` for every image (fc1 weight 0, bias logit(prob))."""
    model = build_model("npr", layers=[1, 1], width=8)
    with torch.no_grad():
        model.fc1.weight.zero_()
        model.fc1.bias.fill_(math.log(prob / (1 - prob)))
    model.eval()
    save_checkpoint(model, path)
    return path


def tiny_taesd_weights(wdir: Path) -> Path:
    """Random encoder/decoder state dicts in the TAESD layout (as ``../shared/models/taef2``
    stores them): conv, strided conv, conv; decoder conv, [clamp, relu, 2x up-sampling], conv."""
    torch.manual_seed(0)
    enc = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.Conv2d(8, 8, 3, padding=1, stride=2, bias=False),
                              torch.nn.Conv2d(8, 4, 3, padding=1))
    dec_sd = {"1.weight": torch.randn(8, 4, 3, 3) * 0.1, "1.bias": torch.zeros(8),
              "4.weight": torch.randn(3, 8, 3, 3) * 0.1, "4.bias": torch.zeros(3)}
    wdir.mkdir(parents=True, exist_ok=True)
    torch.save(enc.state_dict(), wdir / "taef2_encoder.pth")
    torch.save(dec_sd, wdir / "taef2_decoder.pth")
    return wdir
