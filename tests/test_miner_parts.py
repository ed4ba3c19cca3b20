"""The predictor's two parts on their own: ``MicroBatcher`` with a stand-in forward (no
model at all), and ``ModelSlot`` with model files and no batching."""
from __future__ import annotations

import os
import shutil
import threading
import time

import pytest
import torch

from bitmind.checkpoint import CheckpointError
from bitmind.miner.batching import MicroBatcher, Overloaded
from bitmind.miner.reload import ModelSlot

from conftest import make_checkpoint, needs_cxx


def test_batcher_batches_what_is_queued_and_answers_each_request():
    sizes, entered, gate = [], threading.Event(), threading.Event()

    def forward(batch: torch.Tensor) -> list[float]:
        entered.set()
        gate.wait(5)  # hold the first batch so the others queue up behind it
        sizes.append(len(batch))
        return [float(x[0, 0, 0]) for x in batch]

    b = MicroBatcher(forward, torch.device("cpu"), max_batch=8, workers=1, threads=1)
    try:
        futs = [b.submit(torch.full((3, 4, 4), 0.0))]
        assert entered.wait(5)
        futs += [b.submit(torch.full((3, 4, 4), float(i))) for i in range(1, 5)]
        gate.set()
        assert [f.result(5) for f in futs] == [0.0, 1.0, 2.0, 3.0, 4.0]
        assert sizes[0] == 1 and sum(sizes) == 5 and max(sizes) == 4  # the 4 that waited went as one batch
    finally:
        b.close()


def test_batcher_refuses_when_full_and_fails_only_the_batch_that_raised():
    b = MicroBatcher(lambda batch: [0.5] * len(batch), torch.device("cpu"), max_queue=1)
    b._ensure_worker = lambda: None  # no worker: the one slot stays taken
    b.submit(torch.zeros(3, 4, 4))
    with pytest.raises(Overloaded):
        b.submit(torch.zeros(3, 4, 4))

    calls = []

    def flaky(batch):
        calls.append(len(batch))
        if len(calls) == 1:
            raise RuntimeError("boom")
        return [0.25] * len(batch)

    b2 = MicroBatcher(flaky, torch.device("cpu"))
    try:
        with pytest.raises(RuntimeError, match="boom"):
            b2.submit(torch.zeros(3, 4, 4)).result(5)
        assert b2.submit(torch.zeros(3, 4, 4)).result(5) == 0.25  # the worker survived
    finally:
        b2.close()


def test_batcher_counts_requests_on_their_way():
    b = MicroBatcher(lambda batch: [0.0] * len(batch), torch.device("cpu"))
    with b.incoming():
        with b.incoming():
            assert b.inflight == 2
    assert b.inflight == 0


def test_slot_swaps_in_a_new_file_and_keeps_serving_through_a_broken_one(tmp_path):
    path = tmp_path / "model.pth"
    shutil.copy(make_checkpoint(tmp_path / "a.pth", seed=0), path)
    slot = ModelSlot(str(path), torch.device("cpu"), check_interval=0.0)
    first = slot.serving.lm.sha256
    x = torch.rand(1, 3, 256, 256)
    before = slot.serving.logits(x, None)

    make_checkpoint(tmp_path / "b.pth", seed=3)
    os.replace(tmp_path / "b.pth", path)
    assert slot.check() and slot.reloads == 1 and slot.serving.lm.sha256 != first
    assert not torch.allclose(slot.serving.logits(x, None), before)

    good = slot.serving.lm.sha256
    (tmp_path / "bad.pth").write_bytes(b"not a checkpoint")
    os.replace(tmp_path / "bad.pth", path)
    assert not slot.check() and slot.bad_versions == 1 and slot.serving.lm.sha256 == good
    assert not slot.check(force=True) and slot.bad_versions == 1  # a failed version is not retried


def test_slot_prepares_a_cpu_copy_and_refuses_a_missing_file(tmp_path):
    slot = ModelSlot(str(make_checkpoint(tmp_path / "m.pth")), torch.device("cpu"), optimize=True)
    assert slot.serving.forward is not None  # the prepared copy serves from the start
    x = torch.rand(2, 3, 256, 256)
    eager = ModelSlot(str(tmp_path / "m.pth"), torch.device("cpu"), optimize=False)
    assert eager.serving.forward is None
    assert torch.allclose(slot.serving.logits(x, None), eager.serving.logits(x, None), atol=1e-4)
    with pytest.raises(CheckpointError, match="not found"):
        ModelSlot(str(tmp_path / "none.pth"), torch.device("cpu"))
    with pytest.raises(CheckpointError, match="is a folder, not a model file"):
        ModelSlot(str(tmp_path), torch.device("cpu"))


def test_cpu_bf16_serving_is_chosen_checked_against_fp32_and_falls_back(tmp_path, monkeypatch):
    """On a CPU that runs bf16 natively the prepared forward runs under bf16 autocast (about
    2.5-3x faster for the shipped NPR); it must agree with fp32 within 2 % + 0.05 logits or
    the fp32 copy serves. "auto" follows the CPU (BITMIND_CPU_BF16 overrides what torch says)."""
    from bitmind.checkpoint import load_model
    from bitmind.inference import CpuBf16, cpu_bf16_wanted, cpu_runs_bf16, prepare_for_serving
    from bitmind.miner.predict import Predictor

    path = make_checkpoint(tmp_path / "m.pth")
    cpu = torch.device("cpu")
    fp32 = ModelSlot(str(path), cpu, optimize=True)
    bf16 = ModelSlot(str(path), cpu, optimize=True, cpu_bf16=True)
    assert isinstance(bf16.serving.forward, CpuBf16) and not isinstance(fp32.serving.forward, CpuBf16)
    x = torch.rand(4, 3, 256, 256, generator=torch.Generator().manual_seed(1))
    a, b = fp32.serving.logits(x, None), bf16.serving.logits(x, None)
    assert b.dtype == torch.float32 and not torch.equal(a, b) and torch.allclose(a, b, rtol=0.02, atol=0.05)
    p = Predictor(str(path), device="cpu", amp="bf16")
    try:
        assert p.status()["cpu_bf16"] is True
    finally:
        p.close()
    monkeypatch.setenv("BITMIND_CPU_BF16", "1")
    assert cpu_runs_bf16() and cpu_bf16_wanted("auto")
    monkeypatch.setenv("BITMIND_CPU_BF16", "0")
    assert not cpu_bf16_wanted("auto") and cpu_bf16_wanted("bf16") and not cpu_bf16_wanted("none")
    assert not cpu_bf16_wanted(None) and not cpu_bf16_wanted("fp16")
    with pytest.raises(ValueError, match="amp mode"):
        cpu_bf16_wanted("fp8")
    # a bf16 forward that disagrees with fp32 is not served: the fp32 prepared copy is
    monkeypatch.setattr(CpuBf16, "forward", lambda self, x: self.inner(x) + 1.0)
    fast = prepare_for_serving(load_model(path).model, bf16=True)
    assert fast is not None and not isinstance(fast, CpuBf16)


def test_auto_serves_cpu_bf16_only_where_it_is_measured_faster(tmp_path, monkeypatch):
    """Native bf16 is not always faster: on a Xeon with AVX512-BF16 and no AMX the shipped
    model's forward took 123 ms in bf16 against 74 ms in fp32 (benchmarks/results/cpu_bf16_v11.json).
    So ``auto`` times both on one picture and keeps bf16 only where it wins; ``bf16`` (or
    BITMIND_CPU_BF16=1) still forces it."""
    import bitmind.inference as inference
    from bitmind.checkpoint import load_model
    from bitmind.inference import CpuBf16, bf16_is_faster, cpu_bf16_setting, optimize_for_cpu
    from bitmind.miner.predict import Predictor

    monkeypatch.delenv("BITMIND_CPU_BF16", raising=False)
    monkeypatch.setattr(inference, "cpu_runs_bf16", lambda: True)
    assert cpu_bf16_setting("auto") == "if_faster" and cpu_bf16_setting("bf16") is True
    assert cpu_bf16_setting("none") is False and cpu_bf16_setting(None) is False
    monkeypatch.setenv("BITMIND_CPU_BF16", "1")
    assert cpu_bf16_setting("auto") is True
    monkeypatch.delenv("BITMIND_CPU_BF16")
    monkeypatch.setattr(inference, "cpu_runs_bf16", lambda: False)
    assert cpu_bf16_setting("auto") is False

    path = make_checkpoint(tmp_path / "m.pth")
    model = load_model(path).model
    probe = torch.rand(1, 3, 256, 256).contiguous(memory_format=torch.channels_last)
    assert bf16_is_faster(optimize_for_cpu(model), probe, rounds=2) in (True, False)  # it runs both
    for faster in (False, True):
        monkeypatch.setattr(inference, "bf16_is_faster", lambda fast, probe, faster=faster: faster)
        assert isinstance(optimize_for_cpu(model, bf16="if_faster"), CpuBf16) is faster
        assert isinstance(optimize_for_cpu(model, bf16=True), CpuBf16)  # forced: not measured
    # the miner's "auto" on a CPU that runs bf16 natively but slower: fp32 serves, and says so
    monkeypatch.setattr(inference, "cpu_runs_bf16", lambda: True)
    monkeypatch.setattr(inference, "bf16_is_faster", lambda fast, probe: False)
    p = Predictor(str(path), device="cpu", amp="auto")
    try:
        assert p.status()["cpu_bf16"] is False
    finally:
        p.close()


def test_building_the_serving_model_runs_no_parallel_op_on_the_calling_thread(tmp_path, monkeypatch):
    """The miner builds its ``Predictor`` on the main thread. A multi-threaded torch op there
    (even filling a probe tensor) leaves an OpenMP team alive in that thread, which slowed
    every forward worker by about 35 % (docs/Performance.md, "A correction"). So every tensor
    the slot creates while loading, checking and preparing is made under ``single_threaded``."""
    from bitmind.miner.predict import Predictor

    path = str(make_checkpoint(tmp_path / "m.pth"))
    made_with: list[int] = []
    real_zeros, real_rand = torch.zeros, torch.rand

    def spy(real):
        def make(*a, **k):
            made_with.append(torch.get_num_threads())
            return real(*a, **k)
        return make

    monkeypatch.setattr(torch, "zeros", spy(real_zeros))
    monkeypatch.setattr(torch, "rand", spy(real_rand))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    p = Predictor(path, device="cpu")
    try:
        assert torch.get_num_threads() == 2  # the caller's setting is restored
        assert made_with and set(made_with) == {1}, made_with  # the probes were made, each on one thread
    finally:
        p.close()
        torch.set_num_threads(before)


def test_compile_thread_counts_cover_every_worker_forward():
    """A compiled model serves only at the thread counts it was compiled for (inductor
    specialises per count); ``thread_counts`` must list every count ``_threads_for`` gives."""
    cpu = torch.device("cpu")
    for threads in (1, 2, 5, 16):
        for workers in (1, 2, 4):
            b = MicroBatcher(lambda x: [0.0] * len(x), cpu, workers=workers, threads=threads)
            counts = MicroBatcher.thread_counts(cpu, threads, workers)
            given = {b._threads_for(i, busy) for busy in range(1, workers + 1) for i in range(workers)}
            assert given <= set(counts), (threads, workers, given, counts)
    assert MicroBatcher.thread_counts(cpu, 2, 2) == (1, 2)


@needs_cxx
def test_slot_compiles_before_serving_and_serves_the_same_answers(tmp_path):
    """``compile_threads``: the prepared copy is compiled (TorchInductor) before it serves and
    gives the same logits; serving never traces (an input it was not compiled for runs
    eagerly, with no new graph); a hot reload serves the new model prepared, uncompiled."""
    import torch._dynamo
    from torch.profiler import ProfilerActivity, profile

    from bitmind.inference import CompiledCpu

    path = str(make_checkpoint(tmp_path / "m.pth"))
    cpu = torch.device("cpu")
    slot = ModelSlot(path, cpu, optimize=True, compile_threads=(1,))
    compiled = slot.serving.forward
    assert isinstance(compiled, CompiledCpu) and not compiled.bf16 and compiled.thread_counts == (1,)
    eager = ModelSlot(path, cpu, optimize=False)

    def served(x):  # the serving forward's logits, and whether the compiled code ran them
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            out = slot.serving.logits(x, None)
        return out, any(e.name.startswith("Torch-Compiled Region") for e in prof.events())

    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        x = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(3))
        out, ran_compiled = served(x)  # as the workers serve: a (1, 3, 256, 256) batch, inference mode
        assert ran_compiled and torch.allclose(out, eager.serving.logits(x, None), atol=1e-4)
        graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
        batch = torch.rand(3, 3, 256, 256)  # not the compiled shape: eager, not a recompile
        out, ran_compiled = served(batch)
        assert not ran_compiled and torch.allclose(out, eager.serving.logits(batch, None), atol=1e-4)
        assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == graphs
        torch.set_num_threads(2)  # a thread count it was not compiled for: eager too
        assert not served(x)[1]
    finally:
        torch.set_num_threads(prev)
    shutil.copy(path, tmp_path / "new.pth")
    os.replace(tmp_path / "new.pth", path)
    assert slot.check(force=True) and not isinstance(slot.serving.forward, CompiledCpu)


def test_a_failed_compile_serves_the_prepared_copy(tmp_path, monkeypatch):
    """A compile that fails (no C++ compiler, say) keeps the prepared copy serving."""
    import bitmind.inference as inference
    from bitmind.inference import CompiledCpu

    path = str(make_checkpoint(tmp_path / "m.pth"))
    cpu = torch.device("cpu")
    monkeypatch.setattr(inference.torch, "compile", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("no compiler")))
    failed = ModelSlot(path, cpu, optimize=True, compile_threads=(1,))
    assert failed.serving.forward is not None and not isinstance(failed.serving.forward, CompiledCpu)


def test_a_request_cancelled_in_the_queue_leaves_its_batch_mates_their_answers():
    """``asyncio.wrap_future`` cancels the queued future when the awaiting request is cancelled
    (timeout, disconnect, shutdown); setting its result then raised, and that error was set on
    every other request of the batch (answered -1.0 although their forward had run)."""
    gate, calls = threading.Event(), []

    def forward(batch: torch.Tensor) -> list[float]:
        calls.append(batch.shape[0])
        if len(calls) == 1:
            gate.wait(5)  # hold the worker so that the next two requests queue up together
        return [0.25] * batch.shape[0]

    mb = MicroBatcher(forward, torch.device("cpu"), max_batch=4, batch_window=0.01, workers=1, threads=1)
    try:
        x = torch.zeros(3, 8, 8)
        first = mb.submit(x)
        deadline = time.monotonic() + 5
        while not calls and time.monotonic() < deadline:
            time.sleep(0.005)
        cancelled, kept = mb.submit(x), mb.submit(x)
        assert cancelled.cancel()
        gate.set()
        assert first.result(5) == 0.25
        assert kept.result(5) == 0.25
        assert calls == [1, 1]  # the cancelled one was not computed either
        assert not kept.cancel()  # running or done: a late cancel cannot break it
    finally:
        gate.set()
        mb.close()


def test_requests_beyond_the_queue_bound_are_refused_before_they_are_decoded():
    """``incoming`` wraps each request's decoding; with as many requests decoding and queued
    as the queue holds, the next is refused on entry (Overloaded, answered at once) instead
    of waiting, payload in memory, in the decode pool's unbounded queue."""
    mb = MicroBatcher(lambda b: [0.5] * b.shape[0], torch.device("cpu"), max_batch=1, max_queue=2, workers=1, threads=1)
    try:
        with mb.incoming(), mb.incoming():
            assert mb.inflight == 2
            with pytest.raises(Overloaded, match="reach the limit"):
                with mb.incoming():
                    pass
            assert mb.inflight == 2  # the refused one was never counted
        with mb.incoming():  # room again once those are through
            assert mb.submit(torch.zeros(3, 8, 8)).result(5) == 0.5
    finally:
        mb.close()


def test_heavier_callers_are_served_first_and_a_full_queue_refuses_the_lightest():
    """bittensor's axon runs the priority function but orders nothing by it: a heavy
    validator's request waited behind, or was refused after, any caller's (operator review:
    ten requests of stake 1, then one of stake 1e6, max_queue 4: the heavy one got -1)."""
    order, entered, gate = [], threading.Event(), threading.Event()

    def forward(batch: torch.Tensor) -> list[float]:
        entered.set()
        gate.wait(5)  # hold the worker while the others queue up
        order.extend(float(x[0, 0, 0]) for x in batch)
        return [0.5] * len(batch)

    mb = MicroBatcher(forward, torch.device("cpu"), max_batch=1, max_queue=3, workers=1, threads=1)
    try:
        first = mb.submit(torch.full((3, 4, 4), -1.0), priority=1.0)
        assert entered.wait(5)
        light = [mb.submit(torch.full((3, 4, 4), float(i)), priority=1.0) for i in range(3)]  # the queue is full
        with pytest.raises(Overloaded):
            mb.submit(torch.full((3, 4, 4), 9.0), priority=1.0)  # no lighter one to make room
        with pytest.raises(Overloaded):
            with mb.incoming(priority=1.0):
                pass
        with mb.incoming(priority=1e6):  # room made before decoding: the newest light one refused
            with pytest.raises(Overloaded, match="higher priority"):
                light[2].result(5)
            heavy = mb.submit(torch.full((3, 4, 4), 7.0), priority=1e6)
        gate.set()
        assert heavy.result(5) == 0.5 and [f.result(5) for f in (first, *light[:2])] == [0.5] * 3
        assert order == [-1.0, 7.0, 0.0, 1.0]  # the heavy one first, then the light ones in arrival order
    finally:
        gate.set()
        mb.close()


def test_requests_whose_callers_gave_up_give_their_room_back_first():
    """A request given up at its timeout cancels its future but kept its slot until a worker
    skipped it: live requests were refused, or the only live queued one evicted, while dead
    ones held the room (review)."""
    gate, entered = threading.Event(), threading.Event()

    def forward(batch):
        entered.set()
        gate.wait(5)
        return [0.5] * len(batch)

    mb = MicroBatcher(forward, torch.device("cpu"), max_batch=1, max_queue=3, workers=1, threads=1)
    try:
        first = mb.submit(torch.zeros(3, 2, 2), priority=10)
        assert entered.wait(5)
        gone = [mb.submit(torch.zeros(3, 2, 2), priority=10) for _ in range(2)]
        live = mb.submit(torch.zeros(3, 2, 2), priority=1)
        assert all(f.cancel() for f in gone)
        more = [mb.submit(torch.zeros(3, 2, 2), priority=5) for _ in range(2)]  # the dead ones' room
        gate.set()
        assert [f.result(5) for f in (first, live, *more)] == [0.5] * 4  # nobody live refused
    finally:
        gate.set()
        mb.close()


def test_slot_says_once_that_its_file_is_gone_and_loads_one_put_back(tmp_path, caplog):
    """A deleted model file leaves the last good model serving, with one warning (not one per
    check, and not silence); a file put back at the path is loaded."""
    import logging

    path = tmp_path / "model.pth"
    shutil.copy(make_checkpoint(tmp_path / "a.pth", seed=0), path)
    slot = ModelSlot(str(path), torch.device("cpu"), check_interval=0.0)
    first = slot.serving.lm.sha256
    os.remove(path)
    with caplog.at_level(logging.INFO, logger="bitmind.miner.reload"):
        assert not slot.check() and not slot.check(force=True)
    gone = [r for r in caplog.records if "cannot be found (deleted or moved)" in r.getMessage()]
    assert len(gone) == 1 and gone[0].levelno == logging.WARNING and first[:12] in gone[0].getMessage()
    assert slot.serving.lm.sha256 == first
    caplog.clear()
    make_checkpoint(tmp_path / "b.pth", seed=3)
    os.replace(tmp_path / "b.pth", path)
    with caplog.at_level(logging.INFO, logger="bitmind.miner.reload"):
        assert slot.check() and slot.serving.lm.sha256 != first
    assert any("there again" in r.getMessage() for r in caplog.records)


def test_slot_names_a_folder_put_at_its_path_and_refuses_a_huge_file_unread(tmp_path, caplog, monkeypatch):
    """A folder in place of the model file was reported as gone and then, wrongly, as "there
    again", then nothing; a huge wrong file (a video copied to the model path) was read whole,
    twice, into the miner's memory before being refused. Both now keep the model serving with
    one line that says what is at the path."""
    import logging

    from bitmind.miner import reload as reload_mod

    path = tmp_path / "model.pth"
    shutil.copy(make_checkpoint(tmp_path / "a.pth", seed=0), path)
    slot = ModelSlot(str(path), torch.device("cpu"), check_interval=0.0)
    first = slot.serving.lm.sha256
    os.remove(path)
    path.mkdir()
    with caplog.at_level(logging.INFO, logger="bitmind.miner.reload"):
        assert not slot.check() and not slot.check(force=True)
    said = [r.getMessage() for r in caplog.records]
    assert sum("is a folder, not a model file" in m for m in said) == 1, said
    assert not any("there again" in m for m in said) and slot.serving.lm.sha256 == first
    path.rmdir()
    caplog.clear()
    slot.max_bytes = 1000  # what --neuron.max_model_mb sets (in MiB)
    path.write_bytes(b"\0" * 5000)
    read = []
    monkeypatch.setattr(reload_mod, "read_stable", lambda p, limit=None: read.append(p))
    with caplog.at_level(logging.INFO, logger="bitmind.miner.reload"):
        assert not slot.check() and not slot.check(force=True)
    said = [(r.levelno, r.getMessage()) for r in caplog.records]
    refused = [m for lv, m in said if lv == logging.ERROR and "is 5000 bytes, more than the 1000 bytes" in m]
    assert len(refused) == 1 and not read, said
    assert slot.serving.lm.sha256 == first


def test_slot_never_opens_a_pipe_at_its_path(tmp_path, caplog):
    """A FIFO at the model path (or a link to one) blocks open() until a writer comes: every
    request would have hung in check(); it is named and never opened."""
    import logging

    path = tmp_path / "model.pth"
    shutil.copy(make_checkpoint(tmp_path / "a.pth", seed=0), path)
    slot = ModelSlot(str(path), torch.device("cpu"), check_interval=0.0)
    os.remove(path)
    os.mkfifo(path)
    done = []
    with caplog.at_level(logging.INFO, logger="bitmind.miner.reload"):
        t = threading.Thread(target=lambda: done.append(slot.check(force=True)), daemon=True)
        t.start()
        t.join(10)
    assert done == [False], "check() blocked on the pipe"
    assert any("is not a regular file" in r.getMessage() for r in caplog.records)
    with pytest.raises(CheckpointError, match="is not a regular file"):
        ModelSlot(str(path), torch.device("cpu"))
