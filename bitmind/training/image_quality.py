"""Round-trip quality measures: PSNR, SSIM and high-frequency energy ratio.

An aligned fake is only useful if a person would accept it as the same photo (PSNR and
SSIM high) AND it is not simply a blurred copy: a detector trained on blurry round trips
learns "blurry = fake", which is wrong for every modern generator. The high-frequency
ratio catches that: the energy of a Laplacian high-pass of the round trip divided by the
original's. 1.0 keeps the detail, 0.5 has lost half of its energy, > 1 adds texture.

All functions take float tensors in [0, 1], shaped (3, H, W) or (N, 3, H, W), and return
one value per image for batches (a float for single images).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

_LAPLACIAN = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])


def _batch(x: torch.Tensor) -> tuple[torch.Tensor, bool]:
    if x.dim() == 3:
        return x.unsqueeze(0), True
    if x.dim() != 4:
        raise ValueError(f"expected (3, H, W) or (N, 3, H, W), got shape {tuple(x.shape)}")
    return x, False


def _out(v: torch.Tensor, single: bool):
    return float(v[0]) if single else v


def psnr(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-10):
    """Peak signal-to-noise ratio in dB for pixel range 1: 10 log10(1 / MSE)."""
    a, single = _batch(a)
    b, _ = _batch(b)
    mse = ((a.float() - b.float()) ** 2).flatten(1).mean(1)
    return _out(10 * torch.log10(1.0 / mse.clamp_min(eps)), single)


def _gauss_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    g = torch.exp(-((torch.arange(size, dtype=torch.float32) - size // 2) ** 2) / (2 * sigma**2))
    g = g / g.sum()
    return torch.outer(g, g)


def ssim(a: torch.Tensor, b: torch.Tensor, window: int = 11, sigma: float = 1.5):
    """Structural similarity (Wang et al. 2004): Gaussian 11x11 window, sigma 1.5,
    K1 0.01, K2 0.03, computed per channel over the valid region (in float64), then averaged."""
    a, single = _batch(a)
    b, _ = _batch(b)
    a, b = a.double(), b.double()  # E[x^2] - E[x]^2 cancels badly in float32
    c = a.shape[1]
    w = _gauss_window(window, sigma).to(a.device, torch.float64).expand(c, 1, window, window)
    mu_a, mu_b = F.conv2d(a, w, groups=c), F.conv2d(b, w, groups=c)
    var_a = F.conv2d(a * a, w, groups=c) - mu_a**2
    var_b = F.conv2d(b * b, w, groups=c) - mu_b**2
    cov = F.conv2d(a * b, w, groups=c) - mu_a * mu_b
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return _out(s.flatten(1).mean(1).float(), single)


def high_frequency_energy(x: torch.Tensor) -> torch.Tensor:
    """Mean squared 3x3 Laplacian response per image (valid region, all channels)."""
    x, _ = _batch(x)
    c = x.shape[1]
    k = _LAPLACIAN.to(x.device).expand(c, 1, 3, 3)
    return (F.conv2d(x.float(), k, groups=c) ** 2).flatten(1).mean(1)


def high_frequency_ratio(round_trip: torch.Tensor, original: torch.Tensor, eps: float = 1e-12):
    """High-frequency energy of ``round_trip`` over that of ``original`` (< 1: blurrier)."""
    _, single = _batch(round_trip)
    r = high_frequency_energy(round_trip) / high_frequency_energy(original).clamp_min(eps)
    return _out(r, single)
