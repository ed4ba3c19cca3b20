"""TAESD-family tiny autoencoders (TAEF2 in ``../shared/models/taef2``), rebuilt from weights alone.

Latent-diffusion generators (SD, SDXL, SD3, Flux) produce every pixel through a learned
VAE decoder that up-samples 8x; that decoder leaves the up-sampling trace NPR looks for.
The TAEF2 weights (MIT, madebyollin/taesd) are training-data tooling, never shipped with
the miner. The network is rebuilt from the state dict's own layer indices (plain 3x3
convs, residual blocks with an optional GroupNorm "pool" branch, parameter-free clamp /
ReLU / 2x nearest up-sampling in the gaps), so no external code is needed.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn as nn

logger = logging.getLogger(__name__)


class DecoderLoadError(ValueError):
    """A decoder's weights are missing or unreadable; the message says which file and why."""


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


def _load_state(path: Path) -> dict:
    if not path.is_file():
        raise DecoderLoadError(f"decoder weights not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, not a torch file, pickled code refused by weights_only
        raise DecoderLoadError(f"cannot read decoder weights {path}: {type(e).__name__}: {e}") from e


class TinyAutoencoder(nn.Module):
    """``weights_dir/<prefix>_encoder.pth`` + ``<prefix>_decoder.pth`` as one round trip."""

    def __init__(self, weights_dir: str | Path, prefix: str = "taef2"):
        super().__init__()
        d = Path(weights_dir)
        enc, dec = _load_state(d / f"{prefix}_encoder.pth"), _load_state(d / f"{prefix}_decoder.pth")
        try:
            self.encoder = build_from_state_dict(enc, decoder=False)
            self.decoder = build_from_state_dict(dec, decoder=True)
        except Exception as e:  # readable file, but not TAESD-layout weights
            raise DecoderLoadError(f"{d}: not TAESD-layout {prefix} weights ({type(e).__name__}: {e})") from e
        # Spatial compression: one 2x up-sampling per parameter-free Upsample gap.
        self.factor = 2 ** sum(isinstance(m, nn.Upsample) for m in self.decoder)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """RGB in [0, 1] (sides divisible by ``factor``) -> round trip in [0, 1]."""
        return self.decoder(self.encoder(x)).clamp(0, 1)
