"""Small convolutional autoencoders whose decoders up-sample in different ways.

Every generator decodes through some up-sampling path, and each path leaves its own
pixel-level fingerprint: nearest + conv (TAESD/TAEF2, SD's VAE), transposed convolution
(checkerboards, GAN era), sub-pixel convolution (pixel shuffle) and bilinear + conv. A
detector that sees round trips of real photos through all of them learns "made by a
decoder", not one decoder. The encoders are plain strided convolutions; they only need to
hand the decoder a latent that holds the photo.

A decoder is named ``<design>-<factor>x-c<latent channels>`` (``nearest-8x-c16``). Saved
files are safetensors with the spec in their metadata, so ``load_zoo_file`` rebuilds a
network from the file alone.
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn

from bitmind.training.taesd import DecoderLoadError

DESIGNS = ("nearest", "transposed", "pixelshuffle", "bilinear")
FILE_FORMAT = "bitmind-zoo-autoencoder/1"
_NAME = re.compile(r"^(?P<design>[a-z]+)-(?P<factor>\d+)x-c(?P<latent>\d+)$")

# Four up-sampling designs at 8x (latent-diffusion standard) and 4x, latent widths spread
# over 4/16/32 so that no decoder is starved (8x with 4 channels compresses 48x and cannot
# reach 28 dB with a net this small in GPU minutes).
DEFAULT_ZOO = ("nearest-8x-c16", "transposed-8x-c32", "pixelshuffle-8x-c16", "bilinear-8x-c32",
               "nearest-4x-c4", "transposed-4x-c16", "pixelshuffle-4x-c4", "bilinear-4x-c16")


@dataclass(frozen=True)
class ZooSpec:
    design: str
    factor: int
    latent: int
    width: int = 64  # channels below full resolution; full resolution has min(width, 32) (the costly level)

    def __post_init__(self):
        if self.design not in DESIGNS:
            raise ValueError(f"unknown up-sampling design {self.design!r} (known: {', '.join(DESIGNS)})")
        if self.factor < 2 or self.factor & (self.factor - 1):
            raise ValueError(f"factor must be a power of two >= 2, got {self.factor}")
        if self.latent < 1 or self.width < 8:
            raise ValueError(f"latent channels must be >= 1 and width >= 8, got {self.latent}, {self.width}")

    @property
    def name(self) -> str:
        return f"{self.design}-{self.factor}x-c{self.latent}"

    @property
    def levels(self) -> int:
        return self.factor.bit_length() - 1

    def widths(self) -> list[int]:
        """Channels per resolution level, full resolution first."""
        return [min(self.width, 32)] + [self.width] * self.levels

    @classmethod
    def parse(cls, name: str, width: int = 64) -> "ZooSpec":
        m = _NAME.match(name)
        if not m:
            raise ValueError(f"decoder name {name!r} is not DESIGN-FACTORx-cLATENT (e.g. nearest-8x-c16)")
        return cls(m["design"], int(m["factor"]), int(m["latent"]), width)


def _conv(n_in: int, n_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(n_in, n_out, 3, padding=1, stride=stride)


class ResBlock(nn.Module):
    def __init__(self, n: int):
        super().__init__()
        self.body = nn.Sequential(_conv(n, n), nn.ReLU(), _conv(n, n))

    def forward(self, x):
        return torch.relu(x + self.body(x))


def upsample(design: str, n_in: int, n_out: int) -> nn.Module:
    """One 2x up-sampling step of the given design."""
    if design == "nearest":
        return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), _conv(n_in, n_out))
    if design == "bilinear":
        return nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False), _conv(n_in, n_out))
    if design == "transposed":
        return nn.ConvTranspose2d(n_in, n_out, 4, stride=2, padding=1)
    if design == "pixelshuffle":
        return nn.Sequential(_conv(n_in, 4 * n_out), nn.PixelShuffle(2))
    raise ValueError(f"unknown up-sampling design {design!r}")


class ZooAutoencoder(nn.Module):
    """Encoder: conv, then per level a stride-2 conv and a residual block, then a conv to
    the latent. Decoder: the mirror image, each 2x step in the spec's design."""

    def __init__(self, spec: ZooSpec):
        super().__init__()
        self.spec = spec
        self.factor = spec.factor
        w = spec.widths()
        enc: list[nn.Module] = [_conv(3, w[0]), nn.ReLU()]
        for i in range(spec.levels):
            enc += [_conv(w[i], w[i + 1], stride=2), nn.ReLU(), ResBlock(w[i + 1])]
        enc.append(_conv(w[-1], spec.latent))
        dec: list[nn.Module] = [_conv(spec.latent, w[-1]), nn.ReLU(), ResBlock(w[-1])]
        for i in range(spec.levels, 0, -1):
            dec += [upsample(spec.design, w[i], w[i - 1]), nn.ReLU()]
            if i > 1:
                dec.append(ResBlock(w[i - 1]))
        dec.append(_conv(w[0], 3))
        self.encoder, self.decoder = nn.Sequential(*enc), nn.Sequential(*dec)
        self._init()

    def _init(self) -> None:
        """He-normal convolutions and zero-initialised residual branches, so a deep stack
        without normalisation passes its signal on instead of shrinking it at every layer
        (PyTorch's default init does, and training then crawls); the output layer starts
        at zero, so training starts from grey rather than from amplified noise."""
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)
            if isinstance(m, ResBlock):
                nn.init.zeros_(m.body[-1].weight)
        nn.init.kaiming_normal_(self.encoder[-1].weight, nonlinearity="linear")  # the latent: unit gain
        nn.init.zeros_(self.decoder[-1].weight)  # the first round trip is flat grey, not loud noise

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Differentiable round trip of RGB in [0, 1] (unclamped, for training)."""
        return self.decoder(self.encoder(x - 0.5)) + 0.5

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """RGB in [0, 1] (sides divisible by ``factor``) -> round trip in [0, 1]."""
        return self.reconstruct(x).clamp(0, 1)


def count_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def save_zoo_file(model: ZooAutoencoder, path: str | Path, extra: dict | None = None) -> Path:
    """Weights as fp16 safetensors (half the bytes; round trips are evaluated from the saved
    file, so the reported quality is that of these weights) with the spec in the metadata."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu", torch.float16).contiguous() for k, v in model.state_dict().items()}
    meta = {"format": FILE_FORMAT, "spec": json.dumps(asdict(model.spec)), "extra": json.dumps(extra or {})}
    save_file(state, str(path), metadata=meta)
    return path


def load_zoo_file(path: str | Path) -> ZooAutoencoder:
    """Rebuild a zoo autoencoder from its file; ``DecoderLoadError`` says why if it cannot."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise DecoderLoadError(f"decoder weights not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k).float() for k in f.keys()}
    except Exception as e:  # truncated or not a safetensors file
        raise DecoderLoadError(f"cannot read decoder weights {path}: {type(e).__name__}: {e}") from e
    if meta.get("format") != FILE_FORMAT:
        raise DecoderLoadError(f"{path} is not a decoder-zoo file (metadata format {meta.get('format')!r})")
    try:
        model = ZooAutoencoder(ZooSpec(**json.loads(meta["spec"])))
        model.load_state_dict(state, strict=True)
    except Exception as e:
        raise DecoderLoadError(f"{path}: weights do not match their spec ({type(e).__name__}: {e})") from e
    return model.eval()
