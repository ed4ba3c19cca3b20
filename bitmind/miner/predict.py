"""Prediction for the miner: ``predict`` and the hot-reloading, micro-batching ``Predictor``.

Hot reload: before serving, the predictor ``stat``s the model file (cheap; rate-limited
by ``check_interval``). When its signature (inode, size, mtime) changes, it reads the
file's bytes once, and only if the file did not change during that read (an operator's
``cp`` over the file in place is caught half-written; such a read is simply retried at
the next check) it loads those very bytes, validates them (pickle-free load, strict
weights, same architecture unless allowed, a finite test forward) and swaps the model in
with one reference assignment, so every answer comes from a whole old or a whole new
model, and the reported sha256 is that of the bytes actually loaded. A file that fails to load never
takes the miner down: the last good model keeps serving and the failure is logged once
per file version.

A replacement must also have the same *structure* as the model it replaces (same
parameter names and shapes, i.e. same architecture and config) unless
``allow_arch_change``: a file of another size is more likely a mistake than an upgrade,
and it would silently change the miner's latency and memory; restart the miner (or
allow it) to serve another architecture.

CPU speed: on a CPU the validated model is also prepared for inference: batch norms
folded into the convolutions that feed them (found by watching a probe forward, so any
architecture) and weights in channels-last layout, which oneDNN runs fastest: about 1.8x faster than
eager for NPR on 2 cores. The prepared forward must match the eager one on a random
probe, else the eager model serves. On a hot reload the new model serves eager at once
and its prepared forward is swapped in by a background thread when ready, so preparing
never delays the swap. On CUDA the eager model runs in channels-last with bf16 autocast.

Micro-batching: concurrent requests are queued to one worker thread, which runs one
batched forward over what is queued (up to ``max_batch``). It waits for more (at most
``batch_window_ms``) only while other requests are still being decoded, so a lone
request never pays the window. The asyncio event loop only awaits a future; the queue
is bounded so overload gives a fast ``Overloaded`` error instead of unbounded memory.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import torch
import torch.nn as nn
from PIL import Image

from bitmind.checkpoint import CheckpointError, LoadedModel, load_model
from bitmind.common import resolve_amp, resolve_device
from bitmind.image_io import DecodeLimits, decode_image
from bitmind.image_transforms import TARGET_SIZE, base_transforms
from bitmind.inference import (  # noqa: F401
    fold_batch_norms,
    forward_logits,
    optimize_for_cpu,
    prepare_for_serving,
)

logger = logging.getLogger(__name__)



#: A model file that fails to load within this many seconds of its last write is reported
#: as probably still being copied (a warning), not as broken (an error).
RECENT_WRITE_S = 2.0


class Overloaded(RuntimeError):
    """The request queue is full: refuse fast rather than queue without bound."""


def auto_max_batch(device: torch.device) -> int:
    """Micro-batch bound by default. On a GPU batching is nearly free. On a CPU it is not:
    one thread's time per image grows with the batch (NPR on 2 cores, measured: 46 ms at
    1, 57 at 4, 68 at 8), so CPU workers take one request at a time and concurrency
    comes from several workers instead (``auto_workers``)."""
    return 32 if device.type == "cuda" else 1


def auto_workers(device: torch.device, threads: int) -> int:
    """Forward workers by default: one on a GPU (it batches); on a CPU one per core of the
    thread budget, up to 4, since batching does not pay there (see docs/Performance.md)."""
    return 1 if device.type != "cpu" else max(1, min(4, threads))


def default_device() -> torch.device:
    return resolve_device("auto")


def image_to_tensor(image) -> torch.Tensor:
    """PIL image or tensor (3,H,W)/(1,3,H,W) -> (3,256,256) float tensor via base_transforms."""
    if isinstance(image, Image.Image):
        return base_transforms(image)
    if isinstance(image, torch.Tensor):
        t = image[0] if image.dim() == 4 else image
        if t.shape[-2:] != (TARGET_SIZE, TARGET_SIZE):
            from torchvision.transforms.functional import to_pil_image

            return base_transforms(to_pil_image(t.clamp(0, 1)))
        return t.float()
    raise TypeError(f"expected a PIL image or tensor, got {type(image).__name__}")


@torch.inference_mode()
def logits_of(model: nn.Module, batch: torch.Tensor, amp_dtype: torch.dtype | None = None) -> torch.Tensor:
    """The eager serving forward (channels-last, autocast on CUDA): (B,) logits on the CPU."""
    return forward_logits(model, batch, amp_dtype=amp_dtype).cpu()


def predict(model: nn.Module | LoadedModel, image) -> float:
    """Probability in [0, 1] that ``image`` is AI-generated (> 0.5 means generated).

    Given a ``LoadedModel`` (what ``load_model`` returns), its stored calibration is applied;
    given a bare module, the plain sigmoid of its logit.
    """
    x = image_to_tensor(image).unsqueeze(0)
    if isinstance(model, LoadedModel):
        return float(model.probabilities(logits_of(model.model, x))[0])
    return float(torch.sigmoid(logits_of(model, x))[0])


@contextlib.contextmanager
def single_threaded(enabled: bool = True):
    """Run this thread's torch ops on one intra-op thread, restoring the setting after.

    Why: on a CPU the forward workers are the only threads that should run torch with
    several intra-op threads. Every thread that does runs its own OpenMP team, and a live
    team in one thread measurably slows another thread's multi-threaded forward (on 2
    cores: a worker's 20 ms forward took 25 ms once the main thread had run a single
    parallel op). So model loading, validation, preparing and decoding stay on one thread.
    The setting is per thread and costs well under a microsecond."""
    prev = torch.get_num_threads()
    if not enabled or prev == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(prev)


@dataclass(frozen=True)
class _Serving:
    """What answers requests: the loaded model and the forward used for it (eager or
    CPU-prepared). Replaced as one reference, so a batch never mixes two models."""

    lm: LoadedModel
    forward: nn.Module | None = None  # the CPU-prepared copy, or None: lm.model runs as it is

    def logits(self, batch: torch.Tensor, amp_dtype: torch.dtype | None) -> torch.Tensor:
        if self.forward is None:
            return logits_of(self.lm.model, batch, amp_dtype)
        with torch.inference_mode():
            return forward_logits(self.forward, batch, channels_last=True)


def structure_of(model: nn.Module) -> dict[str, tuple[int, ...]]:
    """Parameter/buffer names and shapes: two models with equal structures are the same
    architecture and config (whatever their metadata says)."""
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


@dataclass(frozen=True)
class FileSignature:
    ino: int
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: str) -> "FileSignature | None":
        try:
            st = os.stat(path)
        except OSError:
            return None
        return cls(st.st_ino, st.st_size, st.st_mtime_ns)


def read_stable(path: str) -> tuple[bytes, FileSignature] | None:
    """The file's bytes and signature, or None if it is missing or changed while being read
    (a writer in progress: the bytes could mix two versions).

    The file is read twice and both reads must agree, with the same signature before,
    between and after: a writer that rewrites a file of the same size within one
    timestamp tick leaves the signature unchanged, but not the bytes of both reads
    (torch.load has no checksum that would catch a torn read)."""
    before = FileSignature.of(path)
    if before is None:
        return None
    try:
        with open(path, "rb") as f:
            data = f.read()
        middle = FileSignature.of(path)
        with open(path, "rb") as f:
            again = f.read()
    except OSError:
        return None
    after = FileSignature.of(path)
    if not (before == middle == after) or len(data) != before.size or data != again:
        return None
    return data, before


class Predictor:
    """Owns the serving model, its device, hot reload and the micro-batching worker."""

    def __init__(self, model_path: str, device: str | torch.device | None = None, arch: str | None = None,
                 check_interval: float = 0.05, allow_arch_change: bool = False, max_batch: int = 0,
                 batch_window_ms: float = 2.0, max_queue: int = 256, amp: str | None = "auto",
                 limits: DecodeLimits = DecodeLimits(), decode_workers: int | None = None,
                 optimize: bool | str = "auto", workers: int = 0, threads: int = 0):
        self.model_path = str(model_path)
        self.device = torch.device(device) if device else default_device()
        self.arch, self.allow_arch_change = arch, allow_arch_change
        self.check_interval = check_interval
        self.max_batch, self.batch_window = int(max_batch) or auto_max_batch(self.device), batch_window_ms / 1000.0
        self.limits = limits
        self.amp_dtype = resolve_amp(amp, self.device)
        # Prepare a faster copy for CPU serving ("auto": on CPU only; False: always eager).
        self.optimize = self.device.type == "cpu" if optimize == "auto" else bool(optimize)
        # Forward workers and their shared intra-op thread budget (see _threads_for).
        self.threads = int(threads) or torch.get_num_threads()
        self.workers = int(workers) or auto_workers(self.device, self.threads)
        self._busy = 0
        self._busy_lock = threading.Lock()
        self._primary_busy = False
        self._helpers = threading.Condition()  # wakes helper workers when worker 0 is busy and work waits
        self._reload_lock = threading.Lock()
        self._prepare_lock = threading.Lock()
        self._inflight_lock = threading.Lock()
        self._inflight = 0  # requests being decoded that will be submitted soon (the worker waits for them)
        # Own decode pool if asked (bounds decode threads vs torch threads); else the loop's default executor.
        self._decode_pool = (ThreadPoolExecutor(decode_workers, thread_name_prefix="bitmind-decode")
                             if decode_workers else None)
        self._last_check = 0.0
        self._bad: set[FileSignature] = set()
        self.reloads = 0
        self.loaded_at = 0.0
        snap = None
        for _ in range(50):  # the file may be being written right now: wait for a stable read
            snap = read_stable(self.model_path)
            if snap is not None:
                break
            time.sleep(0.1)
        if snap is None:
            raise CheckpointError(f"model file {self.model_path} is missing or kept changing while being read")
        lm = self._load_validated(snap[0])  # first load must succeed
        self._serving = _Serving(lm, self._prepared(lm))  # at start-up, prepare before serving
        self._sig = snap[1]
        self._queue: queue.Queue = queue.Queue(maxsize=max_queue)
        self._workers: list[threading.Thread] = []
        self._stop = threading.Event()

    # ---------------------------------------------------------------- model file
    def _load_validated(self, data: bytes, expected: LoadedModel | None = None) -> LoadedModel:
        """Load the model file's ``data`` and check it can serve; with ``expected``, also that it
        has the same architecture and parameter shapes (checked before the swap, so a refused
        file never serves)."""
        path = self.model_path
        with single_threaded(self.device.type == "cpu"):  # building and loading run torch ops too
            lm = load_model(path, data=data, arch=self.arch, device=self.device,
                                  expected_arch=expected.arch if expected is not None else None)
        if expected is not None and structure_of(lm.model) != structure_of(expected.model):
            raise CheckpointError(f"{path}: architecture {lm.arch!r} with config {lm.meta.get('config')} differs from "
                                  f"the serving model's ({expected.meta.get('config')}); restart the miner "
                                  "(or allow architecture changes) to serve it")
        if self.device.type == "cuda":
            lm.model = lm.model.to(memory_format=torch.channels_last)
        probe = torch.zeros(2, 3, TARGET_SIZE, TARGET_SIZE)
        with single_threaded(self.device.type == "cpu"):
            out = logits_of(lm.model, probe, self.amp_dtype)
        if out.shape != (2,) or not torch.isfinite(out).all():
            raise CheckpointError(f"{path}: test forward gave {tuple(out.shape)} / non-finite output")
        self.loaded_at = time.time()
        logger.info("serving model %s (arch=%s, sha256=%s) on %s", path, lm.arch, lm.sha256[:12], self.device)
        return lm

    def check_reload(self, force: bool = False) -> bool:
        """Swap in the model file if it changed. Returns True if a new model was loaded."""
        now = time.monotonic()
        if not force and now - self._last_check < self.check_interval:
            return False
        self._last_check = now
        sig = FileSignature.of(self.model_path)
        if sig is None or sig == self._sig or sig in self._bad:
            return False
        with self._reload_lock:
            snap = read_stable(self.model_path)
            if snap is None:  # being written (or gone): keep serving, look again at the next check
                logger.debug("model file %s changed while being read; will re-check", self.model_path)
                return False
            data, sig = snap
            if sig == self._sig or sig in self._bad:  # another thread just did it
                return False
            expected = None if self.allow_arch_change else self._serving.lm
            try:
                lm = self._load_validated(data, expected=expected)
            except Exception as e:  # keep serving the last good model
                self._bad.add(sig)
                age = time.time() - sig.mtime_ns / 1e9
                if age < RECENT_WRITE_S:  # most likely a copy in progress, caught between two writes
                    logger.warning("model file %s (size %d, written %.2f s ago) does not load yet; still serving "
                                   "sha256=%s; if it is being copied, the complete file will be loaded: %s",
                                   self.model_path, sig.size, age, self._serving.lm.sha256[:12], e)
                else:
                    logger.error("model file %s (size %d) failed to load; still serving sha256=%s: %s",
                                 self.model_path, sig.size, self._serving.lm.sha256[:12], e)
                return False
            self._serving, self._sig = _Serving(lm), sig  # eager at once...
            self.reloads += 1
        if self.optimize:  # ...prepared as soon as it is ready
            threading.Thread(target=self._upgrade, args=(lm,), name="bitmind-prepare", daemon=True).start()
        return True

    def _prepared(self, lm: LoadedModel):
        """The CPU-prepared forward for ``lm``, or None (eager) if disabled or it failed."""
        if not self.optimize:
            return None
        with single_threaded():
            return prepare_for_serving(lm.model, name=f"model sha256={lm.sha256[:12]}")

    def _upgrade(self, lm: LoadedModel) -> None:
        with self._prepare_lock:  # one at a time; skip models already replaced
            if self._serving.lm is not lm:
                return
            fast = self._prepared(lm)
        if fast is None:
            return
        with self._reload_lock:
            if self._serving.lm is lm:  # not replaced meanwhile
                self._serving = _Serving(lm, fast)

    @property
    def current(self) -> LoadedModel:
        self.check_reload()
        return self._serving.lm

    def status(self) -> dict:
        serving = self._serving
        lm = serving.lm
        return {"model_path": self.model_path, "arch": lm.arch, "sha256": lm.sha256, "device": str(self.device),
                "optimized": serving.forward is not None, "workers": self.workers, "threads": self.threads,
                "reloads": self.reloads, "bad_versions": len(self._bad),
                "queue": self._queue.qsize(), "inflight": self._inflight, "loaded_at": self.loaded_at}

    # ---------------------------------------------------------------- synchronous API
    def predict_tensors(self, batch: torch.Tensor) -> list[float]:
        self.check_reload()
        serving = self._serving  # one reference for the whole batch: never a mix of models
        return [float(p) for p in serving.lm.probabilities(serving.logits(batch, self.amp_dtype))]

    def logits(self, batch: torch.Tensor) -> torch.Tensor:
        """Raw logits of ``batch`` through the serving forward (prepared or eager), without a
        reload check or calibration: what benchmarks time as the model's own cost."""
        return self._serving.logits(batch, self.amp_dtype)

    def predict_image(self, image) -> float:
        return self.predict_tensors(image_to_tensor(image).unsqueeze(0))[0]

    def preprocess_b64(self, b64: str) -> torch.Tensor:
        """Base64 payload -> model input tensor; raises ``ImageDecodeError`` on bad input."""
        with single_threaded(self.device.type == "cpu"):
            return base_transforms(decode_image(b64, self.limits))

    def predict_b64(self, b64: str) -> float:
        return self.predict_tensors(self.preprocess_b64(b64).unsqueeze(0))[0]

    # ---------------------------------------------------------------- micro-batching
    def _ensure_worker(self) -> None:
        if len(self._workers) == self.workers and all(w.is_alive() for w in self._workers):
            return
        with self._busy_lock:
            self._stop.clear()
            self._workers = [w for w in self._workers if w.is_alive()]
            while len(self._workers) < self.workers:
                w = threading.Thread(target=self._run_worker, args=(len(self._workers),),
                                     name=f"bitmind-predictor-{len(self._workers)}", daemon=True)
                w.start()
                self._workers.append(w)

    def submit(self, tensor: torch.Tensor) -> Future:
        """Queue one (3,256,256) tensor; the returned future resolves to a probability."""
        self._ensure_worker()
        fut: Future = Future()
        try:
            self._queue.put_nowait((tensor, fut))
        except queue.Full:
            raise Overloaded(f"prediction queue full ({self._queue.maxsize})") from None
        if self.workers > 1:
            with self._helpers:
                self._helpers.notify()
        return fut

    def _first_item(self, index: int):
        """The next queued item for worker ``index`` (raises ``queue.Empty`` after a while).
        Worker 0 takes whatever comes; the other workers only help with what is queued
        while worker 0 is busy, so a lone request always gets worker 0 and every core."""
        if index == 0:
            return self._queue.get(timeout=0.2)
        with self._helpers:
            self._helpers.wait_for(lambda: self._stop.is_set() or (self._primary_busy and self._queue.qsize() > 0),
                                   timeout=0.2)
        return self._queue.get_nowait()

    def _threads_for(self, index: int, busy: int) -> int:
        """Intra-op threads for worker ``index``'s next forward while ``busy`` workers (itself
        included) run one. Only worker 0 ever runs several (see ``single_threaded``: one live
        OpenMP team at a time): alone, it gets the whole budget (lowest latency); with
        company, one thread like the others, so the cores are shared, not oversubscribed
        (an OpenMP team whose threads wait for a descheduled sibling runs many times slower)."""
        if self.device.type != "cpu":
            return self.threads
        return max(1, self.threads // max(1, busy)) if index == 0 else 1

    def _run_worker(self, index: int = 0) -> None:
        my_threads = 0
        while not self._stop.is_set():
            try:
                first = self._first_item(index)
            except queue.Empty:
                continue
            if index == 0 and self.workers > 1:
                with self._helpers:
                    self._primary_busy = True
                    self._helpers.notify_all()
            items = [first]
            deadline = time.monotonic() + self.batch_window
            while len(items) < self.max_batch:
                try:
                    items.append(self._queue.get_nowait())
                    continue
                except queue.Empty:
                    pass
                remaining = deadline - time.monotonic()
                if self._inflight <= 0 or remaining <= 0:
                    break  # nobody else is on the way: do not make this batch wait
                try:
                    items.append(self._queue.get(timeout=remaining))
                except queue.Empty:
                    break
            with self._busy_lock:
                self._busy += 1
                busy = self._busy
            try:
                n = self._threads_for(index, busy)
                if n != my_threads:  # a per-thread setting: it sizes this worker's OpenMP team
                    torch.set_num_threads(n)
                    my_threads = n
                probs = self.predict_tensors(torch.stack([t for t, _ in items]))
                for (_, fut), p in zip(items, probs):
                    fut.set_result(p)
            except Exception as e:  # never kill the worker; fail just these requests
                logger.exception("batched forward failed")
                for _, fut in items:
                    if not fut.done():
                        fut.set_exception(e)
            finally:
                with self._busy_lock:
                    self._busy -= 1
                if index == 0:
                    self._primary_busy = False

    async def predict_b64_async(self, b64: str) -> float:
        """Decode in a thread, predict on the batching worker; the event loop only awaits."""
        loop = asyncio.get_running_loop()
        self._add_inflight(1)
        try:
            tensor = await loop.run_in_executor(self._decode_pool, self.preprocess_b64, b64)
            fut = self.submit(tensor)
        finally:
            self._add_inflight(-1)
        return await asyncio.wrap_future(fut)

    def _add_inflight(self, n: int) -> None:
        with self._inflight_lock:
            self._inflight += n

    def close(self) -> None:
        self._stop.set()
        with self._helpers:
            self._helpers.notify_all()
        for w in self._workers:
            w.join(timeout=2)
        if self._decode_pool is not None:
            self._decode_pool.shutdown(wait=False)
