"""Decoding untrusted images: EXIF orientation, unusual modes, limits before decoding."""
from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from bitmind.image_io import DecodeLimits, ImageDecodeError, decode_image, encode_image
from bitmind.image_transforms import base_transforms


def _b64(img: Image.Image, fmt: str, **kw) -> str:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return base64.b64encode(buf.getvalue()).decode()


def test_exif_orientation_is_applied():
    img = Image.new("RGB", (40, 20), (200, 0, 0))
    img.paste((0, 0, 200), (0, 0, 20, 20))  # left half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    out = decode_image(_b64(img, "JPEG", exif=exif.tobytes(), quality=95))
    assert out.size == (20, 40)
    top = np.asarray(out)[2, 10]
    assert top[2] > 150 and top[0] < 80  # the blue half is now on top


@pytest.mark.parametrize("mode,fmt", [("L", "PNG"), ("P", "PNG"), ("CMYK", "JPEG"), ("RGBA", "PNG"), ("LA", "PNG"), ("I;16", "PNG"), ("1", "PNG")])
def test_modes_become_rgb(mode, fmt):
    if mode == "I;16":
        img = Image.fromarray((np.arange(64 * 48, dtype=np.uint16).reshape(48, 64) * 20).astype(np.uint16))
    else:
        img = Image.new(mode, (64, 48))
    out = decode_image(_b64(img, fmt))
    assert out.mode == "RGB" and out.size == (64, 48)
    assert base_transforms(out).shape == (3, 256, 256)


def test_sixteen_bit_keeps_its_range():
    arr = np.full((8, 8), 65535, dtype=np.uint16)
    out = decode_image(_b64(Image.fromarray(arr), "PNG"))
    assert np.asarray(out).min() == 255


def test_transparent_pixels_composite_on_white():
    img = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    assert np.asarray(decode_image(_b64(img, "PNG"))).min() == 255


def test_limits_are_checked_from_the_header():
    img = Image.new("RGB", (300, 300))
    payload = _b64(img, "PNG")
    with pytest.raises(ImageDecodeError, match="exceeds limit"):
        decode_image(payload, DecodeLimits(max_pixels=300 * 299))
    with pytest.raises(ImageDecodeError, match="exceeds limit"):
        decode_image(payload, DecodeLimits(max_b64_chars=len(payload) - 1))
    assert decode_image(payload).size == (300, 300)


@pytest.mark.parametrize("payload", ["", "not base64!!", base64.b64encode(b"hello world").decode(), "data:image/png;base64,"])
def test_garbage_is_a_decode_error(payload):
    with pytest.raises(ImageDecodeError):
        decode_image(payload)


def test_encode_decode_round_trip_is_jpeg_q75():
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    raw = base64.b64decode(encode_image(img))
    assert raw[:2] == b"\xff\xd8"  # JPEG
    assert decode_image(encode_image(img)).size == (64, 64)
