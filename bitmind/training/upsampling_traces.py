"""Synthetic fakes: a real photo with the trace of a random, generator-like up-sampler added.

Why: every generator family the detector has not seen is at or near chance by LOGO, GANs
worst (docs/Generalisation.md), and one real decoder (TAEF2 round trips) teaches one trace
that does not transfer. What generators share is HOW they make their last pixels: a few
2x up-sampling stages (nearest + convolution in VAE decoders, transposed convolutions and
sub-pixel shuffles in GANs), each followed by learned filters. Every such stage leaves a
pattern that repeats with the up-sampling period. FingerprintNet (Jeong et al., ECCV 2022)
trained on real photos plus fingerprints of randomly drawn generator-like networks and
reached unseen GANs; this module draws such up-samplers.

How, per picture: down-sample by ``s`` (2, 4 or 8; area averaging), up-sample back in
log2(s) random 2x stages (nearest, transposed convolution with a random 4x4 kernel, or
a sub-pixel shuffle with one random colour mix per phase), each followed by a random 3x3
filter near the identity. The trace is the difference between that and a smooth (bicubic)
up-sampling of the same low-resolution picture, so it holds what the random up-sampler
does unlike a plain resize (periodic structure, not blur), less its own smooth part (so
no colour cast: only what varies within one up-sampling period); it is scaled to a random RMS of
``rms`` 8-bit levels and ADDED to the full-resolution photo. Content, sharpness and colour
stay the photo's: the fake and its photo differ only by the trace (about 33-45 dB PSNR),
so it is used like an aligned round trip (same stem, paired in the batch).

Made by ``python -m bitmind.training.aligned_fakes --data ROOT ... --synthetic --out OUT``
as source ``fake/aligned-synth-upsampling``; sampled as its own family (``synthetic``,
``bitmind.data.families.sampling_family``). Training material only, never in the miner.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["SYNTHETIC_SOURCE", "UpsamplingTrace"]

#: The source folder (under ``fake/``) the synthetic fakes are written to.
SYNTHETIC_SOURCE = "aligned-synth-upsampling"
STAGES = ("nearest", "transposed", "shuffle")


def _smooth_up(x: torch.Tensor, s: int) -> torch.Tensor:
    return F.interpolate(x, scale_factor=s, mode="bicubic", align_corners=False)


class UpsamplingTrace(nn.Module):
    """Adds one random up-sampler's trace to each picture of a batch (RGB, [0, 1]).

    Every draw comes from the module's own generator (``seed``), so the same photos in the
    same order give the same fakes. ``factor`` is the largest down-sampling factor: callers
    pad sides to a multiple of it (``bitmind.training.decoders.round_trip``)."""

    factor = 8

    def __init__(self, seed: int = 0, factors: tuple[int, ...] = (2, 4, 8), rms: tuple[float, float] = (1.5, 6.0),
                 filter_noise: float = 0.15, phase_gain: float = 0.03):
        super().__init__()
        if not factors or any(f not in (2, 4, 8) for f in factors):
            raise ValueError(f"factors must be among 2, 4, 8, got {factors}")
        self.factors, self.rms = tuple(factors), (float(rms[0]), float(rms[1]))
        self.filter_noise, self.phase_gain = float(filter_noise), float(phase_gain)
        self.generator = torch.Generator().manual_seed(int(seed))

    # -------------------------------------------------------------- random draws (CPU generator)
    def _uniform(self, lo: float, hi: float) -> float:
        return lo + (hi - lo) * float(torch.rand((), generator=self.generator))

    def _choice(self, options):
        return options[int(torch.randint(len(options), (), generator=self.generator))]

    def _randn(self, *shape) -> torch.Tensor:
        return torch.randn(*shape, generator=self.generator)

    # -------------------------------------------------------------- the stages
    def _transposed(self, x: torch.Tensor) -> torch.Tensor:
        """Depthwise transposed convolution, 4x4 kernel, stride 2: each of the four output
        phases gets its own 2x2 taps; their sums are 1 up to a small random gain per phase,
        the classic checkerboard of GAN up-sampling."""
        k = (self._randn(3, 1, 4, 4) * 0.5 + 1.0).abs()
        for py in (0, 1):
            for px in (0, 1):  # the taps of one output phase: rows py::2, columns px::2
                taps = k[:, :, py::2, px::2]
                gain = 1.0 + self.phase_gain * self._randn(3, 1, 1, 1)
                k[:, :, py::2, px::2] = taps / taps.sum((2, 3), keepdim=True) * gain
        return F.conv_transpose2d(x, k.to(x), stride=2, padding=1, groups=3)

    def _shuffle(self, x: torch.Tensor) -> torch.Tensor:
        """Sub-pixel convolution: one near-identity colour mix per output phase, then a 2x pixel shuffle."""
        eye = torch.eye(3).repeat(4, 1)  # (12, 3): output channel c*4 + phase reads input c
        w = eye.view(3, 4, 3).clone()
        w += self.phase_gain * self._randn(3, 4, 3)
        return F.pixel_shuffle(F.conv2d(x, w.view(12, 3, 1, 1).to(x)), 2)

    def _filter(self, x: torch.Tensor) -> torch.Tensor:
        """A random 3x3 filter near the identity whose perturbation sums to zero (the mean colour stays)."""
        noise = self._randn(3, 3, 3, 3) * (self.filter_noise / 3)
        noise -= noise.mean((1, 2, 3), keepdim=True)
        w = noise
        w[torch.arange(3), torch.arange(3), 1, 1] += 1.0
        return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), w.to(x))

    def _up2(self, x: torch.Tensor) -> torch.Tensor:
        stage = self._choice(STAGES)
        if stage == "nearest":
            y = F.interpolate(x, scale_factor=2, mode="nearest")
        elif stage == "transposed":
            y = self._transposed(x)
        else:
            y = self._shuffle(x)
        return self._filter(y)

    def trace(self, x: torch.Tensor) -> tuple[torch.Tensor, int]:
        """The unscaled trace of one random up-sampler for one picture ``x`` (1, 3, H, W), H and W
        divisible by the drawn factor, and that factor."""
        s = self._choice(self.factors)
        low = F.avg_pool2d(x, s)
        up = low
        for _ in range(int(math.log2(s))):
            up = self._up2(up)
        t = up - _smooth_up(low, s)
        return t - _smooth_up(F.avg_pool2d(t, s), s), s  # only what varies within one period: no colour cast

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2] % self.factor or x.shape[-1] % self.factor:
            raise ValueError(f"sides must be multiples of {self.factor}, got {tuple(x.shape[-2:])}")
        out, m = [], 2 * self.factor  # a reflected margin keeps the stages' own edge effects out of the picture
        for img in x.split(1):
            t, _ = self.trace(F.pad(img, (m, m, m, m), mode="reflect"))
            t = t[..., m:-m, m:-m]
            rms = t.pow(2).mean().sqrt().clamp_min(1e-6)
            target = self._uniform(*self.rms) / 255.0
            out.append((img + t * (target / rms)).clamp(0, 1))
        return torch.cat(out)
