"""Hot swap under load: clients keep asking while the model file is replaced ten times
(copied over in place, slowly, so the miner sees it half-written; renamed over
atomically; once replaced by a truncated file). No request fails, every answer comes
from a whole model (old or new, never a half-loaded one, never the truncated one), a
newer model is never followed by an older one, and each new model does get served.

Each model's output is constant and known (fc1 weight zero, bias = a distinct logit),
so every answer names the model that produced it. The timing (how soon a new model
answers) is measured by benchmarks/hot_swap_bench.py, not asserted here.
"""
import asyncio
import hashlib
import math
import os
import threading
import time

import pytest
import torch


from bitmind.checkpoint import save_checkpoint
from bitmind.image_io import encode_image
from bitmind.miner.handlers import MinerHandlers
from bitmind.miner.predict import Predictor
from bitmind.models import build_model
from bitmind.protocol import ImageSynapse

pytestmark = [pytest.mark.slow]

CLIENTS = 4
SWAPS = 10
TRUNCATED_STEP = 5  # this step's file is cut in half: it must be refused
LIVENESS_TIMEOUT = 30.0  # generous: a liveness bound, not a speed requirement


def logit_of(k: int) -> float:
    return -2.25 + 0.5 * k  # distinct for every model; the truncated one gets one too


def prob_of(k: int) -> float:
    return 1.0 / (1.0 + math.exp(-logit_of(k)))


def constant_model_bytes(tmp_path, k: int) -> bytes:
    """A tiny NPR whose answer is sigmoid(logit_of(k)) for every image."""
    torch.manual_seed(k)
    model = build_model("npr", layers=[1, 1], width=8)
    with torch.no_grad():
        model.fc1.weight.zero_()
        model.fc1.bias.fill_(logit_of(k))
    return save_checkpoint(model, tmp_path / f"model_{k}.pth").read_bytes()


def write_in_place(path, data: bytes, chunks: int = 4) -> None:
    """``cp new old``: the same file truncated and rewritten, here slowly, so a reader can
    catch it half-written."""
    step = max(1, len(data) // chunks)
    with open(path, "r+b" if path.exists() else "wb") as f:
        f.truncate(0)
        for i in range(0, len(data), step):
            f.write(data[i:i + step])
            f.flush()
            time.sleep(0.01)


def write_by_rename(path, data: bytes) -> None:
    """``cp new old.tmp && mv old.tmp old``: readers see the old or the new file, whole."""
    tmp = path.with_name(path.name + ".incoming")
    tmp.write_bytes(data)
    os.replace(tmp, path)


class Clients:
    """CLIENTS coroutines on an event loop in a background thread, each sending requests
    back to back through the real handlers; records (start, end, prediction)."""

    def __init__(self, handlers: MinerHandlers, payload: str):
        self.handlers, self.payload = handlers, payload
        self.answers: list[tuple[int, float, float, float]] = []  # (client, start, end, prediction)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _client(self, c: int) -> None:
        while not self.stop.is_set():
            t0 = time.monotonic()
            out = await self.handlers.forward(ImageSynapse(image=self.payload))
            self.answers.append((c, t0, time.monotonic(), out.prediction))

    async def _main(self) -> None:
        await asyncio.gather(*(self._client(c) for c in range(CLIENTS)))

    def wait_for(self, condition, what: str) -> None:
        deadline = time.monotonic() + LIVENESS_TIMEOUT
        while not condition(list(self.answers)):
            assert self.thread.is_alive(), "client loop died"
            assert time.monotonic() < deadline, f"gave up waiting for {what}"
            time.sleep(0.005)


def model_index(p: float) -> int | None:
    for k in range(SWAPS + 1):
        if abs(p - prob_of(k)) < 1e-5:
            return k
    return None


def test_hot_swap_under_load(tmp_path, image_factory):
    blobs = {k: constant_model_bytes(tmp_path, k) for k in range(SWAPS + 1)}
    path = tmp_path / "serving" / "base.pth"
    path.parent.mkdir()
    path.write_bytes(blobs[0])
    predictor = Predictor(str(path), device="cpu", check_interval=0.0, max_batch=4)
    handlers = MinerHandlers(predictor, metagraph=None)
    clients = Clients(handlers, encode_image(image_factory(size=64, seed=1)))
    clients.thread.start()
    served, first_answer_end, writes = 0, {}, []
    try:
        clients.wait_for(lambda a: any(model_index(p) == 0 for *_, p in a), "model 0")
        for k in range(1, SWAPS + 1):
            start = time.monotonic()
            if k == TRUNCATED_STEP:
                bad_before = predictor.status()["bad_versions"]
                write_in_place(path, blobs[k][: len(blobs[k]) // 2], chunks=2)
                done = time.monotonic()
                writes.append((start, done))
                # Traffic goes on; the refused file never serves.
                clients.wait_for(lambda a: sum(t0 > done for _, t0, _, _ in a) >= 20, "answers after truncation")
                assert predictor.status()["bad_versions"] > bad_before
                continue
            (write_in_place if k % 2 else write_by_rename)(path, blobs[k])
            done = time.monotonic()
            writes.append((start, done))
            # a few answers from the new model before the next replacement
            clients.wait_for(lambda a: sum(t0 >= done and model_index(p) == k for _, t0, _, p in a) >= 5, f"model {k}")
            first_answer_end[k] = min(t1 for _, t0, t1, p in clients.answers if model_index(p) == k)
            served = k
    finally:
        clients.stop.set()
        clients.thread.join(timeout=30)
        predictor.close()

    answers = clients.answers
    print(f"\nhot swap under load: {len(answers)} answers from {CLIENTS} clients over {SWAPS} replacements")
    assert served == SWAPS
    for start, done in writes:  # every replacement happened under load: requests were in flight
        assert any(t0 <= done and t1 >= start for _, t0, t1, _ in answers)
    counts = handlers.stats.snapshot()
    assert counts["served"] == counts["requests"] == len(answers), counts  # zero failed requests
    indices = [model_index(p) for *_, p in answers]
    assert None not in indices, sorted({p for (*_, p), i in zip(answers, indices) if i is None})
    assert TRUNCATED_STEP not in indices  # the truncated file never answered
    for c in range(CLIENTS):  # each client only ever moves forward through the models
        seq = [i for (cc, *_), i in zip(answers, indices) if cc == c]
        assert seq == sorted(seq), f"client {c} went back to an older model"
    for k, t_first in first_answer_end.items():  # once model k has answered, no older model answers again
        late_older = [i for (_, t0, _, _), i in zip(answers, indices) if t0 > t_first and i < k]
        assert not late_older, f"model(s) {set(late_older)} answered after model {k} was serving"
    status = predictor.status()
    assert status["sha256"] == hashlib.sha256(blobs[SWAPS]).hexdigest()
    assert status["reloads"] == SWAPS - 1  # ten replacements, one of them refused


def test_half_written_file_is_refused_then_completed_file_served(tmp_path):
    """Deterministic version of the race above: the predictor looks while an in-place copy
    is paused halfway; it keeps the old model, and serves the new one once complete."""
    old, new = constant_model_bytes(tmp_path, 1), constant_model_bytes(tmp_path, 2)
    path = tmp_path / "base.pth"
    path.write_bytes(old)
    predictor = Predictor(str(path), device="cpu", check_interval=0.0, optimize=False)
    x = torch.zeros(1, 3, 256, 256)
    try:
        with open(path, "r+b") as f:
            f.truncate(0)
            f.write(new[: len(new) // 2])
            f.flush()
            assert predictor.predict_tensors(x)[0] == pytest.approx(prob_of(1), abs=1e-6)
            assert predictor.status()["bad_versions"] == 1  # the half file was tried and refused
            f.write(new[len(new) // 2:])
        assert predictor.predict_tensors(x)[0] == pytest.approx(prob_of(2), abs=1e-6)
        assert predictor.status()["sha256"] == hashlib.sha256(new).hexdigest()
    finally:
        predictor.close()


@pytest.mark.parametrize("method", [write_in_place, write_by_rename])
def test_file_changing_during_the_read_is_retried_not_loaded(tmp_path, method, monkeypatch):
    """A writer lands between the predictor's stat and its read: those bytes are not trusted
    (not loaded, and the file is not blamed as bad); the next check loads the final file."""
    import bitmind.miner.reload as reload_module

    first, middle, final = (constant_model_bytes(tmp_path, k) for k in (1, 3, 2))
    path = tmp_path / "base.pth"
    path.write_bytes(first)
    predictor = Predictor(str(path), device="cpu", check_interval=0.0, optimize=False)
    x = torch.zeros(1, 3, 256, 256)
    real_open, opened = open, []

    def open_then_overwrite(p, *args, **kwargs):
        f = real_open(p, *args, **kwargs)
        if str(p) == str(path) and not opened:
            opened.append(p)
            method(path, final)  # the operator's next copy lands while we read
        return f

    try:
        write_by_rename(path, middle)  # a change the predictor will notice and start reading
        monkeypatch.setattr(reload_module, "open", open_then_overwrite, raising=False)
        assert reload_module.read_stable(str(path)) is None  # the torn read is detected...
        opened.clear()
        write_by_rename(path, middle)
        assert predictor.predict_tensors(x)[0] == pytest.approx(prob_of(1), abs=1e-6)  # ...so the old model serves
        assert opened and predictor.status()["bad_versions"] == 0 and predictor.status()["reloads"] == 0
        assert predictor.predict_tensors(x)[0] == pytest.approx(prob_of(2), abs=1e-6)  # next check: the final file
        assert predictor.status()["sha256"] == hashlib.sha256(final).hexdigest()
    finally:
        predictor.close()
