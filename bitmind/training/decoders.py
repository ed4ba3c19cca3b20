"""Decoders for aligned fakes, named on the command line as ``NAME=PATH``.

``PATH`` may be

* a TAESD-family folder (``taef2_encoder.pth`` + ``taef2_decoder.pth``): one decoder,
  source ``aligned-NAME``;
* a decoder-zoo folder (``zoo.json`` + one safetensors file per decoder, written by
  ``python -m bitmind.training.decoder_zoo train``): one decoder per ACCEPTED zoo member,
  source ``aligned-NAME-<member>``; rejected members (blurry or low PSNR) are skipped;
* one zoo ``.safetensors`` file: source ``aligned-NAME``.

Any missing or unreadable file raises ``DecoderLoadError`` naming the file, so a command
line tool can print one clear line instead of a traceback.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from bitmind.training.taesd import DecoderLoadError, TinyAutoencoder
from bitmind.training.zoo_models import load_zoo_file

logger = logging.getLogger(__name__)


@dataclass
class Decoder:
    source: str  # output folder under fake/, e.g. aligned-zoo-nearest-8x-c16
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


def load_zoo_dir(name: str, d: Path) -> list[Decoder]:
    try:
        index = json.loads((d / "zoo.json").read_text())
        members = index["decoders"]
    except Exception as e:
        raise DecoderLoadError(f"cannot read zoo index {d / 'zoo.json'}: {type(e).__name__}: {e}") from e
    out = []
    for m in members:
        if not m.get("accepted"):
            logger.info("zoo %s: skipping %s (%s)", d, m.get("name"), m.get("reason"))
            continue
        out.append(Decoder(f"aligned-{name}-{m['name']}", load_zoo_file(d / m["file"]), d / m["file"]))
    if not out:
        raise DecoderLoadError(f"zoo {d} has no accepted decoder (see {d / 'zoo.json'})")
    return out


def load_decoders(args: list[str]) -> list[Decoder]:
    """``["taef2=../shared/models/taef2", "zoo=zoo_dir"]`` -> decoders, in order."""
    out: list[Decoder] = []
    for arg in args:
        name, path = parse_decoder_arg(arg)
        if path.is_dir() and (path / "zoo.json").exists():
            out += load_zoo_dir(name, path)
        elif path.is_dir():
            prefixes = sorted(p.name[: -len("_encoder.pth")] for p in path.glob("*_encoder.pth"))
            if len(prefixes) != 1:
                raise DecoderLoadError(f"{path}: expected zoo.json or one <prefix>_encoder.pth/_decoder.pth pair, "
                                       f"found encoders {prefixes or 'none'}")
            out.append(Decoder(f"aligned-{name}", TinyAutoencoder(path, prefixes[0]), path))
        elif path.suffix == ".safetensors" or path.is_file():
            out.append(Decoder(f"aligned-{name}", load_zoo_file(path), path))
        else:
            raise DecoderLoadError(f"decoder path not found: {path}")
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
