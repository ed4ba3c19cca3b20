"""Hardening of the miner as an open network service.

* Callers: a burst from unregistered (and permit-less) hotkeys is refused by the
  blacklist before the request body is ever decoded, while a validator is served.
* Model files: a file carrying pickled code is refused and the code never runs; a file
  of another architecture or config is refused before any swap; the serving file's
  sha256 is what status() and the miner's status line report.
* Limits: payload size, pixel count and accepted formats come from the miner's command
  line and are enforced before the pixels are decoded.
"""
import asyncio
import base64
import hashlib
import io
import os
import struct
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from PIL import Image, ImageFile

from bitmind.checkpoint import CheckpointError, model_meta, save_checkpoint
from bitmind.image_io import DEFAULT_MAX_PIXELS, DecodeLimits, ImageDecodeError, apply_pil_limit, decode_image
from bitmind.miner.handlers import MinerHandlers
from bitmind.miner.predict import Predictor
from bitmind.models import build_model, register_model
from bitmind.protocol import ImageSynapse, prepare_image_synapse

pytestmark = pytest.mark.usefixtures("session_chain")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def image_bytes(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


# ---------------------------------------------------------------------------- callers
class CountingDecode:
    """Wraps ``decode_image`` as the predictor sees it, counting the payloads decoded."""

    def __init__(self, real):
        self.real, self.calls = real, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.real(*args, **kwargs)


def test_unregistered_burst_refused_before_decoding(local_net, tiny_model, image_factory, serve, monkeypatch):
    import bittensor as bt

    import bitmind.miner.predict as predict_module

    decode = CountingDecode(predict_module.decode_image)
    monkeypatch.setattr(predict_module, "decode_image", decode)
    predictor = Predictor(str(tiny_model), device="cpu")
    handlers = MinerHandlers(predictor, local_net.metagraph)
    synapse = prepare_image_synapse(image_factory(size=128, seed=5))  # a valid image: decodable if it got that far
    expected = predictor.predict_image(decode_image(synapse.image))
    decode.calls = 0
    burst, validator_requests = 24, 3

    async def traffic(axon):
        outsiders = [bt.Dendrite(wallet=local_net.wallets[name]) for name in ("stranger", "member") for _ in range(3)]
        validator = bt.Dendrite(wallet=local_net.wallets["validator"])

        async def validator_calls():
            return [await validator.call(axon, ImageSynapse(image=synapse.image), timeout=20, deserialize=False)
                    for _ in range(validator_requests)]

        async def outsider_calls(d, n):
            return [await d.call(axon, ImageSynapse(image=synapse.image), timeout=20, deserialize=False)
                    for _ in range(n)]

        try:
            results = await asyncio.gather(validator_calls(),
                                           *(outsider_calls(d, burst // len(outsiders)) for d in outsiders))
        finally:
            for d in outsiders + [validator]:
                await d.aclose_session()
        return results[0], [r for rs in results[1:] for r in rs]

    try:
        with serve(handlers, local_net.wallets["miner"]) as axon:
            served, refused = asyncio.run(traffic(axon))
    finally:
        predictor.close()
    assert len(refused) == burst
    assert all(r.dendrite.status_code == 403 and r.prediction == -1.0 for r in refused), \
        {(r.dendrite.status_code, r.dendrite.status_message) for r in refused}
    assert [r.dendrite.status_code for r in served] == [200] * validator_requests
    assert all(r.prediction == pytest.approx(expected, abs=1e-5) for r in served)
    # The proof: only the validator's payloads were ever decoded, and forward ran only for them.
    assert decode.calls == validator_requests
    counts = handlers.stats.snapshot()
    assert counts["requests"] == validator_requests and counts["blacklisted"] == burst


# ---------------------------------------------------------------------------- model files
def _plant_marker(path: str) -> dict:
    """What a malicious checkpoint would run on an unsafe load (here: leave a file behind)."""
    Path(path).write_text("code from a model file ran")
    return {}


class CodeCarrier:
    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (_plant_marker, (self.marker,))


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy-pickle"])
def test_pickled_code_model_is_refused_and_never_run(tmp_path, tiny_model, zip_format):
    marker = tmp_path / "marker"
    evil = tmp_path / "evil.pth"
    torch.save({"model": CodeCarrier(marker), "meta": {"arch": "npr"}}, evil,
               _use_new_zipfile_serialization=zip_format)
    torch.load(evil, weights_only=False)  # control: an unsafe load really does run the code
    assert marker.exists()
    marker.unlink()

    with pytest.raises(CheckpointError):  # as the first model: the miner refuses to start
        Predictor(str(evil), device="cpu")
    assert not marker.exists()

    path = tmp_path / "base.pth"
    path.write_bytes(tiny_model.read_bytes())
    predictor = Predictor(str(path), device="cpu", check_interval=0.0, optimize=False)
    x = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    try:
        before, sha = predictor.predict_tensors(x)[0], predictor.status()["sha256"]
        os.replace(evil, path)  # as a hot reload: refused, the old model keeps serving
        assert predictor.predict_tensors(x)[0] == before
        status = predictor.status()
        assert status["sha256"] == sha and status["bad_versions"] == 1 and status["reloads"] == 0
    finally:
        predictor.close()
    assert not marker.exists()


class OtherArch(nn.Module):
    """A different (but valid, servable) architecture, to prove the refusal is about the change."""

    def __init__(self, width: int = 4):
        super().__init__()
        self.config = {"width": width}
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(3, 1)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(x), 1))


register_model("hardening-test-other")(OtherArch)


def different_model(tmp_path, kind: str) -> bytes:
    """Checkpoint bytes of a model that differs from the tiny NPR (layers [1, 1], width 8)."""
    if kind == "other-arch":
        other = OtherArch()
        return save_checkpoint(other, tmp_path / "other.pth", meta=model_meta(other, "hardening-test-other")).read_bytes()
    kwargs = {"wider": dict(layers=[1, 1], width=16), "deeper": dict(layers=[1, 2], width=8)}[kind]
    return save_checkpoint(build_model("npr", **kwargs), tmp_path / f"{kind}.pth").read_bytes()


def replace_with(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".incoming")
    tmp.write_bytes(data)
    os.replace(tmp, path)


@pytest.mark.parametrize("kind", ["wider", "deeper", "other-arch"])
def test_model_of_another_architecture_or_config_is_refused_before_swapping(tmp_path, tiny_model, kind):
    replacement = different_model(tmp_path, kind)
    path = tmp_path / "base.pth"
    path.write_bytes(tiny_model.read_bytes())
    x = torch.rand(2, 3, 256, 256, generator=torch.Generator().manual_seed(1))
    strict = Predictor(str(path), device="cpu", check_interval=0.0, optimize=False)
    try:
        before, sha = strict.predict_tensors(x), strict.status()["sha256"]
        replace_with(path, replacement)
        assert strict.predict_tensors(x) == before  # never served, not even once
        status = strict.status()
        assert status["sha256"] == sha and status["reloads"] == 0 and status["bad_versions"] == 1
    finally:
        strict.close()
    # Control: the same file is a perfectly servable model when architecture changes are allowed.
    replace_with(path, tiny_model.read_bytes())
    lenient = Predictor(str(path), device="cpu", check_interval=0.0, optimize=False, allow_arch_change=True)
    try:
        replace_with(path, replacement)
        lenient.predict_tensors(x)
        status = lenient.status()
        assert status["reloads"] == 1 and status["sha256"] == hashlib.sha256(replacement).hexdigest()
    finally:
        lenient.close()


def test_a_fresh_whole_file_refused_for_its_contents_is_an_error_not_a_copy_in_progress(tmp_path, tiny_model, caplog):
    """A file that fails to load within 2 s of its last write was always reported as "if it is
    being copied, the complete file will be loaded" (a warning), also when it was whole and
    refused for another architecture: the operator waited for a reload that never came. Only
    a file that is not whole (a copy caught between two writes) gets that warning now."""
    from bitmind.miner.reload import looks_complete

    wider = different_model(tmp_path, "wider")
    assert looks_complete(tiny_model.read_bytes()) and looks_complete(wider)
    assert not looks_complete(wider[: len(wider) // 2]) and not looks_complete(b"") and not looks_complete(wider[:5])
    st = save_checkpoint(build_model("npr", layers=[1, 1], width=8), tmp_path / "m.safetensors").read_bytes()
    assert looks_complete(st) and not looks_complete(st[:-10]) and not looks_complete(st[:20])
    # a cut that leaves an end-of-directory signature inside the last 64 KiB is still a cut
    cut = wider[: len(wider) - 1000]
    assert not looks_complete(cut + b"PK\x05\x06" + bytes(18) + b"x" * 500)
    # an unknown format, or a header that does not parse, is whole (waiting will not make it load);
    # hostile headers never raise (this runs while a refusal is logged)
    assert looks_complete(b"\x00" * 64) and looks_complete(b"not a model file at all")
    for header in (b"[" * 100_000, b'{"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, Infinity]}}',
                   b'{"w": {"data_offsets": "x"}}'):
        assert looks_complete(len(header).to_bytes(8, "little") + header) is True
    eocd = wider[-22:]
    assert looks_complete(wider[:-22] + eocd[:4] + b"\x02\x00" + eocd[6:]) in (True, False)  # a bad record never raises
    path = tmp_path / "base.pth"
    path.write_bytes(tiny_model.read_bytes())
    p = Predictor(str(path), device="cpu", check_interval=0.0, optimize=False)
    try:
        with caplog.at_level("WARNING", logger="bitmind.miner.reload"):
            replace_with(path, wider)  # whole, just written, another config
            assert p.check_reload(force=True) is False
            refused = [r for r in caplog.records if r.name == "bitmind.miner.reload"]
            assert [r.levelname for r in refused] == ["ERROR"] and "failed to load" in refused[0].getMessage()
            assert "being copied" not in refused[0].getMessage()
            caplog.clear()
            replace_with(path, tiny_model.read_bytes()[:3000])  # a copy caught half-way
            assert p.check_reload(force=True) is False
            partial = [r for r in caplog.records if r.name == "bitmind.miner.reload"]
            assert [r.levelname for r in partial] == ["WARNING"] and "being copied" in partial[0].getMessage()
    finally:
        p.close()


def test_status_reports_sha256_of_the_serving_file(tmp_path, checkpoint_factory):
    path = checkpoint_factory(tmp_path / "base.pth", seed=3)
    predictor = Predictor(str(path), device="cpu", check_interval=0.0)
    try:
        assert predictor.status()["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        newer = checkpoint_factory(tmp_path / "newer.pth", seed=4)
        data = newer.read_bytes()
        os.replace(newer, path)
        predictor.check_reload(force=True)
        assert predictor.status()["sha256"] == hashlib.sha256(data).hexdigest()
    finally:
        predictor.close()


# ---------------------------------------------------------------------------- limits from the command line
def test_limits_flags_parse_and_reject_nonsense():
    from bitmind.image_io import DEFAULT_MAX_B64_CHARS
    from bitmind.miner.config import miner_config

    c = miner_config([])
    assert c.neuron.max_payload_chars == DEFAULT_MAX_B64_CHARS and c.neuron.max_image_pixels == DEFAULT_MAX_PIXELS
    assert c.neuron.allow_arch_change is False
    c = miner_config(["--neuron.max_payload_chars", "5000", "--neuron.max_image_pixels", "70000",
                      "--neuron.allow_arch_change"])
    assert (c.neuron.max_payload_chars, c.neuron.max_image_pixels, c.neuron.allow_arch_change) == (5000, 70000, True)
    for bad in (["--neuron.max_payload_chars", "0"], ["--neuron.max_image_pixels", "-5"],
                ["--neuron.max_image_pixels", "lots"]):
        with pytest.raises(SystemExit):
            miner_config(bad)


def test_miner_enforces_limits_from_its_command_line(local_net, tiny_model, image_factory, send, monkeypatch, caplog):
    """The real miner (MinerNeuron from the operator's flags): images over the pixel limit and
    payloads over the size limit are answered -1 without decoding; others are served; the
    status line names the serving file's sha256."""
    from bitmind import local_chain
    from bitmind.miner.config import miner_config
    from bitmind.miner.neuron import MinerNeuron

    port = local_chain.free_port()
    config = miner_config(["--mock", "--local.root", str(local_net.root), "--netuid", str(local_net.netuid),
                           "--wallet.name", "miner", "--axon.port", str(port), "--neuron.device", "cpu",
                           "--neuron.model_path", str(tiny_model), "--neuron.max_image_pixels", "50000",
                           "--neuron.max_payload_chars", "60000"])
    neuron = MinerNeuron(config, tiny_model)
    try:
        assert neuron.predictor.limits == DecodeLimits(max_b64_chars=60000, max_pixels=50000)
        assert Image.MAX_IMAGE_PIXELS == 50000  # Pillow's own guard follows the flag
        neuron.start()
        assert local_chain.wait_for_port(port)
        validator, axon = local_net.wallets["validator"], neuron.axon.info()
        small = prepare_image_synapse(image_factory(size=200, seed=1))  # 40000 px: served
        assert len(small.image) <= 60000
        resp = send(validator, axon, small)
        assert resp.dendrite.status_code == 200 and 0.0 <= resp.prediction <= 1.0
        too_many_pixels = ImageSynapse(image=b64(image_bytes(Image.new("RGB", (300, 300), (9, 9, 9)), "JPEG")))
        assert len(too_many_pixels.image) <= 60000  # refused for its pixels, not its size
        too_long = ImageSynapse(image=b64(os.urandom(46000)))  # 61336 chars
        for synapse in (too_many_pixels, too_long):
            resp = send(validator, axon, synapse)
            assert resp.dendrite.status_code == 200 and resp.prediction == -1.0
        counts = neuron.handlers.stats.snapshot()
        assert counts["served"] == 1 and counts["bad_input"] == 2 and counts["errors"] == 0
        sha = hashlib.sha256(Path(tiny_model).read_bytes()).hexdigest()
        assert neuron.predictor.status()["sha256"] == sha and sha[:12] in neuron.status_line()
        # an unexpected error in the model-file check is logged and the serve loop goes on
        # (before: it left MinerNeuron.run and the miner exited)
        import threading

        from bitmind.miner import neuron as neuron_mod

        def broken_check(*a, **kw):
            raise OSError("disk went away")

        monkeypatch.setattr(neuron_mod, "RELOAD_CHECK_INTERVAL", 0.0)
        monkeypatch.setattr(neuron.predictor, "check_reload", broken_check)
        stop, status = threading.Event(), []
        with caplog.at_level("ERROR", logger="bitmind.miner.neuron"):
            loop = threading.Thread(target=lambda: status.append(neuron.run(stop)))
            loop.start()
            loop.join(3.5)
            stop.set()
            loop.join(5)
        assert status == [0], "the serve loop left before it was stopped"
        assert sum("disk went away" in r.getMessage() for r in caplog.records) >= 2  # logged at each check, still running
    finally:
        neuron.stop()
        apply_pil_limit(DecodeLimits())
    assert Image.MAX_IMAGE_PIXELS == DEFAULT_MAX_PIXELS


def test_pixel_limit_is_checked_before_any_pixel_is_decoded(monkeypatch):
    loads = []
    real_load = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: loads.append(self.size) or real_load(self))
    payload = b64(image_bytes(Image.new("RGB", (400, 300), (1, 2, 3)), "PNG"))
    with pytest.raises(ImageDecodeError, match="exceeds limit"):
        decode_image(payload, DecodeLimits(max_pixels=400 * 300 - 1))
    assert loads == []  # refused from the header
    assert decode_image(payload, DecodeLimits(max_pixels=400 * 300)).size == (400, 300)
    assert loads and set(loads) == {(400, 300)}  # control: the counter does see a real decode


def test_only_common_formats_are_parsed():
    img = Image.new("RGB", (32, 24), (200, 100, 50))
    for fmt in ("PPM", "TGA", "ICO", "PCX"):  # formats Pillow reads but validators never send
        payload = b64(image_bytes(img, fmt))
        with pytest.raises(ImageDecodeError, match="not a recognised image"):
            decode_image(payload)
        assert decode_image(payload, DecodeLimits(formats=None)).size[0] > 0  # control: Pillow can read it
    for fmt in ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"):
        assert decode_image(b64(image_bytes(img, fmt))).size == (32, 24), fmt


def test_huge_payload_refused_before_base64_decoding(monkeypatch):
    import bitmind.image_io as image_io

    decoded = []
    real = image_io.base64.b64decode
    monkeypatch.setattr(image_io.base64, "b64decode", lambda *a, **k: decoded.append(1) or real(*a, **k))
    with pytest.raises(ImageDecodeError, match="exceeds limit"):
        decode_image("A" * 2001, DecodeLimits(max_b64_chars=2000))
    assert decoded == []
    with pytest.raises(ImageDecodeError):  # control: a payload within the limit is base64-decoded
        decode_image("A" * 2000, DecodeLimits(max_b64_chars=2000))
    assert decoded == [1]


@pytest.mark.parametrize("exc", [EOFError("eof"), IndexError("idx"), KeyError("key"), struct.error("struct")],
                         ids=lambda e: type(e).__name__)
def test_any_decoder_failure_is_bad_input_not_a_crash(monkeypatch, exc, tiny_model, image_factory, caplog):
    """Pillow's plugins can raise more than OSError on malformed data (EXIF parsing, seek,
    tag reading): whatever they raise is classified as bad input, logged in one line."""
    from PIL import ImageOps

    def broken(*args, **kwargs):
        raise exc

    monkeypatch.setattr(ImageOps, "exif_transpose", broken)
    payload = prepare_image_synapse(image_factory(size=64, seed=2)).image
    with pytest.raises(ImageDecodeError, match=type(exc).__name__):
        decode_image(payload)
    predictor = Predictor(str(tiny_model), device="cpu", optimize=False)
    try:
        handlers = MinerHandlers(predictor, metagraph=None)
        assert asyncio.run(handlers.forward(ImageSynapse(image=payload))).prediction == -1.0
        counts = handlers.stats.snapshot()
        assert counts["bad_input"] == 1 and counts["errors"] == 0
    finally:
        predictor.close()


# ---------------------------------------------------------------------------- the CPU-prepared model
class SharedConvOutput(nn.Module):
    """A conv whose output feeds a batch norm *and* a skip connection: folding that norm
    into the conv would change the skip path too, so the prepared copy must be refused."""

    def __init__(self):
        super().__init__()
        self.config = {}
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 1)
        with torch.no_grad():
            self.bn.running_mean.fill_(0.3)
            self.bn.running_var.fill_(2.0)

    def forward(self, x):
        y = self.conv(x)
        z = self.bn(y) + y
        return self.fc(z.mean(dim=(2, 3)))


register_model("hardening-test-shared-conv")(SharedConvOutput)


def test_prepared_cpu_model_answers_like_the_eager_one(tmp_path, checkpoint_factory):
    from bitmind.checkpoint import load_model

    path = checkpoint_factory(tmp_path / "m.pth", seed=5)
    prepared = Predictor(str(path), device="cpu")
    eager = Predictor(str(path), device="cpu", optimize=False)
    x = torch.rand(3, 3, 256, 256, generator=torch.Generator().manual_seed(2))
    try:
        assert prepared.status()["optimized"] and not eager.status()["optimized"]
        assert not any(isinstance(m, nn.BatchNorm2d) for m in prepared.slot.serving.forward.modules())  # all folded
        assert prepared.predict_tensors(x) == pytest.approx(eager.predict_tensors(x), abs=1e-5)
        with torch.inference_mode():
            reference = torch.sigmoid(load_model(path).model(x)[:, 0]).tolist()
        assert prepared.predict_tensors(x) == pytest.approx(reference, abs=1e-5)
    finally:
        prepared.close()
        eager.close()


def test_model_that_cannot_be_prepared_is_served_eager(tmp_path, caplog):
    import logging

    from bitmind.inference import optimize_for_cpu

    model = SharedConvOutput().eval()
    with pytest.raises(RuntimeError, match="differs from eager"):  # the wrong fold is caught...
        optimize_for_cpu(model)
    path = save_checkpoint(model, tmp_path / "shared.pth", meta=model_meta(model, "hardening-test-shared-conv"))
    caplog.set_level(logging.WARNING, logger="bitmind.inference")
    predictor = Predictor(str(path), device="cpu")  # ...and the model still serves, eager
    x = torch.rand(2, 3, 256, 256, generator=torch.Generator().manual_seed(3))
    try:
        assert predictor.status()["optimized"] is False and "serving it eager" in caplog.text
        with torch.inference_mode():
            reference = torch.sigmoid(model(x)[:, 0]).tolist()
        assert predictor.predict_tensors(x) == pytest.approx(reference, abs=1e-6)
    finally:
        predictor.close()


@pytest.mark.parametrize("size", [256, 200])
def test_integer_tensors_mean_the_same_picture_as_float_ones(size):
    """``predict`` takes a picture as PIL, a float tensor in [0, 1] or an integer tensor
    0-255 (what ``torchvision.io.decode_image`` gives): the same picture, the same answer.
    An integer tensor used to go through unscaled (256 px) or clamped to 0/1 (other sizes)."""
    from bitmind.miner.predict import image_to_tensor, predict

    g = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (3, size, size), dtype=torch.uint8, generator=g)
    as_float = pixels.float() / 255.0
    a, b = image_to_tensor(pixels), image_to_tensor(as_float)
    assert a.dtype == torch.float32 and a.shape == (3, 256, 256) and 0.0 <= float(a.min()) and float(a.max()) <= 1.0
    assert torch.allclose(a, b, atol=1e-6)
    model = build_model("npr", layers=[1, 1], width=8).eval()
    assert predict(model, pixels) == pytest.approx(predict(model, as_float), abs=1e-6)
    assert predict(model, pixels[None]) == pytest.approx(predict(model, pixels), abs=1e-6)


def test_an_unrecognised_image_is_named_by_its_first_bytes_not_a_memory_address():
    """Pillow's 'cannot identify image file <_io.BytesIO object at 0x...>' names nothing a
    miner's log or an eval's skip list can use; the error shows the bytes the file starts with."""
    with pytest.raises(ImageDecodeError) as e:
        decode_image(b64(b"hello, this is text, not an image"))
    assert "BytesIO" not in str(e.value) and "0x" not in str(e.value) and "b'hello, t'" in str(e.value)
