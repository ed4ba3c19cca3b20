"""Fuzzing the miner's forward path (hypothesis): random bytes, mutated valid images,
random base64 text and headers declaring huge sizes go through the real handlers and
predictor. No exception escapes, every failure is classified as bad input (never an
unexpected error with a traceback), memory stays bounded, and valid requests are still
answered correctly afterwards.

Deterministic by default (``derandomize``), so the suite is reproducible; set
``BITMIND_FUZZ_EXAMPLES=N`` for more cases per strategy and ``BITMIND_FUZZ_RANDOM=1``
to explore new ones. Each test prints how many cases it ran.
"""
import asyncio
import base64
import io
import os
import string
import struct
import zlib
from collections import Counter

import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from bitmind.image_io import DEFAULT_MAX_PIXELS, DecodeLimits, ImageDecodeError, decode_image
from bitmind.miner.handlers import MinerHandlers
from bitmind.miner.predict import Predictor
from bitmind.protocol import ImageSynapse

EXAMPLES = int(os.environ.get("BITMIND_FUZZ_EXAMPLES", "120"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                derandomize=not os.environ.get("BITMIND_FUZZ_RANDOM"),
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                       HealthCheck.data_too_large])
#: The fuzzed miner's pixel limit (set like --neuron.max_image_pixels): the same code path
#: as the default 40 MP, with a memory bound small enough to check tightly.
FUZZ_MAX_PIXELS = 4_000_000
#: RSS growth allowed over a whole fuzz run, whatever the number of cases: a decode needs
#: at most a few bytes per pixel up to the limit (RGBA, 16-bit, RGB copies), plus slack
#: for the allocator. Growth per case (a leak) would break it.
RSS_GROWTH_LIMIT_MB = 64 + 16 * FUZZ_MAX_PIXELS / 2 ** 20


def _saved(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _seed_images() -> dict[str, bytes]:
    img = Image.effect_mandelbrot((24, 20), (-2, -1.2, 0.8, 1.2), 40).convert("RGB")
    return {"JPEG": _saved(img, "JPEG", quality=75), "PNG": _saved(img, "PNG"), "GIF": _saved(img, "GIF"),
            "WEBP": _saved(img, "WEBP"), "BMP": _saved(img, "BMP"), "TIFF": _saved(img, "TIFF"),
            "PNG16": _saved(Image.new("I;16", (16, 12), 40000), "PNG"),
            "RGBA": _saved(img.convert("RGBA"), "PNG")}


SEEDS = _seed_images()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# ---------------------------------------------------------------------------- strategies
@st.composite
def mutated_images(draw) -> bytes:
    """A valid small image with a few random edits: bit flips, overwrites, insertions,
    deletions, truncation."""
    data = bytearray(SEEDS[draw(st.sampled_from(sorted(SEEDS)))])
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "overwrite", "insert", "delete", "truncate"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "overwrite":
            chunk = draw(st.binary(min_size=1, max_size=8))
            data[pos:pos + len(chunk)] = chunk
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=64))
        elif op == "delete":
            del data[pos:pos + draw(st.integers(1, 64))]
        elif op == "truncate":
            del data[pos:]
    return bytes(data)


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


@st.composite
def huge_headers(draw) -> bytes:
    """Well-formed headers (valid checksums) declaring sizes up to the formats' maxima,
    followed by little or no pixel data."""
    kind = draw(st.sampled_from(["png", "jpeg", "gif", "bmp"]))
    big = st.one_of(st.integers(1, 1 << 16), st.integers(1 << 12, (1 << 31) - 1))
    tail = draw(st.binary(max_size=256))
    if kind == "png":
        w, h = draw(big), draw(big)
        ihdr = struct.pack(">IIBBBBB", w, h, 8, draw(st.sampled_from([0, 2, 6])), 0, 0, 0)
        idat = zlib.compress(tail)
        return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")
    if kind == "jpeg":
        data = bytearray(SEEDS["JPEG"])
        sof = data.find(b"\xff\xc0")
        data[sof + 5:sof + 9] = struct.pack(">HH", draw(st.integers(0, 65535)), draw(st.integers(0, 65535)))
        return bytes(data[: draw(st.integers(sof + 9, len(data)))]) + tail
    if kind == "gif":
        data = bytearray(SEEDS["GIF"])
        data[6:10] = struct.pack("<HH", draw(st.integers(0, 65535)), draw(st.integers(0, 65535)))
        return bytes(data) + tail
    data = bytearray(SEEDS["BMP"])  # width, height: signed 32-bit (negative height = top-down)
    data[18:26] = struct.pack("<ii", draw(st.integers(-(1 << 31), (1 << 31) - 1)),
                              draw(st.integers(-(1 << 31), (1 << 31) - 1)))
    return bytes(data) + tail


LIMITS = DecodeLimits(max_pixels=FUZZ_MAX_PIXELS)
B64_ALPHABET = string.ascii_letters + string.digits + "+/="
payload_strategies = {
    "random bytes": st.binary(max_size=4096).map(b64),
    "mutated valid images": mutated_images().map(b64),
    "random base64 text": st.one_of(
        st.text(alphabet=B64_ALPHABET, max_size=3000),
        st.text(max_size=300),  # any unicode: not base64 at all
        st.builds(lambda prefix, body: prefix + body,
                  st.sampled_from(["data:image/png;base64,", "data:,", "data:image/jpeg;base64", " ", "\n"]),
                  st.text(alphabet=B64_ALPHABET + " \n-_.", max_size=500))),
    "huge declared sizes": huge_headers().map(b64),
}


# ---------------------------------------------------------------------------- harness
@pytest.fixture(scope="module")
def miner(tiny_model):
    predictor = Predictor(str(tiny_model), device="cpu", limits=LIMITS)
    handlers = MinerHandlers(predictor, metagraph=None)
    loop = asyncio.new_event_loop()
    valid = b64(SEEDS["JPEG"])
    expected = predictor.predict_image(decode_image(valid))
    yield handlers, loop, valid, expected
    loop.close()
    predictor.close()


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2 ** 20


@pytest.mark.parametrize("name", sorted(payload_strategies))
def test_forward_survives_fuzzing(miner, name):
    handlers, loop, valid, expected = miner
    for payload in (valid, b64(SEEDS["PNG16"]), b64(mutated_bytes_example())):  # warm the allocator and pools
        loop.run_until_complete(handlers.forward(ImageSynapse(image=payload)))
    before_counts, rss_before = handlers.stats.snapshot(), rss_mb()
    outcomes: Counter = Counter()

    @FUZZ
    @given(payload=payload_strategies[name])
    def one_case(payload: str) -> None:
        try:
            decode_image(payload, LIMITS)
            decodable = True
        except ImageDecodeError:
            decodable = False  # anything else escapes and fails the test
        out = loop.run_until_complete(handlers.forward(ImageSynapse(image=payload)))
        p = out.prediction
        assert p == -1.0 or 0.0 <= p <= 1.0, p
        assert (p != -1.0) == decodable, (decodable, p)
        outcomes["answered" if decodable else "refused"] += 1

    one_case()
    counts = handlers.stats.snapshot()
    delta = {k: counts[k] - before_counts[k] for k in counts}
    rss_growth = rss_mb() - rss_before
    print(f"\nfuzz [{name}]: {sum(outcomes.values())} cases ({dict(outcomes)}), "
          f"handler counts {delta}, RSS {rss_before:.0f} -> {rss_before + rss_growth:.0f} MB")
    assert sum(outcomes.values()) >= min(EXAMPLES, 50)  # it really ran
    assert delta["errors"] == 0 and delta["overloaded"] == 0  # every failure was classified as bad input
    assert delta["requests"] == delta["served"] + delta["bad_input"]
    assert rss_growth < RSS_GROWTH_LIMIT_MB
    # ...and the miner still answers a valid request, with the right answer.
    out = loop.run_until_complete(handlers.forward(ImageSynapse(image=valid)))
    assert out.prediction == pytest.approx(expected, abs=1e-5)


def mutated_bytes_example() -> bytes:
    data = bytearray(SEEDS["JPEG"])
    data[len(data) // 2] ^= 0xFF
    return bytes(data[: len(data) * 3 // 4])


def test_declared_sizes_beyond_the_limit_are_refused_from_the_header():
    """The huge-size strategy does reach the limit check (else it would test little)."""
    w = h = 1 << 15  # 1 G pixels
    assert w * h > DEFAULT_MAX_PIXELS
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IEND", b"")
    with pytest.raises(ImageDecodeError, match="exceeds limit|too large") as e:
        decode_image(b64(png))
    # our limit, not Pillow's own (twice it), as every other refusal of a size says it
    assert f"limit {DEFAULT_MAX_PIXELS}" in str(e.value) or f"limit of {DEFAULT_MAX_PIXELS}" in str(e.value)
