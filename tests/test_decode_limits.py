"""Structure limits of the decoder: PNG chunk counts, GIF block counts, alpha flattening memory.

Each hostile payload is built by hand, just above its cap, and must be refused with
``ImageDecodeError`` and a message naming what was wrong; legitimate pictures at the edges
(many IDAT chunks, long animations, metadata, transparency, JPEG) must still decode.
"""
from __future__ import annotations

import base64
import io
import struct
import subprocess
import sys
import textwrap
import zlib

import numpy as np
import pytest
from PIL import Image

from bitmind import image_io
from bitmind.image_io import ImageDecodeError, decode_image, open_image

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chunk(cid: bytes, data: bytes = b"") -> bytes:
    return struct.pack(">I", len(data)) + cid + data + struct.pack(">I", zlib.crc32(cid + data))


def _png(width: int, height: int, rows: bytes, *, before=b"", after=b"", idat_size=None, colour_type=2) -> bytes:
    """A PNG by hand: 8-bit, filter 0 rows already prefixed; image data split in ``idat_size`` chunks."""
    z = zlib.compress(rows, 1)
    step = idat_size or len(z)
    idats = b"".join(_chunk(b"IDAT", z[i:i + step]) for i in range(0, len(z), step))
    ihdr = _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0))
    return PNG_SIGNATURE + ihdr + before + idats + after + _chunk(b"IEND")


def _tiny_png(**kw) -> bytes:
    return _png(1, 1, b"\x00\xff\x00\x00", **kw)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


# ---------------------------------------------------------------------------- PNG chunks

def test_png_with_too_many_ancillary_chunks_before_image_data_is_refused():
    text = _chunk(b"tEXt", b"k\x00v")
    raw = _tiny_png(before=text * image_io.MAX_PNG_CHUNKS)  # + IHDR: one over the cap
    with pytest.raises(ImageDecodeError, match=r"PNG with more than 10000 chunks besides image data"):
        decode_image(_b64(raw))


def test_png_with_too_many_private_chunks_after_image_data_is_refused():
    # Pillow reads chunks after IDAT when it loads the pixels, in Python too
    raw = _tiny_png(after=_chunk(b"prVt") * (image_io.MAX_PNG_CHUNKS + 1))
    with pytest.raises(ImageDecodeError, match=r"chunks besides image data \(last b'prVt'\)"):
        open_image(raw)


def test_png_with_too_many_empty_idat_chunks_is_refused():
    raw = _tiny_png()
    cap = image_io.MAX_PNG_CHUNKS + (len(raw) + 12 * (image_io.MAX_PNG_CHUNKS + 100)) // image_io.PNG_BYTES_PER_DATA_CHUNK
    head, tail = raw[:-12], raw[-12:]  # before IEND
    raw = head + _chunk(b"IDAT") * (cap + 1) + tail
    with pytest.raises(ImageDecodeError, match=r"image data chunks \(IDAT/fdAT\)"):
        open_image(raw)


def test_png_at_the_chunk_cap_decodes():
    text = _chunk(b"tEXt", b"k\x00v")
    raw = _tiny_png(before=text * (image_io.MAX_PNG_CHUNKS - 1))  # + IHDR: exactly the cap
    out = open_image(raw)
    assert out.mode == "RGB" and out.size == (1, 1) and out.getpixel((0, 0)) == (255, 0, 0)


@pytest.fixture(scope="module")
def noise_rows():
    """~11 MB of incompressible RGB rows: a PNG of them, base64, is just under the payload limit."""
    w, h = 2000, 1850
    px = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    rows = b"".join(b"\x00" + px[y].tobytes() for y in range(h))
    return w, h, px, rows


@pytest.mark.parametrize("idat_size", [8192, 1024], ids=["8KiB", "1KiB"])
def test_large_png_with_many_idat_chunks_up_to_the_payload_limit_decodes(noise_rows, idat_size):
    w, h, px, rows = noise_rows
    raw = _png(w, h, rows, idat_size=idat_size)
    n_idat = raw.count(b"IDAT")
    payload = _b64(raw)
    assert len(payload) <= image_io.DEFAULT_MAX_B64_CHARS
    if idat_size == 1024:
        assert n_idat > image_io.MAX_PNG_CHUNKS  # more than the fixed cap: admitted for their size
    out = decode_image(payload)
    assert out.size == (w, h)
    assert np.array_equal(np.asarray(out)[::97, ::89], px[::97, ::89])


# ---------------------------------------------------------------------------- GIF blocks

def _gif(*, before_image=b"", frames=1, per_frame=b"") -> bytes:
    """A 2x2 white GIF89a by hand: global 2-colour table (white, black), ``frames`` images."""
    head = b"GIF89a" + struct.pack("<HHBBB", 2, 2, 0x80, 0, 0) + b"\xff\xff\xff\x00\x00\x00"
    # image data as Pillow writes it: LZW minimum code size 8, one 6-byte sub-block, terminator
    image = b"," + struct.pack("<HHHHB", 0, 0, 2, 2, 0) + b"\x08\x06\x00\x01\x08\x04\x10\x10\x00"
    return head + before_image + b"".join(per_frame + image for _ in range(frames)) + b";"


def _comment(text: bytes = b"x") -> bytes:
    return b"!\xfe" + bytes([len(text)]) + text + b"\x00"


def test_gif_from_the_helper_is_valid():
    out = open_image(_gif())
    assert out.size == (2, 2) and np.asarray(out).min() == 255  # all white


def test_gif_with_too_many_comment_blocks_is_refused():
    raw = _gif(before_image=_comment() * (image_io.MAX_GIF_EXTENSIONS + 1))
    with pytest.raises(ImageDecodeError, match=r"GIF with more than 10000 extension blocks before its first image"):
        decode_image(_b64(raw))


def test_gif_with_too_many_extension_sub_blocks_is_refused():
    raw = _gif(before_image=b"!\xfe" + b"\x01x" * (image_io.MAX_GIF_SUB_BLOCKS + 1) + b"\x00")
    with pytest.raises(ImageDecodeError, match=r"GIF with more than 100000 extension sub-blocks"):
        open_image(raw)


def test_gif_with_too_many_stray_bytes_is_refused():
    raw = _gif(before_image=b"\x00" * (image_io.MAX_GIF_STRAY_BYTES + 1))
    with pytest.raises(ImageDecodeError, match=r"GIF with more than 10000 stray bytes between blocks"):
        open_image(raw)


def test_gif_at_the_caps_decodes():
    before = (_comment() * (image_io.MAX_GIF_EXTENSIONS - 2)
              + b"!\xff\x0bXMP DataXMP" + b"\x01x" * (image_io.MAX_GIF_SUB_BLOCKS - image_io.MAX_GIF_EXTENSIONS) + b"\x00"
              + b"\x00" * image_io.MAX_GIF_STRAY_BYTES + _comment())
    out = open_image(_gif(before_image=before))
    assert out.size == (2, 2)


def test_long_animation_decodes():
    # a graphic control extension and an image a frame: blocks after the first image are not counted
    gce = b"!\xf9\x04\x04\x04\x00\x00\x00"
    netscape = b"!\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00"
    raw = _gif(before_image=netscape + _comment(b"made by a generator"), frames=3 * image_io.MAX_GIF_EXTENSIONS,
               per_frame=gce)
    img = Image.open(io.BytesIO(raw))
    assert img.n_frames == 3 * image_io.MAX_GIF_EXTENSIONS
    assert open_image(raw).size == (2, 2)


def test_animated_gif_from_pillow_decodes():
    rng = np.random.default_rng(1)
    frames = [Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).convert("P") for _ in range(5)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], loop=0, duration=40, comment=b"hi")
    out = decode_image(_b64(buf.getvalue()))
    assert out.mode == "RGB" and out.size == (64, 48)
    assert np.array_equal(np.asarray(out), np.asarray(frames[0].convert("RGB")))


# ---------------------------------------------------------------------------- alpha and other pictures

def _white_composite(rgba: np.ndarray) -> np.ndarray:
    a = rgba[..., 3:].astype(np.float64) / 255
    return rgba[..., :3] * a + 255 * (1 - a)


@pytest.mark.parametrize("size", [(300, 200), (1500, 1100)], ids=["ordinary", "several-bands"])
def test_rgba_png_is_composited_on_white(size):
    w, h = size
    rgba = np.random.default_rng(2).integers(0, 256, (h, w, 4), dtype=np.uint8)
    rgba[:10, :, 3] = 0
    rgba[10:20, :, 3] = 255
    img = Image.fromarray(rgba, "RGBA")
    buf = io.BytesIO()
    img.save(buf, "PNG")
    out = decode_image(_b64(buf.getvalue()))
    assert out.mode == "RGB" and out.size == (w, h)
    got = np.asarray(out)
    assert (got[:10] == 255).all()
    assert np.array_equal(got[10:20], rgba[10:20, :, :3])
    assert np.abs(got.astype(np.float64) - _white_composite(rgba)).max() <= 1
    whole = Image.alpha_composite(Image.new("RGBA", img.size, (255, 255, 255, 255)), img).convert("RGB")
    assert np.array_equal(got, np.asarray(whole))  # bands give the same bytes as the whole picture


def test_palette_png_with_transparency_is_composited_on_white():
    img = Image.new("P", (700, 600), 1)
    img.putpalette([0, 0, 0, 200, 10, 10] + [0] * 762)
    img.paste(0, (0, 0, 700, 300))
    buf = io.BytesIO()
    img.save(buf, "PNG", transparency=0)
    got = np.asarray(open_image(buf.getvalue()))
    assert (got[:300] == 255).all() and (got[300:] == (200, 10, 10)).all()


def test_jpeg_decodes_with_exif_orientation():
    img = Image.new("RGB", (40, 20), (200, 0, 0))
    img.paste((0, 0, 200), (0, 0, 20, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=95, exif=exif.tobytes())
    out = open_image(buf.getvalue())
    assert out.mode == "RGB" and out.size == (20, 40)
    assert np.asarray(out)[2, 10, 2] > 150  # the blue half is now on top


def decode_peak_per_pixel(make_raw: str, check: str) -> float:
    """Peak resident memory of ``open_image`` per pixel, measured in a fresh interpreter: its
    peak (VmHWM) reset just before the decode (ru_maxrss would carry over the parent's peak
    through fork and exec). ``make_raw`` is Python that sets ``raw`` (the file's bytes) and
    ``w, h``; ``check`` an assertion on the decoded ``out``. Skips where the peak cannot be reset."""
    code = textwrap.dedent("""
        import io, re, struct, zlib
        from PIL import Image
        from bitmind.image_io import open_image
        def status(key):
            return int(re.search(key + r":\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)) * 1024
    """) + textwrap.dedent(make_raw) + textwrap.dedent("""
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # reset the peak to the current resident size
        except OSError:
            print("no-clear-refs")
            raise SystemExit(0)
        before = status("VmRSS")
        out = open_image(raw)
    """) + textwrap.dedent(check) + "\nprint((status('VmHWM') - before) / (w * h))\n"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    last = res.stdout.strip().splitlines()[-1]
    if last == "no-clear-refs":
        pytest.skip("cannot reset the peak resident size here (/proc/self/clear_refs)")
    return float(last)


def test_large_blank_rgba_png_costs_its_pixels_not_copies_of_them():
    """A blank 12 Mpx RGBA PNG is ~50 KB but decodes to 4 bytes a pixel; flattening alpha on
    the whole picture added four more full-size copies (~20 bytes a pixel at the peak)."""
    per_pixel = decode_peak_per_pixel("""
        def chunk(cid, data):
            return struct.pack(">I", len(data)) + cid + data + struct.pack(">I", zlib.crc32(cid + data))
        w, h = 4000, 3000
        z = zlib.compressobj(9)
        row = bytes(1 + 4 * w)  # filter 0, transparent black
        data = b"".join(z.compress(row) for _ in range(h)) + z.flush()
        raw = (b"\\x89PNG\\r\\n\\x1a\\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 6, 0, 0, 0))
               + chunk(b"IDAT", data) + chunk(b"IEND", b""))
    """, "assert out.size == (w, h) and out.getpixel((5, 5)) == (255, 255, 255)")
    # decoded RGBA + RGB result = 8 bytes a pixel, plus one band of scratch
    assert 4 < per_pixel < 11, f"decoding cost {per_pixel:.1f} bytes a pixel"


# ---------------------------------------------------------------------------- TIFF strips and wide modes

def _tiff_of_strips(strips: int, width: int = 20, order: str = "<") -> bytes:
    """A classic 8-bit grey TIFF by hand, one row per strip, every strip the same row of pixels."""
    n_tags, ifd = 8, 8
    pix = ifd + 2 + n_tags * 12 + 4
    offsets_at, counts_at = pix + width, pix + width + 4 * strips

    def tag(t, typ, count, value):
        if typ == 3 and count == 1:  # a SHORT value sits left-aligned in the 4-byte field
            return struct.pack(order + "HHIHH", t, typ, count, value, 0)
        return struct.pack(order + "HHII", t, typ, count, value)

    tags = [tag(256, 4, 1, width), tag(257, 4, 1, strips), tag(258, 3, 1, 8), tag(259, 3, 1, 1), tag(262, 3, 1, 1),
            tag(273, 4, strips, offsets_at), tag(278, 4, 1, 1), tag(279, 4, strips, counts_at)]
    head = (b"II*\x00" if order == "<" else b"MM\x00*") + struct.pack(order + "I", ifd)
    return (head + struct.pack(order + "H", n_tags) + b"".join(tags) + struct.pack(order + "I", 0) + b"\x80" * width
            + struct.pack(order + "I", pix) * strips + struct.pack(order + "I", width) * strips)


@pytest.mark.parametrize("head", [b"MM*\x00", b"II\x00*", b"MM\x00+"])
def test_every_header_pillow_reads_as_tiff_is_checked(head):
    """Pillow opens two byte-order mixes besides the standard headers, and reads ``MM\\x00+``
    as a classic TIFF: 1 million strips behind ``II\\x00*`` decoded in 3.7 s (review)."""
    order = "<" if head[:2] == b"II" else ">"
    raw = head + _tiff_of_strips(image_io.MAX_TIFF_STRIPS + 1, order=order)[4:]
    with pytest.raises(ImageDecodeError, match="strips exceeds the limit"):
        open_image(raw)


@pytest.mark.parametrize("order", ["<", ">"])
def test_tiff_with_too_many_strips_is_refused_before_pillow_reads_them(order):
    """1.5 million one-row strips (a 9 MB file) held a decode thread 8.6 s and 554 MB: Pillow
    builds an entry per strip when it opens the file (operator review)."""
    raw = _tiff_of_strips(image_io.MAX_TIFF_STRIPS + 1, order=order)
    with pytest.raises(ImageDecodeError, match="strips exceeds the limit"):
        open_image(raw)
    ok = open_image(_tiff_of_strips(300, order=order))  # an ordinary strip count decodes
    assert ok.size == (20, 300) and ok.getpixel((3, 200)) == (128, 128, 128)


def test_bigtiff_and_classic_tiff_decode():
    img = Image.fromarray(np.full((64, 80), 90, np.uint8))
    for kw in ({"big_tiff": True}, {}):
        buf = io.BytesIO()
        img.save(buf, format="TIFF", **kw)
        assert decode_image(_b64(buf.getvalue())).getpixel((5, 5)) == (90, 90, 90)


def test_wide_modes_scale_from_their_range_and_cost_a_band_not_copies():
    """16-bit, 32-bit and float pictures become 8-bit grey: 16-bit from 0-65535, floats of at
    most 1 from 0-1, NaN as 0; converted in bands of rows, so a large one costs its decoded
    pixels and the results (a blank 40 Mpx 16-bit PNG peaked at +433 MB per request)."""
    def tiff(arr):
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="TIFF")
        return buf.getvalue()

    grey = lambda raw: np.asarray(open_image(raw))[..., 0]  # noqa: E731
    assert grey(tiff(np.array([[0.0, 0.5, 1.0]], np.float32))).tolist() == [[0, 128, 255]]
    assert grey(tiff(np.array([[np.nan, 2.0, 200.0]], np.float32))).tolist() == [[0, 2, 200]]  # as 8-bit levels
    assert grey(tiff(np.array([[np.nan, 0.8, 0.8]], np.float32))).tolist() == [[0, 204, 204]]  # a NaN first
    assert grey(tiff(np.array([[0, 200, 255]], np.int32))).tolist() == [[0, 200, 255]]
    assert grey(tiff(np.array([[0, 32768, 65535]], np.int32))).tolist() == [[0, 128, 255]]
    per_pixel = decode_peak_per_pixel("""
        w, h = 4000, 3000
        buf = io.BytesIO()
        Image.new("I;16", (w, h)).save(buf, format="PNG")
        raw = buf.getvalue()
    """, 'assert out.size == (w, h) and out.mode == "RGB"')
    # decoded 16-bit (2 B) + grey (1 B) + RGB result (4 B) = 7 bytes a pixel, plus one band;
    # the whole-picture float32 conversion cost 16 bytes a pixel or more
    assert 4 < per_pixel < 10, f"decoding cost {per_pixel:.1f} bytes a pixel"
