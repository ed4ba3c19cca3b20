"""Prediction for the miner: ``predict`` and the hot-reloading, micro-batching ``Predictor``.

Hot reload: before serving, the predictor ``stat``s the model file (cheap; rate-limited
by ``check_interval``). When its signature (inode, size, mtime) changes, it loads the
new file, validates it (pickle-free load, strict weights, same architecture unless
allowed, a finite test forward) and swaps it in with one reference assignment, so every
answer comes from a whole old or a whole new model. A file that fails to load never
takes the miner down: the last good model keeps serving and the failure is logged once
per file version.

Micro-batching: concurrent requests are queued to one worker thread, which collects
whatever arrives within ``batch_window_ms`` (up to ``max_batch``) and runs one batched
forward. The asyncio event loop only awaits a future; the queue is bounded so overload
gives a fast ``Overloaded`` error instead of unbounded memory.
"""
from __future__ import annotations

import asyncio
import logging
import os
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass

import torch
import torch.nn as nn
from PIL import Image

from bitmind.checkpoint import CheckpointError, LoadedModel, load_model
from bitmind.image_io import DecodeLimits, decode_image
from bitmind.image_transforms import TARGET_SIZE, base_transforms

logger = logging.getLogger(__name__)


class Overloaded(RuntimeError):
    """The request queue is full: refuse fast rather than queue without bound."""


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


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
    device = next(model.parameters()).device
    batch = batch.to(device, non_blocking=True)
    if device.type == "cuda":
        batch = batch.contiguous(memory_format=torch.channels_last)
    if amp_dtype is not None and device.type == "cuda":
        with torch.autocast("cuda", dtype=amp_dtype):
            out = model(batch)
    else:
        out = model(batch)
    return out.float().reshape(out.shape[0], -1)[:, 0].cpu()


def predict(model: nn.Module | LoadedModel, image) -> float:
    """Probability in [0, 1] that ``image`` is AI-generated (> 0.5 means generated).

    Given a ``LoadedModel`` (what ``load_model`` returns), its stored calibration is applied;
    given a bare module, the plain sigmoid of its logit.
    """
    x = image_to_tensor(image).unsqueeze(0)
    if isinstance(model, LoadedModel):
        return float(model.probabilities(logits_of(model.model, x))[0])
    return float(torch.sigmoid(logits_of(model, x))[0])


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


class Predictor:
    """Owns the serving model, its device, hot reload and the micro-batching worker."""

    def __init__(self, model_path: str, device: str | torch.device | None = None, arch: str | None = None,
                 check_interval: float = 0.05, allow_arch_change: bool = False, max_batch: int = 32,
                 batch_window_ms: float = 2.0, max_queue: int = 256, amp: str | None = "auto",
                 limits: DecodeLimits = DecodeLimits()):
        self.model_path = str(model_path)
        self.device = torch.device(device) if device else default_device()
        self.arch, self.allow_arch_change = arch, allow_arch_change
        self.check_interval = check_interval
        self.max_batch, self.batch_window = max_batch, batch_window_ms / 1000.0
        self.limits = limits
        if amp == "auto":
            amp = "bf16" if self.device.type == "cuda" else None
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, None: None, "none": None}[amp]
        self._reload_lock = threading.Lock()
        self._last_check = 0.0
        self._bad: set[FileSignature] = set()
        self.reloads = 0
        self.loaded_at = 0.0
        sig = FileSignature.of(self.model_path)
        self._current: LoadedModel = self._load_validated(self.model_path)  # first load must succeed
        self._sig = sig
        self._queue: queue.Queue = queue.Queue(maxsize=max_queue)
        self._worker: threading.Thread | None = None
        self._stop = threading.Event()

    # ---------------------------------------------------------------- model file
    def _load_validated(self, path: str, expected_arch: str | None = None) -> LoadedModel:
        lm = load_model(path, arch=self.arch, device=self.device, expected_arch=expected_arch)
        if self.device.type == "cuda":
            lm.model = lm.model.to(memory_format=torch.channels_last)
        probe = torch.zeros(2, 3, TARGET_SIZE, TARGET_SIZE)
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
            if sig == self._sig:  # another thread just did it
                return False
            expected = None if self.allow_arch_change else self._current.arch
            try:
                lm = self._load_validated(self.model_path, expected_arch=expected)
            except Exception as e:  # keep serving the last good model
                self._bad.add(sig)
                logger.error("model file %s (size %d) failed to load; still serving sha256=%s: %s",
                             self.model_path, sig.size, self._current.sha256[:12], e)
                return False
            if FileSignature.of(self.model_path) != sig:
                # Changed while we were reading it: next check loads the final version.
                logger.info("model file changed during load; will re-check")
            self._current, self._sig = lm, sig
            self.reloads += 1
            return True

    @property
    def current(self) -> LoadedModel:
        self.check_reload()
        return self._current

    def status(self) -> dict:
        lm = self._current
        return {"model_path": self.model_path, "arch": lm.arch, "sha256": lm.sha256, "device": str(self.device),
                "reloads": self.reloads, "bad_versions": len(self._bad), "queue": self._queue.qsize(),
                "loaded_at": self.loaded_at}

    # ---------------------------------------------------------------- synchronous API
    def predict_tensors(self, batch: torch.Tensor) -> list[float]:
        lm = self.current  # one reference for the whole batch: never a mix of models
        return [float(p) for p in lm.probabilities(logits_of(lm.model, batch, self.amp_dtype))]

    def predict_image(self, image) -> float:
        return self.predict_tensors(image_to_tensor(image).unsqueeze(0))[0]

    def preprocess_b64(self, b64: str) -> torch.Tensor:
        """Base64 payload -> model input tensor; raises ``ImageDecodeError`` on bad input."""
        return base_transforms(decode_image(b64, self.limits))

    def predict_b64(self, b64: str) -> float:
        return self.predict_tensors(self.preprocess_b64(b64).unsqueeze(0))[0]

    # ---------------------------------------------------------------- micro-batching
    def _ensure_worker(self) -> None:
        if self._worker is None or not self._worker.is_alive():
            self._stop.clear()
            self._worker = threading.Thread(target=self._run_worker, name="bitmind-predictor", daemon=True)
            self._worker.start()

    def submit(self, tensor: torch.Tensor) -> Future:
        """Queue one (3,256,256) tensor; the returned future resolves to a probability."""
        self._ensure_worker()
        fut: Future = Future()
        try:
            self._queue.put_nowait((tensor, fut))
        except queue.Full:
            raise Overloaded(f"prediction queue full ({self._queue.maxsize})") from None
        return fut

    def _run_worker(self) -> None:
        while not self._stop.is_set():
            try:
                first = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            items = [first]
            deadline = time.monotonic() + self.batch_window
            while len(items) < self.max_batch:
                remaining = deadline - time.monotonic()
                try:
                    items.append(self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                probs = self.predict_tensors(torch.stack([t for t, _ in items]))
                for (_, fut), p in zip(items, probs):
                    fut.set_result(p)
            except Exception as e:  # never kill the worker; fail just these requests
                logger.exception("batched forward failed")
                for _, fut in items:
                    if not fut.done():
                        fut.set_exception(e)

    async def predict_b64_async(self, b64: str) -> float:
        """Decode in a thread, predict on the batching worker; the event loop only awaits."""
        loop = asyncio.get_running_loop()
        tensor = await loop.run_in_executor(None, self.preprocess_b64, b64)
        return await asyncio.wrap_future(self.submit(tensor))

    def close(self) -> None:
        self._stop.set()
        if self._worker is not None:
            self._worker.join(timeout=2)
