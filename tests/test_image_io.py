"""Decoding untrusted images: EXIF orientation, unusual modes, limits before decoding."""
from __future__ import annotations

import base64
import io
import struct

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


def _jpeg_segments(data: bytes) -> list[tuple[int, bytes]]:
    """(marker, bytes) of a JPEG; a start-of-scan segment includes its entropy-coded data."""
    out, i = [(0xD8, data[:2])], 2
    while i < len(data):
        marker = data[i + 1]
        if marker == 0xD9:
            out.append((marker, data[i:i + 2]))
            break
        j = i + 2 + struct.unpack(">H", data[i + 2:i + 4])[0]
        if marker == 0xDA:
            while not (data[j] == 0xFF and data[j + 1] != 0x00 and not 0xD0 <= data[j + 1] <= 0xD7):
                j += 1
        out.append((marker, data[i:j]))
        i = j
    return out


def progressive_jpeg(size: int = 4096, extra_scans: int = 0) -> bytes:
    """A grey progressive JPEG; with ``extra_scans``, its smallest AC scan repeated that many
    times (libjpeg only warns about the bogus progression and runs every scan over every block)."""
    buf = io.BytesIO()
    Image.new("L", (size, size), 128).save(buf, "JPEG", quality=75, progressive=True)
    segs = _jpeg_segments(buf.getvalue())
    ac_scans = [s for m, s in segs if m == 0xDA and s[5 + 2 * s[4]] > 0]  # spectral start > 0
    body = b"".join(s for m, s in segs if m != 0xD9)
    return body + min(ac_scans, key=len) * extra_scans + b"\xff\xd9"


def test_a_progressive_jpeg_decodes_and_one_of_repeated_scans_is_refused_before_decoding():
    """1,500 repeated 33-byte scans (115 KB, under 1 % of the payload limit) took about 2 s to
    decode (0.42 MiB: 9.5 s; at the 16 MiB limit minutes per request, holding a decode
    thread); encoders write a few dozen scans at most, so the count is refused from the bytes."""
    data = progressive_jpeg()
    assert 1 < data.count(b"\xff\xda") <= 10
    assert decode_image(base64.b64encode(data).decode()).size == (4096, 4096)
    bomb = base64.b64encode(progressive_jpeg(extra_scans=1500)).decode()
    assert len(bomb) < 200_000
    with pytest.raises(ImageDecodeError, match="more than 100 scans"):
        decode_image(bomb)
    # the limit is an option, and a PNG whose bytes happen to hold FF DA is not a JPEG
    assert decode_image(bomb, DecodeLimits(max_jpeg_scans=2000)).size == (4096, 4096)
    buf = io.BytesIO()
    Image.frombytes("L", (256, 1), bytes([0xFF, 0xDA] * 128)).save(buf, "PNG", compress_level=0)
    assert buf.getvalue().count(b"\xff\xda") > 100
    assert decode_image(base64.b64encode(buf.getvalue()).decode()).size == (256, 1)


def test_scans_are_counted_by_walking_the_jpeg_not_by_searching_its_bytes():
    """Bytes after the end of the picture (a motion photo's video) or inside an application
    segment hold FF DA by chance; they are not scans and do not count. Only the picture's own
    start-of-scan segments do: 1 for a baseline file, a few for a progressive one."""
    from bitmind.image_io import jpeg_scans

    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (10, 200, 30)).save(buf, "JPEG", quality=90)
    base = buf.getvalue()
    assert jpeg_scans(base) == 1
    junk = bytes([0xFF, 0xDA, 0x00, 0x08]) * 50_000  # 200 KB of would-be scan markers
    assert decode_image(base64.b64encode(base + junk).decode()).size == (64, 48)  # appended after the end
    app = b"\xff\xe9" + (len(junk[:60_000]) + 2).to_bytes(2, "big") + junk[:60_000]  # an APP9 segment full of them
    tucked = base[:2] + app + base[2:]
    assert jpeg_scans(tucked) == 1 and decode_image(base64.b64encode(tucked).decode()).size == (64, 48)
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (10, 200, 30)).save(buf, "JPEG", quality=90, progressive=True)
    assert 1 < jpeg_scans(buf.getvalue()) == buf.getvalue().count(b"\xff\xda") <= 12
    assert jpeg_scans(progressive_jpeg(size=64, extra_scans=500), stop_above=100) == 101  # stops once past
    # stray bytes before the repeated scans (libjpeg skips them with a warning and decodes on)
    # do not hide them: the walk skips to the next marker too
    segs = _jpeg_segments(progressive_jpeg(size=64))
    first_scan = next(k for k, (m, _) in enumerate(segs) if m == 0xDA)
    ac = min((s for m, s in segs if m == 0xDA and s[5 + 2 * s[4]] > 0), key=len)
    comment = b"\xff\xfe\x00\x04hi"  # a segment, then stray bytes where a marker should be
    hidden = b"".join(s for _, s in segs[:first_scan + 1]) + comment + b"junk" + ac * 300 + b"\xff\xd9"
    assert jpeg_scans(hidden) == 301
    with pytest.raises(ImageDecodeError, match="more than 100 scans"):
        decode_image(base64.b64encode(hidden).decode())
    # a stuffed zero between segments is a stray byte to libjpeg, not a marker with a length
    # (read as one, its next two bytes jumped over 1,500 scans that libjpeg then decoded)
    jump = (2 + 300 * len(ac)).to_bytes(2, "big")
    assert 0xFF not in jump
    bomb = b"".join(s for _, s in segs[:first_scan + 1]) + comment + b"\xff\x00" + jump + ac * 300 + b"\xff\xd9"
    assert jpeg_scans(bomb) == 301
    # a walk of more segments than any real file has is refused, not walked
    with pytest.raises(ImageDecodeError, match="marker segments"):
        jpeg_scans(segs[0][1] + comment * 20_000 + b"\xff\xd9")


def test_a_jpeg_of_endless_empty_segments_is_refused_before_pillow_parses_it(monkeypatch):
    """3 million empty APP1 segments (16 MiB of base64): Pillow reads every marker segment in
    Python, which held a decode thread for about 6 s and 420 MB before the segment count
    refused the bytes; the count now runs first, so Pillow never sees them."""
    from PIL import Image

    from bitmind import image_io

    raw = b"\xff\xd8" + b"\xff\xe1\x00\x02" * 20_000 + b"\xff\xd9"
    opened = []
    monkeypatch.setattr(image_io.Image, "open", lambda *a, **k: opened.append(1) or Image.new("RGB", (8, 8)))
    with pytest.raises(image_io.ImageDecodeError, match="marker segments"):
        image_io.open_image(raw)
    assert not opened
