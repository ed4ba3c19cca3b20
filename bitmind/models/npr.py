"""NPR detector (Tan et al., "Rethinking the Up-Sampling Operations in CNN-based
Generative Network for Generalizable Deepfake Detection", CVPR 2024).

Generators up-sample (nearest, transposed conv, learned decoders); that leaves a
local correlation between neighbouring pixels. NPR feeds the network the
neighbouring-pixel residual ``x - nearest_up(nearest_down(x))`` (scaled by 2/3) and
uses a deliberately shallow ResNet-50 (3x3 stride-2 stem, layer1, layer2, global
pool, one logit): ~1.4 M parameters, fast enough for CPU serving.

Options beyond the paper (all default to the paper's network, so older checkpoints
load unchanged):

* ``input``: what the first convolution sees. ``npr`` (the paper), ``hp`` (a 3x3
  high-pass residual ``x - box_blur(x)``, which survives re-sampling better than the
  2x2 grid that NPR reads), ``npr_hp`` (both, 6 channels), ``rgb`` (raw pixels) or
  ``rgb_npr_hp`` (all three, 9 channels: one network sees what an rgb + npr_hp
  ensemble sees), or ``npr_hp_norm``: ``npr_hp`` with each residual divided by its local
  RMS (about 8 x 8 pixels, ``local_normalise``), so the network sees how neighbouring
  pixels co-vary, not how strong the detail is: texture, sharpness and a camera's noise
  level are what a picture shows or how it was taken, and low-light photos (noisy, so
  strong residuals) are the unseen camera kind most often called fake. Or
  ``npr_hp_periodic``: ``npr_hp`` plus 14 channels of local periodicity
  (``periodic_energy``): the spectrum of the grey high-pass residual along rows and along
  columns, in a 16-pixel window, at 7 frequencies from 1/8 to 1/2 cycle per pixel, each as
  its log-energy relative to the mean over the 7. An up-sampler repeats its pattern every 2-8
  pixels, and a validator's down-scaling moves that period to a non-integer one: a 3x3
  first convolution cannot see a period of 3-8 pixels, these channels show it at every
  location whatever its phase.
* ``stem_pool``: the max-pool after the stem (off keeps 2x more resolution per side,
  at about 4x the compute).
* ``layers``: 2 entries (layer1, layer2) or 3 (adds ResNet layer3 at 1/16 resolution).
* ``pool``: how the image score comes from the last feature map. ``mean`` (the paper's
  global average pool; the linear head makes it the mean of the per-location logits) or
  ``topNN``: the mean of the NN % highest per-location logits (``logit_map``), so a few
  locations with a generator's trace can decide. Stored in the config only when not
  ``mean``. LOGO scores every trained NPR both ways without training
  (``generalisation.py score --pools``); a model can also be trained with a top-k pool
  (``TrainConfig.pool``, multiple-instance style: a fake needs only some locations with a
  trace, a real needs none).
* ``center_crop``: look only at the central N x N of the input (``center_square``; 0, the
  default, looks at all of it). A serve-time option for the same weights: a network
  trained on 96 px patches needs less than the 256 px picture, and the cost follows the
  area. Stored in the config only when set.
* ``flip_mean``: answer with the mean of the outputs for the input and its mirror image
  (left-right). Validators mirror challenges at random, so a detector that gives a picture
  and its mirror the same answer loses nothing to the draw; twice the forward cost. A
  serve-time option for the same weights, stored in the config only when set; LOGO scores
  it as the ``flip`` view (``generalisation.py score --pools flip``): a tie there (docs/Generalisation.md),
  so no shipped file turns it on.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from bitmind.models.registry import register_model


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def npr_residual(x: torch.Tensor, factor: float = 0.5) -> torch.Tensor:
    """Neighbouring-pixel residual: x minus its nearest down/up-sampled copy."""
    down = F.interpolate(x, scale_factor=factor, mode="nearest", recompute_scale_factor=True)
    up = F.interpolate(down, size=x.shape[-2:], mode="nearest")
    return x - up


def highpass_residual(x: torch.Tensor) -> torch.Tensor:
    """x minus its 3x3 box blur (edges replicated): the fine detail, without content."""
    blurred = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    return x - blurred


def local_normalise(r: torch.Tensor, block: int = 8, eps: float = 0.005) -> torch.Tensor:
    """``r`` divided by its local RMS: the mean square over channels and ``block`` x
    ``block`` cells, bilinearly interpolated back to full size (so the gain has no steps).
    ``eps`` (in residual units; textured 256 px pictures have cell RMS 0.01-0.08) keeps
    flat, JPEG-smoothed regions from being blown up to full strength."""
    energy = F.avg_pool2d(r.pow(2).mean(1, keepdim=True), block, block, ceil_mode=True)
    energy = F.interpolate(energy, size=r.shape[-2:], mode="bilinear", align_corners=False)
    return r * torch.rsqrt(energy + eps * eps)


#: Frequencies (cycles per pixel) of ``periodic_energy``: periods 8, 5.3, 4, 3.2, 2.7, 2.3, 2.
PERIODIC_FREQUENCIES = (0.125, 0.1875, 0.25, 0.3125, 0.375, 0.4375, 0.5)


def periodic_energy(x: torch.Tensor, frequencies=PERIODIC_FREQUENCIES, window: int = 16,
                    eps: float = 1e-8) -> torch.Tensor:
    """Local periodicity of the fine detail: (B, 2F, H, W), for each of F ``frequencies``
    the energy of the grey high-pass residual at that frequency along rows (first F
    channels) and along columns (last F), measured in a Hann-weighted ``window`` of
    pixels (a cosine and a sine, so the phase does not matter) and averaged over
    ``window`` pixels across, as ``log(E_f + eps)`` minus its mean over the F frequencies.
    Why relative: how strong the detail is belongs to the ``npr_hp`` channels; here only
    the shape of the local spectrum counts, so a repeated pattern stands out as a peak at
    its frequency, and a flat region (no detail) reads 0 everywhere. Computed in float32
    whatever the autocast, edges reflected."""
    with torch.autocast(x.device.type, enabled=False):
        r = highpass_residual(x.float()).mean(1, keepdim=True)
        n = torch.arange(window, dtype=torch.float32, device=x.device) - (window - 1) / 2
        f = torch.tensor(frequencies, dtype=torch.float32, device=x.device)[:, None]
        hann = torch.hann_window(window + 2, periodic=False, dtype=torch.float32, device=x.device)[1:-1]
        bank = torch.cat([torch.cos(2 * torch.pi * f * n), torch.sin(2 * torch.pi * f * n)]) * hann
        bank = bank / hann.pow(2).sum().sqrt()  # white noise: the same expected energy at every frequency
        k, lo, hi = len(frequencies), window // 2, window - 1 - window // 2
        out = []
        for horizontal in (True, False):
            kernel = bank[:, None, None, :] if horizontal else bank[:, None, :, None]
            pad = (lo, hi, 0, 0) if horizontal else (0, 0, lo, hi)
            c = F.conv2d(F.pad(r, pad, mode="reflect"), kernel)
            e = c[:, :k].pow(2) + c[:, k:].pow(2)
            e = _box_mean(e, window, dim=2 if horizontal else 3)  # average across the direction measured
            log_e = torch.log(e + eps)
            out.append(log_e - log_e.mean(1, keepdim=True))
        return torch.cat(out, dim=1).to(x.dtype)


def _box_mean(t: torch.Tensor, window: int, dim: int) -> torch.Tensor:
    """Mean over ``window`` neighbours along ``dim`` (2 or 3) of a (B, C, H, W) map, edges
    reflected. A strided window view (``unfold``) summed directly: exact, unlike a running
    sum, and several times faster on a CPU than a 16 x 1 pooling kernel."""
    lo, hi = window // 2, window - 1 - window // 2
    padded = F.pad(t, (0, 0, lo, hi) if dim == 2 else (lo, hi, 0, 0), mode="reflect")
    return padded.unfold(dim, window, 1).mean(-1)


#: Input mode -> channels the first convolution receives.
_CHANNELS = {"npr": 3, "hp": 3, "npr_hp": 6, "rgb": 3, "rgb_npr_hp": 9, "npr_hp_norm": 6,
             "npr_hp_periodic": 6 + 2 * len(PERIODIC_FREQUENCIES)}
INPUT_MODES = tuple(_CHANNELS)


def input_features(x: torch.Tensor, mode: str = "npr") -> torch.Tensor:
    """The detector's input representation of a [0, 1] image batch (see the module docstring)."""
    if mode == "npr":
        return npr_residual(x) * (2.0 / 3.0)
    if mode == "hp":
        return highpass_residual(x) * 2.0
    if mode == "npr_hp":
        return torch.cat([npr_residual(x) * (2.0 / 3.0), highpass_residual(x) * 2.0], dim=1)
    if mode == "rgb":
        return x - 0.5
    if mode == "npr_hp_norm":
        return torch.cat([local_normalise(npr_residual(x)), local_normalise(highpass_residual(x))], dim=1)
    if mode == "npr_hp_periodic":
        return torch.cat([npr_residual(x) * (2.0 / 3.0), highpass_residual(x) * 2.0, periodic_energy(x) * 0.25], dim=1)
    if mode == "rgb_npr_hp":
        return torch.cat([x - 0.5, npr_residual(x) * (2.0 / 3.0), highpass_residual(x) * 2.0], dim=1)
    raise ValueError(f"unknown input mode {mode!r}; one of {INPUT_MODES}")


@register_model("npr")
class NPR(nn.Module):
    """ResNet-50 truncated after layer2 (or layer3), on the NPR residual. Output: one logit, or
    with ``num_classes`` > 1 the detector's logit first and an auxiliary head's after it
    (``TrainConfig.aux_weight``); every caller reads the first (``forward_logits``)."""

    def __init__(self, layers=(3, 4), width: int = 64, num_classes: int = 1, dropout: float = 0.0,
                 input: str = "npr", stem_pool: bool = True, pool: str = "mean", center_crop: int = 0,
                 flip_mean: bool = False):
        super().__init__()
        check_center_crop(center_crop)
        if input not in INPUT_MODES:
            raise ValueError(f"unknown input mode {input!r}; one of {INPUT_MODES}")
        if len(layers) not in (2, 3):
            raise ValueError(f"layers must have 2 or 3 entries, got {list(layers)}")
        top_fraction(pool)  # validates
        if pool != "mean" and num_classes != 1:
            raise ValueError(f"pool {pool!r} needs num_classes 1, got {num_classes}")
        self.config = {"layers": list(layers), "width": width, "num_classes": num_classes, "dropout": dropout,
                       "input": input, "stem_pool": stem_pool, **({"pool": pool} if pool != "mean" else {}),
                       **({"center_crop": center_crop} if center_crop else {}),
                       **({"flip_mean": True} if flip_mean else {})}
        self.input_mode, self.pool, self.center_crop, self.flip_mean = input, pool, center_crop, bool(flip_mean)
        self.inplanes = width
        self.conv1 = nn.Conv2d(_CHANNELS[input], width, kernel_size=3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1) if stem_pool else nn.Identity()
        self.layer1 = self._make_layer(width, layers[0])
        self.layer2 = self._make_layer(width * 2, layers[1], stride=2)
        self.layer3 = self._make_layer(width * 4, layers[2], stride=2) if len(layers) == 3 else nn.Identity()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc1 = nn.Linear(width * (2 ** (len(layers) - 1)) * Bottleneck.expansion, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for m in self.modules():  # zero-init last BN of each block: starts as identity
            if isinstance(m, Bottleneck):
                nn.init.zeros_(m.bn3.weight)

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * Bottleneck.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * Bottleneck.expansion, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * Bottleneck.expansion),
            )
        layers = [Bottleneck(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * Bottleneck.expansion
        layers += [Bottleneck(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map, (B, C, H', W')."""
        x = center_square(x, self.center_crop)
        x = input_features(x, self.input_mode)
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer3(self.layer2(self.layer1(x)))

    def logit_map(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H', W') logits of each location of the last feature map (the head applied
        before pooling; dropout is off in eval, so their mean is the ``mean`` pool's logit).
        In training the features pass the same dropout as the ``mean`` pool's vector, so a
        model trained with a top-k pool is regularised alike."""
        f = self.dropout(self.features(x))
        return torch.einsum("bchw,c->bhw", f, self.fc1.weight[0].to(f.dtype)) + self.fc1.bias[0].to(f.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.flip_mean:  # both views in one pass: one call per layer (so the CPU copy's
            # batch-norm folding still finds each conv once) and one bigger batch
            z = self.forward_view(torch.cat([x, x.flip(-1)]))
            return (z[: len(x)] + z[len(x):]) / 2
        return self.forward_view(x)

    def forward_view(self, x: torch.Tensor) -> torch.Tensor:
        """The outputs for ``x`` as it is (``forward`` without ``flip_mean``)."""
        if self.pool != "mean":
            return pool_logit_map(self.logit_map(x), self.pool)[:, None]
        x = torch.flatten(self.avgpool(self.features(x)), 1)
        return self.fc1(self.dropout(x))


def with_aux_outputs(model: NPR, n: int, seed: int = 0) -> NPR:
    """``model`` with ``n`` more outputs after its logit (an auxiliary head,
    ``TrainConfig.aux_weight``), in place. Every existing weight stays as it was and the new
    rows are drawn from their own generator (``seed``), not the global one: a model built
    with the head starts exactly where the same model without it does, so a LOGO pair on one
    stream differs by the head alone, not by a different draw of every convolution."""
    if n < 1:
        return model
    if model.pool != "mean":
        raise ValueError(f"an auxiliary head needs the mean pool, not {model.pool!r}")
    old = model.fc1
    fc = nn.Linear(old.in_features, old.out_features + n).to(old.weight.device, old.weight.dtype)
    bound = 1.0 / old.in_features ** 0.5  # nn.Linear's own default range
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        fc.weight[: old.out_features] = old.weight
        fc.bias[: old.out_features] = old.bias
        fc.weight[old.out_features:] = (torch.rand(n, old.in_features, generator=g) * 2 - 1) * bound
        fc.bias[old.out_features:] = (torch.rand(n, generator=g) * 2 - 1) * bound
    model.fc1 = fc
    model.config["num_classes"] = fc.out_features
    return model


def without_aux_outputs(state: dict) -> dict:
    """The state dict of a model trained with an auxiliary head (``with_aux_outputs``) with
    the head's rows dropped: the detector alone, as a model without the head loads it
    (fine-tuning from such a file, ``--init_from``). The rows are copied, not viewed: a view
    would carry the head's storage into every file saved from it."""
    return {k: v[:1].clone() if k.startswith("fc1.") else v for k, v in state.items()}


def detector_only(state: dict, meta: dict) -> tuple[dict, dict]:
    """A checkpoint's ``(state, meta)`` with an auxiliary head dropped, the detector alone
    (unchanged if it has none). Why: the head is a training task and the miner serves the
    first output only; with the head the network has other shapes than a plain ``base.pth``.
    The miner applies this when it loads a file (``load_model(..., detector_only=True)``), so
    either file swaps in place, and ``ship`` writes the shipped file without the head. The
    training record (``train_options.aux_classes``) stays: what the file was trained with."""
    config = dict(meta.get("config") or {})
    if config.get("num_classes", 1) == 1:
        return state, meta
    config["num_classes"] = 1
    return without_aux_outputs(state), {**meta, "config": config}


def has_aux_outputs(meta: dict) -> bool:
    """Whether a checkpoint's model still has auxiliary outputs after its logit, named by its
    training record (the family head's classes, then the processing-history head's outputs,
    ``train_options.aux_classes`` / ``history_outputs``; a file shipped by ``detector_only`` names the classes it was trained with
    but has no head; a file with more outputs and no such names is not read as a head)."""
    n = (meta.get("config") or {}).get("num_classes", 1)
    classes = (meta.get("train_options") or {}).get("aux_classes") or []
    history = (meta.get("train_options") or {}).get("history_outputs") or []
    return n > 1 and len(classes) + len(history) == n - 1


#: The smallest centre crop: 16 px reach the last layer of the pooled network as a 2x2 map.
MIN_CENTER_CROP = 16

#: The npr options that change how a network answers but no weight (a file with other values
#: loads the same state dict; the miner hot-swaps it in place): what it looks at and whether it
#: averages the picture with its mirror. The training options have no flag for them, so a
#: fine-tune (``--init_from``) carries them over from its checkpoint (``set_serving_options``).
SERVING_OPTIONS = ("center_crop", "flip_mean")


def set_serving_options(model: NPR, center_crop: int | None = None, flip_mean: bool | None = None) -> NPR:
    """``model`` answering with these ``SERVING_OPTIONS`` (None keeps a value as it is), in place,
    its ``config`` kept as the constructor writes it (a key only when set): a checkpoint saved
    from it serves them, and every forward (training, validation) applies them. A ``center_crop``
    below ``MIN_CENTER_CROP`` is a ValueError."""
    if center_crop is not None:
        model.center_crop = check_center_crop(int(center_crop))
    if flip_mean is not None:
        model.flip_mean = bool(flip_mean)
    for key in SERVING_OPTIONS:
        model.config.pop(key, None)
        if getattr(model, key):
            model.config[key] = getattr(model, key)
    return model


def check_center_crop(size: int) -> int:
    """``size`` if it is a usable ``center_crop`` (0 = the whole input), else a ValueError."""
    if size and size < MIN_CENTER_CROP:
        raise ValueError(f"center_crop must be 0 (the whole input) or at least {MIN_CENTER_CROP}, got {size}")
    return size


def center_square(x: torch.Tensor, size: int) -> torch.Tensor:
    """The central ``size`` x ``size`` square of a (B, C, H, W) batch (all of it when ``size``
    is 0 or not smaller). Its offset is kept even, so the 2x2 blocks of the NPR residual
    fall where they fall on the whole picture. Why: a network trained on small patches
    needs less of a picture than the 256 px it is given, and its cost grows with the area
    (``center_crop`` in the config: a cheaper CPU serve of the same weights,
    docs/Performance.md)."""
    h, w = x.shape[-2:]
    if not size or (size >= h and size >= w):
        return x
    sh, sw = min(size, h), min(size, w)
    top, left = ((h - sh) // 2) & ~1, ((w - sw) // 2) & ~1
    return x[..., top:top + sh, left:left + sw]


def top_fraction(pool: str) -> float:
    """``mean`` -> 1.0; ``topNN`` -> NN / 100 (1 <= NN <= 100); anything else is an error."""
    if pool == "mean":
        return 1.0
    if pool.startswith("top") and pool[3:].isdigit() and 1 <= int(pool[3:]) <= 100:
        return int(pool[3:]) / 100
    raise ValueError(f"unknown pool {pool!r}: 'mean' or 'topNN' (the mean of the NN % highest location logits)")


def pool_logit_map(m: torch.Tensor, pool: str) -> torch.Tensor:
    """(B, H, W) location logits -> (B,) image logits by ``pool`` (see ``top_fraction``)."""
    flat = m.flatten(1)
    k = max(1, round(top_fraction(pool) * flat.shape[1]))
    return flat.mean(1) if k == flat.shape[1] else flat.topk(k, dim=1).values.mean(1)
