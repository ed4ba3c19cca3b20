"""Image transforms shared by training, evaluation, serving and the validator.

* ``base_transforms``: the ONE eval transform. RGB, centre-crop to the short side,
  resize to 256x256, to tensor in [0, 1]. Used identically by the trainer's
  validation, ``bitmind.eval`` and the miner, so that what the model sees when it
  serves is what it saw when it was measured.
* ``RandomAugment``: the validator-side augmentation of SN34 challenges
  (rotation up to 20 degrees, random resized crop to 256 with scale 0.2-1.0 and a
  square ratio, horizontal and vertical flips).
* ``ValidatorPipeline``: what a validator does to a challenge before sending it
  (random aug or, for a share of challenges, base transforms only; then a JPEG
  round trip at quality 75). Seedable, so evaluation ``--challenge`` is reproducible.
* ``TrainAugment``: the validator pipeline plus optional robustness augmentations
  (Gaussian blur, colour jitter, camera-like sensor noise, JPEG at a random quality),
  applied to both classes.

All random choices take an explicit ``random.Random`` so that a seed fixes them,
independent of worker processes or global RNG state.
"""
from __future__ import annotations

import io
import math
import random
from dataclasses import dataclass

import numpy as np
import torchvision.transforms as T
import torchvision.transforms.functional as TF
from PIL import Image, ImageFilter

from bitmind.common import PLAIN_SHARE
from bitmind.image_io import _to_rgb

TARGET_SIZE = 256
#: Pillow's default JPEG quality; what SN34 validators encode challenges with.
VALIDATOR_JPEG_QUALITY = 75


# The steps of ``base_transforms`` are dataclasses for their repr ("ConvertToRGB()"), which
# checkpoints store to say how their inputs were prepared (``describe_eval_transform``).
@dataclass(frozen=True)
class ConvertToRGB:
    """Any PIL mode (L, P, CMYK, RGBA, I;16 ...) to 8-bit RGB."""

    def __call__(self, img: Image.Image) -> Image.Image:
        return _to_rgb(img)


@dataclass(frozen=True)
class CenterCropShortSide:
    """Centre-crop to a square whose side is the image's short side."""

    def __call__(self, img: Image.Image) -> Image.Image:
        w, h = img.size
        s = min(w, h)
        if w == h:
            return img
        return TF.center_crop(img, [s, s])


def _resize_square(img: Image.Image, size: int = TARGET_SIZE) -> Image.Image:
    if img.size == (size, size):
        return img  # never resample an image that is already the right size
    return img.resize((size, size), Image.BILINEAR, reducing_gap=None)


class ResizeSquare:
    def __init__(self, size: int = TARGET_SIZE):
        self.size = size

    def __call__(self, img: Image.Image) -> Image.Image:
        return _resize_square(img, self.size)

    def __repr__(self) -> str:
        return f"ResizeSquare({self.size})"


def base_pil(img: Image.Image, size: int = TARGET_SIZE) -> Image.Image:
    """base_transforms without the final to-tensor (PIL in, 256x256 RGB PIL out)."""
    return _resize_square(CenterCropShortSide()(_to_rgb(img)), size)


def base_scaled(img: Image.Image, size: int = TARGET_SIZE) -> tuple[Image.Image, float]:
    """``base_pil`` and how much it scaled the picture (size / short side: above 1 up-scaled),
    for the processing history (``TrainAugment.with_history``)."""
    return base_pil(img, size), size / min(img.size)


#: The one eval transform: PIL image -> float tensor (3, 256, 256) in [0, 1].
base_transforms = T.Compose([ConvertToRGB(), CenterCropShortSide(), ResizeSquare(TARGET_SIZE), T.ToTensor()])


def _sample_resized_crop(w: int, h: int, rng: random.Random, scale=(0.2, 1.0), ratio=(1.0, 1.0)):
    """torchvision's RandomResizedCrop parameter sampling, with an explicit RNG."""
    area = w * h
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        cw = int(round(math.sqrt(target_area * aspect)))
        ch = int(round(math.sqrt(target_area / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            top = rng.randint(0, h - ch)
            left = rng.randint(0, w - cw)
            return top, left, ch, cw
    s = min(w, h)  # fallback: centre square
    return (h - s) // 2, (w - s) // 2, s, s


class RandomAugment:
    """Validator-side random augmentation (PIL in, 256x256 PIL out).

    Rotation in [-20, 20] degrees, random resized crop to 256 (scale 0.2-1.0, square),
    horizontal flip (p=0.5), vertical flip (p=0.5).
    """

    def __init__(self, size: int = TARGET_SIZE, degrees: float = 20.0, scale=(0.2, 1.0)):
        self.size, self.degrees, self.scale = size, degrees, tuple(scale)

    def sample(self, width: int, height: int, rng) -> dict:
        """Draw this augmentation's random parameters for a (centre-cropped) image of that
        size: ``angle``, ``crop`` (top, left, height, width), ``hflip``, ``vflip``. The draws
        are made in a fixed order from ``rng``, so replaying an RNG replays the challenge."""
        angle = rng.uniform(-self.degrees, self.degrees)
        crop = _sample_resized_crop(width, height, rng, self.scale)
        return {"angle": angle, "crop": crop, "hflip": rng.random() < 0.5, "vflip": rng.random() < 0.5}

    def __call__(self, img: Image.Image, rng: random.Random) -> Image.Image:
        return self.apply_scaled(img, rng)[0]

    def apply_scaled(self, img: Image.Image, rng: random.Random) -> tuple[Image.Image, float]:
        """The augmented picture and how much it was scaled (size / crop side: above 1 the
        crop was up-scaled), for ``TrainAugment.with_history``'s processing history."""
        img = CenterCropShortSide()(_to_rgb(img))
        p = self.sample(img.width, img.height, rng)  # rotation keeps the size (no expand)
        img = TF.rotate(img, p["angle"], interpolation=T.InterpolationMode.NEAREST)
        top, left, ch, cw = p["crop"]
        img = TF.resized_crop(img, top, left, ch, cw, [self.size, self.size], interpolation=T.InterpolationMode.BILINEAR, antialias=True)
        if p["hflip"]:
            img = TF.hflip(img)
        if p["vflip"]:
            img = TF.vflip(img)
        return img, self.size / ch

    def __repr__(self) -> str:
        return f"RandomAugment(size={self.size}, degrees={self.degrees}, scale={self.scale})"


def jpeg_roundtrip(img: Image.Image, quality: int = VALIDATOR_JPEG_QUALITY) -> Image.Image:
    """Encode to JPEG at ``quality`` and decode again, as a challenge on the wire."""
    buf = io.BytesIO()
    _to_rgb(img).save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    return Image.open(buf).convert("RGB")  # convert decodes the whole image


@dataclass
class ValidatorPipeline:
    """What a validator does to an image before sending it as a challenge.

    With probability ``plain_share`` only base transforms, otherwise random aug;
    then (if ``jpeg_quality`` is set) a JPEG round trip at that quality.
    """

    plain_share: float = PLAIN_SHARE
    jpeg_quality: int | None = VALIDATOR_JPEG_QUALITY
    size: int = TARGET_SIZE

    def apply(self, img: Image.Image, rng: random.Random) -> Image.Image:
        """PIL in -> 256x256 PIL as the validator would produce it, before encoding."""
        return self.apply_scaled(img, rng)[0]

    def apply_scaled(self, img: Image.Image, rng: random.Random) -> tuple[Image.Image, float]:
        """``apply`` (the same draws) and how much it scaled the picture: size / short side
        when plain, size / crop side when augmented (``resize_factor`` without the pixels)."""
        if rng.random() < self.plain_share:
            return base_scaled(img, self.size)
        return RandomAugment(self.size).apply_scaled(img, rng)

    def resize_factor(self, width: int, height: int, rng: random.Random) -> float:
        """How much ``apply`` with this ``rng`` scales a ``width`` x ``height`` picture (its
        draws replayed, no pixels touched): size / short side when plain, size / crop side
        when augmented; above 1 up-scales. Read-outs split scores by it
        (benchmarks/logo_by_resize.py)."""
        side = min(width, height)
        if rng.random() < self.plain_share:
            return self.size / side
        return self.size / RandomAugment(self.size).sample(side, side, rng)["crop"][2]

    def __call__(self, img: Image.Image, rng: random.Random) -> Image.Image:
        out = self.apply(img, rng)
        if self.jpeg_quality is not None:
            out = jpeg_roundtrip(out, self.jpeg_quality)
        return out


@dataclass
class AugConfig:
    """Training augmentation switches (each settable from the trainer's command line).

    ``validator_prob``: share of samples passed through the validator geometry
    (random aug or plain); the rest get base transforms only.
    ``jpeg_prob``/``jpeg_quality``: JPEG round trip at a quality drawn from the range
    (75-75 reproduces validators exactly; 30-100 adds robustness).
    """

    validator_prob: float = 1.0
    plain_share: float = PLAIN_SHARE
    jpeg_prob: float = 1.0
    jpeg_quality: tuple[int, int] = (75, 75)
    blur_prob: float = 0.0
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    color_jitter_prob: float = 0.0
    color_jitter: float = 0.2  # brightness/contrast/saturation strength; hue is a quarter of it
    noise_prob: float = 0.0
    noise_sigma: tuple[float, float] = (1.0, 6.0)  # in 8-bit levels, at mid grey


def sensor_noise(img: Image.Image, rng: random.Random, sigma: float) -> Image.Image:
    """Camera-like noise on an RGB picture: signal-dependent (shot) plus constant (read)
    noise, ``sigma`` 8-bit levels at mid grey, part shared by the three channels (luma) and
    part per channel (chroma). Why: a kind of real photo the model never saw is called fake
    far more often than known ones, noisy low-light photos most (docs/Generalisation_record.md,
    "Unseen cameras"); noise on BOTH classes teaches that noise is not a generator's trace."""
    a = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    g = np.random.default_rng(rng.getrandbits(32))
    std = (sigma / 255.0) * np.sqrt(0.3 + 1.4 * a)  # variance grows with intensity (photon noise)
    n = 0.6 * g.standard_normal(a.shape[:2])[..., None] + 0.8 * g.standard_normal(a.shape)
    out = np.clip(a + std * n, 0.0, 1.0)
    return Image.fromarray((out * 255.0 + 0.5).astype(np.uint8))


class TrainAugment:
    """PIL in -> augmented 256x256 PIL out, driven by an ``AugConfig`` and an explicit RNG."""

    def __init__(self, cfg: AugConfig, size: int = TARGET_SIZE):
        self.cfg, self.size = cfg, size
        self._geom = ValidatorPipeline(plain_share=cfg.plain_share, jpeg_quality=None, size=size)

    def __call__(self, img: Image.Image, rng: random.Random) -> Image.Image:
        return self.with_history(img, rng)[0]

    def with_history(self, img: Image.Image, rng: random.Random) -> tuple[Image.Image, dict]:
        """The augmented picture and its processing history: ``scale`` (how much the picture was
        resized, above 1 up-scaled) and ``jpeg_quality`` (of the JPEG round trip, None without
        one). The same draws as ``__call__``, so asking for the history changes no picture."""
        c = self.cfg
        if rng.random() < c.validator_prob:
            img, scale = self._geom.apply_scaled(img, rng)
        else:
            img, scale = base_scaled(img, self.size)
        if c.blur_prob > 0 and rng.random() < c.blur_prob:
            img = img.filter(ImageFilter.GaussianBlur(radius=rng.uniform(*c.blur_sigma)))
        if c.color_jitter_prob > 0 and rng.random() < c.color_jitter_prob:
            s = c.color_jitter
            img = TF.adjust_brightness(img, rng.uniform(1 - s, 1 + s))
            img = TF.adjust_contrast(img, rng.uniform(1 - s, 1 + s))
            img = TF.adjust_saturation(img, rng.uniform(1 - s, 1 + s))
            img = TF.adjust_hue(img, rng.uniform(-s / 4, s / 4))
        if c.noise_prob > 0 and rng.random() < c.noise_prob:
            img = sensor_noise(img, rng, rng.uniform(*c.noise_sigma))
        quality = None
        if c.jpeg_prob > 0 and rng.random() < c.jpeg_prob:
            quality = rng.randint(int(c.jpeg_quality[0]), int(c.jpeg_quality[1]))
            img = jpeg_roundtrip(img, quality)
        return img, {"scale": scale, "jpeg_quality": quality}


#: What the processing-history head (``TrainConfig.history_weight``) regresses, in its output
#: order: log2 of the resize factor (0: native pixels, 1: up-scaled twice) and the JPEG
#: quality of the last round trip, (q - 75) / 25 (0 at the validators' 75; no JPEG counts as 100).
HISTORY_OUTPUTS = ("log2_scale", "jpeg_quality")


def history_targets(history: dict | None) -> list[float]:
    """``TrainAugment.with_history``'s history as the head's targets (``HISTORY_OUTPUTS``); NaN where
    it is not known (``None``: a picture that already is a validator's challenge, whose resizing
    happened before it reached us), which the loss leaves out."""
    if history is None:
        return [math.nan] * len(HISTORY_OUTPUTS)
    q = history.get("jpeg_quality")
    return [math.log2(history["scale"]), ((100 if q is None else q) - VALIDATOR_JPEG_QUALITY) / 25.0]


to_tensor = TF.to_tensor  # PIL -> float (3, H, W) in [0, 1]


def describe_eval_transform() -> dict:
    """Self-description stored in checkpoints, so a model file says how to feed it."""
    return {"name": "base_transforms", "size": TARGET_SIZE, "steps": [repr(t) for t in base_transforms.transforms], "range": [0.0, 1.0]}
