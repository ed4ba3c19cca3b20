"""Small GANs trained on the pools' real photos, to make GAN fakes the pools lack.

Why: by leave-one-family-out, GAN pictures are the family no recipe reads (held-out AUC at
or below chance in every run, docs/Generalisation.md). Every fake in the pools except 97
GAN pictures comes from a latent-diffusion VAE decoder, so "fake" is learned as that
decoder's trace; a GAN's generator up-samples with its own learned layers. Synthetic traces
of random up-samplers and round trips through a trained decoder did not teach it. A GAN
actually trained adversarially leaves the traces GANs leave (learned transposed-convolution
or nearest-neighbour-plus-convolution up-sampling, the discriminator's pressure on the
spectrum), whatever its pictures show. These generators are small and trained for minutes,
so their pictures are poor; what they are for is their traces, and whether those teach the
detector to read unseen GANs is for LOGO to say (the GAN fold holds out every GAN of the
pools, never these).

Up-sampling designs, each its own source ``fake/minigan-<design>`` (one family,
``minigan``); the default two: ``transposed`` (DCGAN, pix2pixHD: stride-2 transposed
convolutions, the last one straight to RGB) and ``nearest`` (nearest-neighbour doubling,
then a 3x3 convolution, as ProGAN, BigGAN, SPADE and VQGAN's decoder do). Three more, to
find out which up-sampling traces transfer: ``blur`` (a transposed convolution followed by
a fixed [1, 3, 3, 1] low-pass, as StyleGAN2 up-samples), ``bilinear`` (bilinear doubling,
then a 3x3 convolution) and ``shuffle`` (a 3x3 convolution to four times the channels, then
pixel shuffle: sub-pixel convolution). Hinge loss, spectral normalisation in the
discriminator, the discriminator learning 4x faster than the generator.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import random
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from bitmind.data.families import MINIGAN_PREFIX
from bitmind.data.sources import LocalFolderSource
from bitmind.data.splits import split_of

log = logging.getLogger(__name__)

#: Every up-sampling design a generator can have.
DESIGNS = ("transposed", "nearest", "blur", "bilinear", "shuffle")
#: The designs trained when none are named (the two measured by LOGO).
DEFAULT_DESIGNS = ("transposed", "nearest")
SOURCE_PREFIX = MINIGAN_PREFIX
#: Learning rates of the generator and the discriminator (the two time-scale rule).
LR_G, LR_D = 1e-4, 4e-4
#: A ``spread_ratio`` below this is reported as a collapsed GAN.
COLLAPSED = 0.25


def _levels(size: int) -> int:
    """Number of doublings from the generator's 4x4 start to ``size`` (a power of two >= 16)."""
    n = int(round(math.log2(size / 4)))
    if size < 16 or 4 * 2 ** n != size:
        raise ValueError(f"size must be a power of two >= 16, got {size}")
    return n


class Blur(nn.Module):
    """A fixed separable [1, 3, 3, 1] low-pass per channel, size kept: the filter StyleGAN2
    applies after each transposed convolution against its checkerboard."""

    def __init__(self):
        super().__init__()
        k = torch.tensor([1.0, 3.0, 3.0, 1.0])
        self.register_buffer("kernel", (torch.outer(k, k) / k.sum() ** 2).view(1, 1, 4, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        return F.conv2d(F.pad(x, (1, 2, 1, 2)), self.kernel.expand(c, 1, 4, 4), groups=c)


def _up(design: str, cin: int, cout: int) -> list[nn.Module]:
    """The layers that double the side and map ``cin`` to ``cout`` channels, by design."""
    if design == "transposed":
        return [nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1)]
    if design == "blur":
        return [nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1), Blur()]
    if design == "shuffle":
        return [nn.Conv2d(cin, 4 * cout, 3, padding=1), nn.PixelShuffle(2)]
    return [nn.Upsample(scale_factor=2, mode=design), nn.Conv2d(cin, cout, 3, padding=1)]  # nearest, bilinear


class Generator(nn.Module):
    """z (B, z_dim) -> pictures (B, 3, size, size) in [-1, 1]. ``transposed`` ends with its
    last up-sampling straight to RGB (as DCGAN); every other design with a 3x3 convolution
    to RGB after its last up-sampling."""

    def __init__(self, size: int = 128, z_dim: int = 128, width: int = 32, design: str = "transposed"):
        super().__init__()
        if design not in DESIGNS:
            raise ValueError(f"design must be one of {DESIGNS}, got {design!r}")
        n = _levels(size)
        chans = [min(width * 8, width * 2 ** (n - i)) for i in range(n + 1)]  # 4x4 ... size
        self.z_dim, self.design = z_dim, design
        self.start = nn.Sequential(nn.Linear(z_dim, chans[0] * 16), nn.Unflatten(1, (chans[0], 4, 4)),
                                   nn.BatchNorm2d(chans[0]), nn.ReLU(inplace=True))
        straight = design == "transposed"
        layers: list[nn.Module] = []
        for i in range(n):
            last = i == n - 1
            cout = 3 if last and straight else chans[i + 1]
            layers += _up(design, chans[i], cout)
            if not (last and straight):
                layers += [nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
        if not straight:
            layers.append(nn.Conv2d(chans[n], 3, 3, padding=1))
        self.body = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.body(self.start(z)))


class Discriminator(nn.Module):
    """pictures (B, 3, size, size) in [-1, 1] -> (B,) realness scores; spectrally normalised."""

    def __init__(self, size: int = 128, width: int = 32):
        super().__init__()
        n = _levels(size)
        sn = nn.utils.parametrizations.spectral_norm
        layers: list[nn.Module] = []
        cin = 3
        for i in range(n):
            cout = min(width * 8, width * 2 ** i)
            layers += [sn(nn.Conv2d(cin, cout, 4, stride=2, padding=1)), nn.LeakyReLU(0.2, inplace=True)]
            cin = cout
        self.body = nn.Sequential(*layers)
        self.head = sn(nn.Linear(cin * 16, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.body(x), 1)).squeeze(1)


def real_files(roots: Sequence[str | Path], kinds: Sequence[str] | None = None, split: str | None = "train") -> list[Path]:
    """The real photos of the pools ``roots`` (``LocalFolderSource``: ``ROOT/real/KIND/``;
    only ``kinds`` when given) whose stem falls in ``split`` (the pools' split by stem; None:
    all), in the source's order. Training split by default: a GAN that saw test photos would
    carry them into the training fakes."""
    files = []
    for root in roots:
        src = LocalFolderSource(root)
        for i in range(len(src)):
            kind = src.source_name(i).partition("/")[2]
            if src.label(i) == 0 and (not kinds or kind in kinds) and (split is None or split_of(src.stem(i)) == split):
                files.append(Path(src.path(i)))
    return files


def load_crops(files: Sequence[Path], size: int, count: int, seed: int = 0) -> torch.Tensor:
    """(count, 3, size, size) uint8: a random square crop (a fifth to all of the shorter
    side) of each file in turn, resized to ``size``. Unreadable files are skipped with a
    warning; no readable file at all is an error."""
    if not files:
        raise ValueError("no real photos found to train the GAN on")
    rng = random.Random(seed)
    order = list(files)
    rng.shuffle(order)
    out, bad, i = [], set(), 0
    while len(out) < count:
        path = order[i % len(order)]
        i += 1
        if path in bad:
            continue
        try:
            with Image.open(path) as im:
                im = im.convert("RGB")
                side = min(im.size)
                crop = max(1, int(side * math.sqrt(rng.uniform(0.2, 1.0))))
                x0, y0 = rng.randint(0, im.size[0] - crop), rng.randint(0, im.size[1] - crop)
                im = im.crop((x0, y0, x0 + crop, y0 + crop)).resize((size, size), Image.BICUBIC)
                out.append(torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1))
        except OSError as e:
            bad.add(path)
            log.warning("skipping %s: %s", path, e)
            if len(bad) == len(order):
                raise ValueError("none of the real photos could be read") from e
    return torch.stack(out)


def train_gan(crops: torch.Tensor, design: str, steps: int, device: str | torch.device = "cpu", batch_size: int = 64,
              z_dim: int = 128, width: int = 32, lr: float = LR_G, lr_d: float | None = LR_D, seed: int = 0,
              log_every: int = 100) -> tuple[Generator, dict]:
    """Train one generator of ``design`` on ``crops`` (uint8, N x 3 x S x S) with the hinge
    loss, the generator at ``lr`` and the discriminator at ``lr_d`` (None: ``lr``; the
    defaults are the two time-scale rule of spectrally normalised GANs); returns the
    generator (eval mode) and a history of both losses."""
    torch.manual_seed(seed)
    size = crops.shape[-1]
    dev = torch.device(device)
    g, d = Generator(size, z_dim, width, design).to(dev), Discriminator(size, width).to(dev)
    opt_g = torch.optim.Adam(g.parameters(), lr=lr, betas=(0.0, 0.99))
    opt_d = torch.optim.Adam(d.parameters(), lr=lr if lr_d is None else lr_d, betas=(0.0, 0.99))
    data = crops.to(dev)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    history = {"step": [], "loss_d": [], "loss_g": []}
    t0 = time.time()
    for step in range(1, steps + 1):
        idx = torch.randint(0, len(data), (batch_size,), generator=gen).to(dev)
        real = _from_uint8(data[idx])
        if torch.rand(1, generator=gen).item() < 0.5:
            real = real.flip(3)
        z = torch.randn(batch_size, z_dim, device=dev)
        fake = g(z)
        loss_d = F.relu(1.0 - d(real)).mean() + F.relu(1.0 + d(fake.detach())).mean()
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        loss_g = -d(fake).mean()
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        if step % log_every == 0 or step == steps:
            history["step"].append(step)
            history["loss_d"].append(loss_d.item())
            history["loss_g"].append(loss_g.item())
            log.info("%s GAN step %d/%d: D %.3f, G %.3f (%.1f steps/s)", design, step, steps, history["loss_d"][-1],
                     history["loss_g"][-1], step / (time.time() - t0))
    history["seconds"] = time.time() - t0
    return g.eval(), history


@torch.no_grad()
def _generate(g: Generator, n: int, gen: torch.Generator) -> torch.Tensor:
    """``n`` pictures of ``g`` in [-1, 1], float on the CPU, from noise drawn with ``gen``."""
    return g(torch.randn(n, g.z_dim, generator=gen).to(next(g.parameters()).device)).float().cpu()


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Pictures in [-1, 1] -> uint8 levels."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def _from_uint8(x: torch.Tensor) -> torch.Tensor:
    """uint8 levels -> float pictures in [-1, 1], the generator's range."""
    return x.float().div(127.5).sub(1.0)


@torch.no_grad()
def write_fakes(g: Generator, out_root: str | Path, count: int, seed: int = 0, batch_size: int = 64,
                name: str | None = None) -> Path:
    """``count`` pictures of ``g`` as lossless PNG in ``out_root/fake/minigan-<name>/``
    (``name``: the design by default), named ``minigan-<name>-NNNNN.png`` (so the pools'
    stem split spreads them over train / val / test like any source); returns that folder."""
    name = name or g.design
    folder = Path(out_root) / "fake" / f"{SOURCE_PREFIX}{name}"
    folder.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    k = 0
    while k < count:
        arr = _to_uint8(_generate(g, min(batch_size, count - k), gen)).permute(0, 2, 3, 1).numpy()
        for a in arr:
            Image.fromarray(a).save(folder / f"{SOURCE_PREFIX}{name}-{k:05d}.png")
            k += 1
    return folder


@torch.no_grad()
def spread_ratio(g: Generator, crops: torch.Tensor, n: int = 64, seed: int = 2) -> float:
    """How varied the generator's pictures are, against the photos it trained on: the
    per-pixel standard deviation over ``n`` of its pictures, averaged over pixels, divided by
    the same over ``n`` of ``crops``. Near 0: the GAN collapsed to one picture (a detector
    would learn that picture, not a GAN's trace); about 1: as varied as the photos."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    fake = _generate(g, n, gen)
    real = _from_uint8(crops[torch.randperm(len(crops), generator=gen)[:n]])
    return float(fake.std(dim=0).mean() / real.std(dim=0).mean().clamp_min(1e-6))


def sample_grid(g: Generator, path: str | Path, n: int = 16, seed: int = 1) -> Path:
    """A square grid of ``n`` pictures of ``g`` (PNG), for a person to look at."""
    x = _generate(g, n, torch.Generator(device="cpu").manual_seed(seed))
    side = int(math.ceil(math.sqrt(n)))
    s = x.shape[-1]
    canvas = torch.zeros(3, side * s, side * s)
    for i, im in enumerate(x):
        r, c = divmod(i, side)
        canvas[:, r * s:(r + 1) * s, c * s:(c + 1) * s] = im
    arr = _to_uint8(canvas).permute(1, 2, 0).numpy()
    Image.fromarray(arr).save(path)
    return Path(path)


def make_gan_fakes(roots: Sequence[str | Path], out: str | Path, designs: Sequence[str] = DEFAULT_DESIGNS, size: int = 128,
                   steps: int = 3000, count: int = 1500, crops: int = 4096, width: int = 32, batch_size: int = 64,
                   device: str = "cpu", seed: int = 0, kinds: Sequence[str] | None = None, lr: float = LR_G,
                   lr_d: float = LR_D, per_design: int = 1) -> dict:
    """Train ``per_design`` small GANs per design (each its own seed) on the training-split
    real photos of ``roots`` and write ``count`` pictures of each under ``out`` (a pool
    root), one source per GAN: ``fake/minigan-<design>`` for the first, ``-<design>2``,
    ``-<design>3`` ... for the others, so that each is weighed as a source of its own (two
    GANs of one design lift unseen GANs more than one: docs/Generalisation_record.md, "Per held-out
    GAN source, and which up-sampling designs"); also ``out/minigan_<name>_samples.png`` and
    ``out/minigan.json`` (settings, loss history, seconds, ``spread_ratio``: a collapsed GAN
    is logged as a warning and marked), keyed by the same names. Returns that summary."""
    if per_design < 1:
        raise ValueError(f"per_design must be at least 1, got {per_design}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = real_files(roots, kinds)
    log.info("%d training-split real photos; loading %d crops of %d px", len(files), crops, size)
    data = load_crops(files, size, crops, seed=seed)
    summary = {"roots": [str(r) for r in roots], "photos": len(files), "crops": int(len(data)), "size": size, "steps": steps,
               "count": count, "width": width, "batch_size": batch_size, "lr": lr, "lr_d": lr_d, "device": str(device), "seed": seed,
               "per_design": per_design, "designs": {}}
    for r in range(per_design):
        for k, design in enumerate(designs):
            name, offset = (design if r == 0 else f"{design}{r + 1}"), k + 1000 * r  # the first GAN's seeds as before
            g, history = train_gan(data, design, steps, device=device, batch_size=batch_size, width=width, lr=lr, lr_d=lr_d,
                                   seed=seed + offset)
            spread = spread_ratio(g, data)
            if spread < COLLAPSED:
                log.warning("%s GAN looks collapsed: its pictures vary %.2f as much as the photos (train longer, or another seed)",
                            name, spread)
            folder = write_fakes(g, out, count, seed=seed + 100 + offset, name=name)
            sample_grid(g, out / f"minigan_{name}_samples.png")
            summary["designs"][name] = {"design": design, "source": f"fake/{SOURCE_PREFIX}{name}", "folder": str(folder),
                                        "spread_ratio": spread, "collapsed": spread < COLLAPSED, "history": history}
            log.info("%s: %d pictures in %s (%.0f s of training)", name, count, folder, history["seconds"])
    (out / "minigan.json").write_text(json.dumps(summary, indent=2))
    return summary


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m bitmind.training.mini_gan", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", nargs="+", required=True, help="pool roots (CLASS/SOURCE layout); their real/ training photos are used")
    p.add_argument("--out", required=True, help="output pool root: OUT/fake/minigan-<design>/*.png")
    p.add_argument("--designs", nargs="+", choices=DESIGNS, default=list(DEFAULT_DESIGNS),
                   help="up-sampling designs, one GAN each (default: %(default)s)")
    p.add_argument("--kinds", nargs="*", default=None, help="only these real kinds (folder names under real/)")
    p.add_argument("--size", type=int, default=128, help="picture side, a power of two >= 16")
    p.add_argument("--steps", type=int, default=3000, help="training steps per GAN")
    p.add_argument("--count", type=int, default=1500, help="pictures written per design")
    p.add_argument("--crops", type=int, default=4096, help="real crops held in memory to train on")
    p.add_argument("--width", type=int, default=32, help="channels of the first discriminator layer (the generator's last)")
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--lr", type=float, default=LR_G, help="generator learning rate")
    p.add_argument("--lr_d", type=float, default=LR_D, help="discriminator learning rate")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--per_design", type=int, default=1,
                   help="GANs per design, each its own seed and source (minigan-<design>, minigan-<design>2, ...)")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    try:
        _levels(a.size)
        return make_gan_fakes(a.data, a.out, a.designs, a.size, a.steps, a.count, a.crops, a.width, a.batch_size,
                              a.device, a.seed, a.kinds, a.lr, a.lr_d, a.per_design)
    except (ValueError, FileNotFoundError) as e:  # no usable photos, a missing pool
        p.error(str(e))


if __name__ == "__main__":
    main()
