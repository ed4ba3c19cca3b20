"""Make "aligned" fakes: real photos passed through a tiny latent autoencoder (TAEF2).

Latent-diffusion generators (SD, SDXL, SD3, Flux) produce every pixel through a learned
VAE decoder that up-samples 8x; that decoder leaves the up-sampling trace NPR looks for.
A real photo encoded and decoded by such an autoencoder looks the same (~32-35 dB PSNR)
but now carries the trace, so (real, round trip) pairs differ ONLY by the generator's
decoder: no content or format shortcut for the detector to learn.

The TAEF2 weights (MIT, madebyollin/taesd) are training data tooling, never shipped with
the miner. The network is rebuilt from the state dict's own layer indices (plain 3x3
convs, residual blocks with an optional GroupNorm "pool" branch, parameter-free clamp /
ReLU / 2x nearest up-sampling in the gaps), so no external code is needed.

Output keeps each input's file name (and hence its split stem) under
``OUT/fake/<prefix><source>/``, saved as JPEG quality 90 like the sn34-mini pool.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch
import torch.nn as nn
import torchvision.transforms.functional as TF

logger = logging.getLogger(__name__)


def _conv(n_in: int, n_out: int, bias: bool = True, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(n_in, n_out, 3, padding=1, bias=bias, stride=stride)


class _Clamp(nn.Module):
    def forward(self, x):
        return torch.tanh(x / 3) * 3


class _Block(nn.Module):
    def __init__(self, n: int, gn_pool: bool):
        super().__init__()
        self.conv = nn.Sequential(_conv(n, n), nn.ReLU(), _conv(n, n), nn.ReLU(), _conv(n, n))
        self.pool = nn.Sequential(nn.Conv2d(n, 4 * n, 1, bias=False), nn.GroupNorm(4, 4 * n), nn.ReLU(),
                                  nn.Conv2d(4 * n, n, 1, bias=False)) if gn_pool else None
        self.fuse = nn.ReLU()

    def forward(self, x):
        if self.pool is not None:
            x = x + self.pool(x)
        return self.fuse(self.conv(x) + x)


def build_from_state_dict(state: dict, decoder: bool) -> nn.Sequential:
    """Rebuild a TAESD-family encoder or decoder from its flat state dict."""
    by_index: dict[int, dict] = {}
    for k, v in state.items():
        head, _, rest = k.partition(".")
        by_index.setdefault(int(head), {})[rest] = v
    layers = []
    for i in range(max(by_index) + 1):
        entry = by_index.get(i)
        if entry is None:
            if not decoder:
                raise ValueError(f"encoder layer {i} has no weights")
            layers.append(_Clamp() if i == 0 else nn.ReLU() if i == 2 else nn.Upsample(scale_factor=2, mode="nearest"))
        elif "conv.0.weight" in entry:
            layers.append(_Block(entry["conv.0.weight"].shape[0], "pool.0.weight" in entry))
        else:
            w = entry["weight"]
            stride = 2 if (not decoder and "bias" not in entry) else 1  # the encoder's down-sampling convs
            layers.append(_conv(w.shape[1], w.shape[0], bias="bias" in entry, stride=stride))
    net = nn.Sequential(*layers)
    net.load_state_dict(state, strict=True)
    return net.eval()


class TinyAutoencoder(nn.Module):
    def __init__(self, weights_dir: str | Path, prefix: str = "taef2"):
        super().__init__()
        d = Path(weights_dir)
        load = lambda name: torch.load(d / f"{prefix}_{name}.pth", map_location="cpu", weights_only=True)
        self.encoder = build_from_state_dict(load("encoder"), decoder=False)
        self.decoder = build_from_state_dict(load("decoder"), decoder=True)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """RGB in [0, 1] (sides divisible by 8) -> round trip in [0, 1]."""
        return self.decoder(self.encoder(x)).clamp(0, 1)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = torch.mean((a - b) ** 2).item()
    return 10 * torch.log10(torch.tensor(1.0 / max(mse, 1e-12))).item()


def make_aligned_fakes(real_root: str | Path, out_root: str | Path, weights_dir: str | Path, prefix: str = "taef2_",
                       device: str = "cpu", batch_size: int = 16, limit: int = 0, quality: int = 90,
                       split: str | None = None, split_seed: int = 0) -> dict:
    """Round-trip every ``real_root/real/SOURCE/*`` image into ``out_root/fake/<prefix>SOURCE/``
    (only those of one ``split``, by picture stem, if given: e.g. the test split's photos as
    fakes of a generator that no training image came from)."""
    from tqdm.auto import tqdm

    from bitmind.data import LocalFolderSource, split_indices
    from bitmind.image_io import _to_rgb

    src = LocalFolderSource(real_root)
    pool = split_indices(src, seed=split_seed)[split] if split else range(len(src))
    idx = [i for i in pool if src.label(i) == 0]
    if limit:
        idx = idx[:limit]
    tae = TinyAutoencoder(weights_dir).to(device)
    out_root = Path(out_root)
    psnrs, written = [], 0

    def flush(batch: list[tuple[int, torch.Tensor]]) -> None:
        nonlocal written
        x = torch.stack([t for _, t in batch]).to(device)
        y = tae(x).cpu()
        for (i, a), b in zip(batch, y):
            psnrs.append(psnr(a, b))
            source = src.source_name(i).split("/", 1)[1]
            dst = (out_root / "fake" / f"{prefix}{source}" / Path(src.path(i)).name).with_suffix(".jpg")
            dst.parent.mkdir(parents=True, exist_ok=True)
            TF.to_pil_image(b).save(dst, quality=quality)
            written += 1

    pending: list[tuple[int, torch.Tensor]] = []
    for i in tqdm(idx, desc="aligned fakes"):
        img = _to_rgb(src.load(i))
        w, h = img.width // 8 * 8, img.height // 8 * 8  # no resizing: crop to the autoencoder's 8-pixel grid
        if w == 0 or h == 0:
            continue
        t = TF.to_tensor(img.crop((0, 0, w, h)))
        if pending and (len(pending) >= batch_size or pending[0][1].shape != t.shape):
            flush(pending)
            pending = []
        pending.append((i, t))
    if pending:
        flush(pending)
    stats = {"written": written, "psnr_mean": sum(psnrs) / max(len(psnrs), 1)}
    logger.info("aligned fakes: %s", stats)
    return stats


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description="Round-trip real photos through TAEF2 to make aligned fake training images.")
    p.add_argument("--real", required=True, help="folder in the CLASS/SOURCE layout (its real/ part is used)")
    p.add_argument("--out", required=True, help="output root; images go to OUT/fake/<prefix>SOURCE/")
    p.add_argument("--weights", required=True, help="folder holding taef2_encoder.pth and taef2_decoder.pth")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--limit", type=int, default=0)
    p.add_argument("--split", choices=("train", "val", "test"), default=None, help="only the real photos of this split")
    p.add_argument("--split_seed", type=int, default=0)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    stats = make_aligned_fakes(a.real, a.out, a.weights, device=a.device, batch_size=a.batch_size, limit=a.limit,
                               split=a.split, split_seed=a.split_seed)
    print(stats)
    return stats


if __name__ == "__main__":
    main()
