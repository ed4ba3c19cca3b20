"""Decoders for aligned fakes, named on the command line as ``NAME=PATH``.

``PATH`` is a TAESD-family folder (one ``<prefix>_encoder.pth`` + ``<prefix>_decoder.pth``
pair, as ``../shared/models/taef2`` holds): one decoder, source ``aligned-NAME``.
(The decoder zoo that trained its own decoders was removed: its one sharp decoder made
held-out detection worse, docs/Training.md "Aligned fakes".)

Any missing or unreadable file raises ``DecoderLoadError`` naming the file, so a command
line tool can print one clear line instead of a traceback.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from bitmind.training.taesd import DecoderLoadError, TinyAutoencoder


@dataclass
class Decoder:
    source: str  # output folder under fake/, e.g. aligned-taef2
    model: nn.Module  # RGB [0, 1] -> round trip [0, 1], sides divisible by ``model.factor``
    path: Path

    @property
    def factor(self) -> int:
        return int(self.model.factor)


def parse_decoder_arg(arg: str) -> tuple[str, Path]:
    name, sep, path = arg.partition("=")
    if not sep or not name or not path:
        raise DecoderLoadError(f"--decoders takes NAME=PATH, got {arg!r}")
    if "/" in name or name.startswith("."):
        raise DecoderLoadError(f"decoder name {name!r} must be a plain folder name")
    return name, Path(path).expanduser()


def load_decoders(args: list[str]) -> list[Decoder]:
    """``["taef2=../shared/models/taef2", "other=DIR"]`` -> decoders, in order."""
    out: list[Decoder] = []
    for arg in args:
        name, path = parse_decoder_arg(arg)
        if not path.is_dir():
            raise DecoderLoadError(f"decoder folder not found: {path}" if not path.exists() else
                                   f"{path}: a decoder is a folder with one <prefix>_encoder.pth/_decoder.pth pair")
        prefixes = sorted(p.name[: -len("_encoder.pth")] for p in path.glob("*_encoder.pth"))
        if len(prefixes) != 1:
            raise DecoderLoadError(f"{path}: expected one <prefix>_encoder.pth/_decoder.pth pair, "
                                   f"found encoders {prefixes or 'none'}")
        out.append(Decoder(f"aligned-{name}", TinyAutoencoder(path, prefixes[0]), path))
    sources = [d.source for d in out]
    if len(set(sources)) != len(sources):
        raise DecoderLoadError(f"two decoders would write to the same folder: {sources}")
    return out


@torch.no_grad()
def round_trip(model: nn.Module, x: torch.Tensor, factor: int | None = None) -> torch.Tensor:
    """Round trip of a batch of any size: sides are padded (edge pixels repeated) to a
    multiple of the model's factor and the result cropped back, so every output pixel
    lines up with its input pixel and the up-sampling grid starts at the top-left corner."""
    f = int(factor or model.factor)
    h, w = x.shape[-2:]
    ph, pw = -h % f, -w % f
    xp = F.pad(x, (0, pw, 0, ph), mode="replicate") if ph or pw else x
    return model(xp)[..., :h, :w].clamp(0, 1)


def psnr(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB of each image of two (N, 3, H, W) batches in [0, 1]:
    10 log10(1 / MSE). How faithful a round trip is (TAEF2: about 31 dB on the pools)."""
    mse = ((a.float() - b.float()) ** 2).flatten(1).mean(1)
    return 10 * torch.log10(1.0 / mse.clamp_min(eps))
