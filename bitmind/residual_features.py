"""Hand-made residual statistics of a picture: what a linear detector over them reads.

Why: the NPR detector learns its own filters from the pools, and by leave-one-family-out
it learns much of what the pools' pictures show. The statistics here are fixed before any
training: co-occurrences of quantised high-pass residuals (the "rich model" features of
steganalysis, which also separate GAN pictures from camera pictures) and the radial
spectrum of a residual. They cannot read content, only how neighbouring pixels relate;
a linear model over them has a few hundred weights, trains on CPU in seconds and can be
measured by LOGO without a GPU (``benchmarks/residual_logo.py``). Measured: it reads
unseen families worse than NPR and adds nothing stacked on it (docs/Generalisation_record.md,
"Fixed residual statistics, by LOGO on CPU"), so no served model uses it.

Torch, batched, on the tensors the detectors see (``bitmind.inference.to_model_input``), so
a served model could compute the same features if a later variant earned it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

#: (name, kernel as rows, quantisation step). Residuals in 0-255 luma units; each one is
#: rounded to ``round(r / q)`` and truncated to [-T, T].
RESIDUALS = (
    ("d1", [[1.0, -1.0]], 1.0),
    ("d2", [[1.0, -2.0, 1.0]], 2.0),
    ("d3", [[-1.0, 3.0, -3.0, 1.0]], 3.0),
    ("kb", [[-1.0, 2.0, -1.0], [2.0, -4.0, 2.0], [-1.0, 2.0, -1.0]], 4.0),
)
TRUNCATE = 2
SYMBOLS = 2 * TRUNCATE + 1
COOC_BINS = SYMBOLS ** 3
SPECTRUM_BINS = 24
LUMA = (0.299, 0.587, 0.114)


def _luma(x: torch.Tensor) -> torch.Tensor:
    """(B,3,H,W) in [0,1] -> (B,1,H,W) luma in 0-255 units (grey input passes as is)."""
    x = x.float() * 255.0
    if x.shape[1] == 1:
        return x
    w = torch.tensor(LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x[:, :3] * w).sum(dim=1, keepdim=True)


def _symbols(r: torch.Tensor, q: float) -> torch.Tensor:
    return torch.clamp(torch.round(r / q), -TRUNCATE, TRUNCATE).to(torch.long) + TRUNCATE


def _cooc(s: torch.Tensor, dim: int) -> torch.Tensor:
    """(B,H,W) symbols -> (B, COOC_BINS) normalised histogram of three consecutive symbols along ``dim``."""
    n = s.shape[dim]
    a, b, c = s.narrow(dim, 0, n - 2), s.narrow(dim, 1, n - 2), s.narrow(dim, 2, n - 2)
    code = (a * SYMBOLS + b) * SYMBOLS + c
    batch = code.shape[0]
    flat = code.reshape(batch, -1) + torch.arange(batch, device=s.device).unsqueeze(1) * COOC_BINS
    hist = torch.bincount(flat.reshape(-1), minlength=batch * COOC_BINS).view(batch, COOC_BINS).float()
    return hist / hist.sum(dim=1, keepdim=True).clamp_min(1.0)


def _radial_spectrum(r: torch.Tensor) -> torch.Tensor:
    """(B,H,W) residual -> (B, SPECTRUM_BINS) log mean power per radial frequency band,
    centred per picture (the shape of the spectrum, not its level)."""
    batch, h, w = r.shape
    p = torch.fft.rfft2(r - r.mean(dim=(1, 2), keepdim=True), norm="ortho").abs().pow(2)
    fy = torch.fft.fftfreq(h, device=r.device).abs().view(h, 1)
    fx = torch.fft.rfftfreq(w, device=r.device).view(1, -1)
    radius = torch.sqrt(fy ** 2 + fx ** 2).clamp(max=0.5 - 1e-6) / 0.5
    band = (radius * SPECTRUM_BINS).long().view(-1)
    flat = p.reshape(batch, -1)
    sums = torch.zeros(batch, SPECTRUM_BINS, device=r.device).index_add_(1, band, flat)
    counts = torch.bincount(band, minlength=SPECTRUM_BINS).clamp_min(1).float()
    logp = torch.log(sums / counts + 1e-6)
    return logp - logp.mean(dim=1, keepdim=True)


def feature_names() -> list[str]:
    """Names of ``residual_features`` columns, in order."""
    names = []
    for name, kernel, _ in RESIDUALS:
        names += [f"{name}_along_{i}" for i in range(COOC_BINS)]
        if len(kernel) == 1:  # a 1-D residual: also its co-occurrence across the residual's direction
            names += [f"{name}_across_{i}" for i in range(COOC_BINS)]
    names += [f"spectrum_{i}" for i in range(SPECTRUM_BINS)]
    return names


def residual_features(x: torch.Tensor) -> torch.Tensor:
    """(B,3,H,W) float in [0,1] (as ``bitmind.inference.to_model_input`` gives) -> (B, D)
    features: for each residual of ``RESIDUALS``, horizontal and vertical versions pooled,
    the histogram of three consecutive quantised values along the residual's direction
    (and, for 1-D residuals, across it); then the radial spectrum of ``d2``. Histograms are
    square-rooted (the Hellinger map: a linear model on it compares distributions fairly)."""
    y = _luma(x)
    feats = []
    for _, kernel, q in RESIDUALS:
        k = torch.tensor(kernel, dtype=y.dtype, device=y.device)
        kh = k.view(1, 1, *k.shape)
        rh = F.conv2d(y, kh)[:, 0]
        if k.shape[0] == 1:
            rv = F.conv2d(y, kh.transpose(2, 3))[:, 0]
            sh, sv = _symbols(rh, q), _symbols(rv, q)
            feats.append((_cooc(sh, 2) + _cooc(sv, 1)) / 2)  # along
            feats.append((_cooc(sh, 1) + _cooc(sv, 2)) / 2)  # across
        else:
            s = _symbols(rh, q)
            feats.append((_cooc(s, 2) + _cooc(s, 1)) / 2)
    hist = torch.cat(feats, dim=1).sqrt()
    d2 = F.conv2d(y, torch.tensor([[[[1.0, -2.0, 1.0]]]], dtype=y.dtype, device=y.device))[:, 0]
    return torch.cat([hist, _radial_spectrum(d2)], dim=1)


FEATURE_DIM = len(feature_names())
