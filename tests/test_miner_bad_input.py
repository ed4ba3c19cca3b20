"""Hostile and unusual payloads: every one is answered (never a crash), undecodable ones
with -1.0, decodable ones with a real probability; the miner keeps serving afterwards."""
import asyncio
import base64
import io
import logging
import math
import struct
import threading
import time
import zlib

import numpy as np
import pytest
from PIL import Image

from bitmind.image_io import DecodeLimits
from bitmind.miner.handlers import MinerHandlers
from bitmind.miner.batching import Overloaded
from bitmind.miner.predict import Predictor
from bitmind.protocol import ImageSynapse, prepare_image_synapse

pytestmark = pytest.mark.usefixtures("session_chain")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def saved(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bomb_header(width: int = 20000, height: int = 20000) -> bytes:
    """A valid PNG header declaring width x height RGB pixels, with almost no data:
    decoding it for real would need 1.2 GB; a safe decoder refuses from the header."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
            + png_chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + png_chunk(b"IEND", b""))


def animated_gif() -> bytes:
    frames = [Image.new("RGB", (48, 48), (80 * i, 255 - 80 * i, 40)) for i in range(3)]
    return saved(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)


def payloads(image_factory):
    photo = image_factory(size=80, seed=7)
    jpeg = saved(photo, "JPEG", quality=75)
    undecodable = {
        "empty string": "",
        "invalid base64": "this is not base64!!",
        "base64 of non-image bytes": b64(b"hello, I am definitely not an image" * 3),
        "20000x20000 declared PNG (bomb)": b64(png_bomb_header()),
    }
    decodable = {
        "1x1 image": b64(saved(Image.new("RGB", (1, 1), (200, 10, 10)), "PNG")),
        "CMYK JPEG": b64(saved(Image.new("CMYK", (64, 48), (10, 200, 30, 0)), "JPEG")),
        "16-bit PNG": b64(saved(Image.fromarray((np.arange(64 * 64, dtype=np.uint16) * 16).reshape(64, 64)), "PNG")),
        "RGBA PNG": b64(saved(photo.convert("RGBA"), "PNG")),
        "animated GIF": b64(animated_gif()),
    }
    either = {"truncated JPEG": b64(jpeg[: len(jpeg) // 2])}
    return undecodable, decodable, either


def test_sanity_of_crafted_payloads(image_factory):
    """The crafted files really are what their names say (else the test below proves little)."""
    _, decodable, _ = payloads(image_factory)
    assert Image.open(io.BytesIO(base64.b64decode(decodable["CMYK JPEG"]))).mode == "CMYK"
    assert Image.open(io.BytesIO(base64.b64decode(decodable["16-bit PNG"]))).mode.startswith("I")
    assert Image.open(io.BytesIO(base64.b64decode(decodable["RGBA PNG"]))).mode == "RGBA"
    gif = Image.open(io.BytesIO(base64.b64decode(decodable["animated GIF"])))
    assert getattr(gif, "n_frames", 1) == 3
    bomb = png_bomb_header()
    assert bomb.startswith(b"\x89PNG") and struct.unpack(">II", bomb[16:24]) == (20000, 20000) and len(bomb) < 200


@pytest.fixture(scope="module")
def predictor(tiny_model):
    p = Predictor(str(tiny_model), device="cpu")
    yield p
    p.close()


def test_every_payload_answered_through_axon(local_net, predictor, image_factory, serve, send, caplog):
    handlers = MinerHandlers(predictor, local_net.metagraph)
    undecodable, decodable, either = payloads(image_factory)
    validator = local_net.wallets["validator"]
    caplog.set_level(logging.INFO, logger="bitmind.miner.handlers")
    with serve(handlers, local_net.wallets["miner"]) as axon:
        for name, payload in {**undecodable, **decodable, **either}.items():
            resp = send(validator, axon, ImageSynapse(image=payload))
            assert resp.dendrite.status_code == 200, (name, resp.dendrite.status_message)
            p = resp.prediction
            if name in undecodable:
                assert p == -1.0, name
            elif name in decodable:
                assert 0.0 <= p <= 1.0, (name, p)
            else:
                assert p == -1.0 or 0.0 <= p <= 1.0, (name, p)
        # ...and a normal challenge is still served afterwards.
        resp = send(validator, axon, prepare_image_synapse(image_factory(seed=8)))
        assert resp.dendrite.status_code == 200 and 0.0 <= resp.prediction <= 1.0
    counts = handlers.stats.snapshot()
    assert counts["bad_input"] >= len(undecodable) and counts["errors"] == 0
    assert counts["served"] >= len(decodable) + 1
    logged = caplog.text
    assert "invalid base64" in logged and "exceeds limit" in logged  # the cause is logged


def test_oversized_payload_refused_by_limits(tiny_model, image_factory):
    small = Predictor(str(tiny_model), device="cpu", limits=DecodeLimits(max_b64_chars=1000))
    try:
        h = MinerHandlers(small, metagraph=None)
        big = prepare_image_synapse(image_factory(size=128, seed=9))
        assert len(big.image) > 1000
        assert asyncio.run(h.forward(big)).prediction == -1.0
        assert h.stats.snapshot()["bad_input"] == 1
    finally:
        small.close()


class RaisingPredictor:
    def __init__(self, exc=None, value=None):
        self.exc, self.value, self.calls = exc, value, 0

    async def predict_b64_async(self, b64, priority=0.0):
        self.calls += 1
        if self.exc is not None:
            raise self.exc
        return self.value


@pytest.mark.parametrize("predictor_, counter", [
    (RaisingPredictor(exc=Overloaded("queue full")), "overloaded"),
    (RaisingPredictor(exc=RuntimeError("CUDA fell over")), "errors"),
    (RaisingPredictor(value=math.nan), "errors"),
])
def test_failures_answer_minus_one(predictor_, counter):
    h = MinerHandlers(predictor_, metagraph=None)
    out = asyncio.run(h.forward(ImageSynapse(image="aGVsbG8=")))
    assert out.prediction == -1.0 and predictor_.calls == 1
    counts = h.stats.snapshot()
    assert counts[counter] == 1 and counts["served"] == 0 and counts["requests"] == 1


def test_out_of_range_output_is_clamped():
    h = MinerHandlers(RaisingPredictor(value=1.0000001), metagraph=None)
    assert asyncio.run(h.forward(ImageSynapse(image="aGVsbG8="))).prediction == 1.0


def test_a_request_whose_caller_gave_up_is_given_up_and_costs_no_forward(tiny_model, image_factory):
    """The axon never cancels a handler whose caller timed out: such requests still cost a
    forward each and were counted as served (operator review: five requests with a 1 s timeout
    behind a 2 s forward got -1 on the client and "served 5" on the miner). Past the synapse's
    timeout the request is given up: -1, counted as timed out, and one still queued is never
    computed."""
    p = Predictor(str(tiny_model), device="cpu", max_batch=1, workers=1)
    computed, gate, entered = [], threading.Event(), threading.Event()
    real = p.batcher.forward

    def held(batch):
        entered.set()
        gate.wait(10)
        computed.append(len(batch))
        return real(batch)

    p.batcher.forward = held
    h = MinerHandlers(p, metagraph=None)
    try:
        async def scenario():
            first = asyncio.create_task(h.forward(prepare_image_synapse(image_factory(seed=1))))
            while not entered.is_set():
                await asyncio.sleep(0.01)
            late = prepare_image_synapse(image_factory(seed=2))
            late.timeout = 0.3
            t0 = time.monotonic()
            out = await h.forward(late)
            waited = time.monotonic() - t0
            gate.set()
            return (await first).prediction, out.prediction, waited

        first, late, waited = asyncio.run(scenario())
        assert late == -1.0 and 0.0 <= first <= 1.0
        assert waited < 5  # given up at its timeout, not when the worker came free
        counts = h.stats.snapshot()
        assert counts["timed_out"] == 1 and counts["served"] == 1 and counts["requests"] == 2
        assert computed == [1]  # the given-up request was never computed
    finally:
        gate.set()
        p.close()


def test_answer_within_reads_the_synapse_timeout_or_falls_back():
    from bitmind.miner.handlers import DEFAULT_TIMEOUT, answer_within

    s = ImageSynapse(image="aGVsbG8=")
    s.timeout = 3.5
    assert answer_within(s) == 3.5
    for bad in (None, 0.0, -1.0, float("nan"), float("inf")):
        s.timeout = bad
        assert answer_within(s) == DEFAULT_TIMEOUT


def test_overload_through_real_predictor(tiny_model, image_factory):
    """A full queue refuses at once (-1.0) instead of queueing without bound."""
    p = Predictor(str(tiny_model), device="cpu", max_queue=1)
    try:
        p.batcher._ensure_worker = lambda: None  # no worker: the one queue slot stays taken
        p.submit(p.preprocess_b64(prepare_image_synapse(image_factory()).image))
        h = MinerHandlers(p, metagraph=None)
        out = asyncio.run(h.forward(prepare_image_synapse(image_factory(seed=1))))
        assert out.prediction == -1.0 and h.stats.snapshot()["overloaded"] == 1
    finally:
        p.close()
