"""Prediction for the miner: ``predict`` and the hot-reloading, micro-batching ``Predictor``.

A ``Predictor`` wires two parts, each owning its own state: a ``ModelSlot``
(``bitmind.miner.reload``: the model file, validation, hot swap and the CPU-prepared copy)
and a ``MicroBatcher`` (``bitmind.miner.batching``: the request queue and the forward
workers, which call the predictor's ``predict_tensors``); ``bitmind.miner.cpu`` holds what
both use (the forward, which threads run torch). Its options are one ``PredictorConfig``.
"""
from __future__ import annotations

import asyncio
import dataclasses
import os
from concurrent.futures import Future, ThreadPoolExecutor

import torch
import torch.nn as nn
from PIL import Image

from bitmind.checkpoint import LoadedModel
from bitmind.common import resolve_amp, resolve_device
from bitmind.image_io import DecodeLimits, decode_image
from bitmind.image_transforms import TARGET_SIZE, base_transforms
from bitmind.inference import CompiledCpu, cpu_bf16_setting
from bitmind.miner.batching import MicroBatcher, auto_max_batch, auto_workers
from bitmind.miner.cpu import logits_of, single_threaded
from bitmind.miner.reload import ModelSlot


@dataclasses.dataclass(frozen=True)
class PredictorConfig:
    """How a ``Predictor`` serves; every field's default is the miner's."""

    device: str | torch.device | None = None  # None: cuda if available, else cpu
    arch: str | None = None  # expected architecture (None: whatever the file says)
    check_interval: float = 0.05  # seconds between looks at the model file
    allow_arch_change: bool = False  # may a hot reload change the architecture or config?
    max_batch: int = 0  # largest micro-batch; 0: auto_max_batch
    batch_window_ms: float = 2.0  # how long a batch waits for requests still being decoded
    max_queue: int = 256  # queued images beyond which requests are refused (Overloaded)
    amp: str | None = "auto"  # "auto": bf16 autocast on CUDA, and on a CPU that runs bf16 natively and faster; "none": fp32
    limits: DecodeLimits = DecodeLimits()  # payload and image size limits
    decode_workers: int | None = None  # decode threads (None or 0: auto_decode_workers())
    optimize: bool | str = "auto"  # serve a CPU-prepared copy ("auto": on a CPU)
    compile: bool = False  # on a CPU with max_batch 1, compile that copy (TorchInductor) before serving
    workers: int = 0  # forward workers; 0: auto_workers
    threads: int = 0  # intra-op thread budget of the workers; 0: torch's
    max_model_bytes: int | None = None  # largest model file read (None: checkpoint.MAX_MODEL_BYTES)


def image_to_tensor(image) -> torch.Tensor:
    """PIL image or tensor (3,H,W)/(1,3,H,W) -> (3,256,256) float tensor via base_transforms.
    A float tensor holds values in [0, 1]; an integer one (``torchvision.io.decode_image``)
    0-255, scaled here, so both mean the same picture."""
    if isinstance(image, Image.Image):
        return base_transforms(image)
    if isinstance(image, torch.Tensor):
        t = image[0] if image.dim() == 4 else image
        if not t.is_floating_point():
            t = t.float().div(255.0)
        if t.shape[-2:] != (TARGET_SIZE, TARGET_SIZE):
            from torchvision.transforms.functional import to_pil_image

            return base_transforms(to_pil_image(t.clamp(0, 1)))
        return t.float()
    raise TypeError(f"expected a PIL image or tensor, got {type(image).__name__}")


#: Most decode threads by default (``auto_decode_workers``).
MAX_DECODE_WORKERS = 4


def auto_decode_workers() -> int:
    """Decode threads by default: one per core this process may use, at most
    ``MAX_DECODE_WORKERS``. Why a pool of its own: the event loop's default executor has
    cores + 4 threads (6 on 2 cores), and each decode of a large picture holds its pixels (up
    to ~300 MB for a 40 Mpx 16-bit or transparent one), so twelve such requests at once took a
    2-core miner from 0.8 to 2.9 GB (operator review); decoding is CPU work, and more threads
    than cores only hold more pictures at once, not finish sooner."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(MAX_DECODE_WORKERS, cores))


def predict(model: nn.Module | LoadedModel, image) -> float:
    """Probability in [0, 1] that ``image`` is AI-generated (> 0.5 means generated).

    Given a ``LoadedModel`` (what ``load_model`` returns), its stored calibration is applied;
    given a bare module, the plain sigmoid of its logit.
    """
    x = image_to_tensor(image).unsqueeze(0)
    if isinstance(model, LoadedModel):
        return float(model.probabilities(logits_of(model.model, x))[0])
    return float(torch.sigmoid(logits_of(model, x))[0])


class Predictor:
    """Owns the serving model (``slot``), its device, and the micro-batching workers (``batcher``).

    ``Predictor(path, config)``, or ``Predictor(path, device="cpu", ...)`` with any
    ``PredictorConfig`` field as a keyword (overriding ``config``)."""

    def __init__(self, model_path: str, config: PredictorConfig = PredictorConfig(), **options):
        cfg = self.config = dataclasses.replace(config, **options)
        self.device = torch.device(cfg.device) if cfg.device else resolve_device("auto")
        self.limits = cfg.limits
        self.amp_dtype = resolve_amp(cfg.amp, self.device)
        # Prepare a faster copy for CPU serving ("auto": on CPU only; False: always eager).
        optimize = self.device.type == "cpu" if cfg.optimize == "auto" else bool(cfg.optimize)
        # Forward workers and their shared intra-op thread budget (see MicroBatcher._threads_for).
        threads = int(cfg.threads) or torch.get_num_threads()
        workers = int(cfg.workers) or auto_workers(self.device, threads)
        max_batch = int(cfg.max_batch) or auto_max_batch(self.device)
        compile_threads = (MicroBatcher.thread_counts(self.device, threads, workers)
                           if cfg.compile and self.device.type == "cpu" and max_batch == 1 else ())
        self.slot = ModelSlot(model_path, self.device, cfg.arch, cfg.allow_arch_change, cfg.check_interval,
                              self.amp_dtype, optimize, cpu_bf16=self.device.type == "cpu" and cpu_bf16_setting(cfg.amp),
                              compile_threads=compile_threads, max_bytes=cfg.max_model_bytes)
        self.batcher = MicroBatcher(self.predict_tensors, self.device, max_batch, cfg.batch_window_ms / 1000.0,
                                    cfg.max_queue, workers, threads)
        self._decode_pool = ThreadPoolExecutor(int(cfg.decode_workers or 0) or auto_decode_workers(),
                                               thread_name_prefix="bitmind-decode")

    def check_reload(self, force: bool = False) -> bool:
        """Swap in the model file if it changed (``ModelSlot.check``)."""
        return self.slot.check(force)

    @property
    def current(self) -> LoadedModel:
        self.slot.check()
        return self.slot.serving.lm

    def status(self) -> dict:
        serving, slot = self.slot.serving, self.slot
        lm = serving.lm
        return {"model_path": slot.path, "arch": lm.arch, "sha256": lm.sha256, "device": str(self.device),
                "optimized": serving.forward is not None,
                "cpu_bf16": bool(getattr(serving.forward, "bf16", False)),
                "compiled": isinstance(serving.forward, CompiledCpu),
                "workers": self.batcher.workers, "threads": self.batcher.threads,
                "reloads": slot.reloads, "bad_versions": slot.bad_versions,
                "queue": self.batcher.queued, "inflight": self.batcher.inflight, "loaded_at": slot.loaded_at}

    # ---------------------------------------------------------------- synchronous API
    def predict_tensors(self, batch: torch.Tensor) -> list[float]:
        self.slot.check()
        serving = self.slot.serving  # one reference for the whole batch: never a mix of models
        return [float(p) for p in serving.lm.probabilities(serving.logits(batch, self.amp_dtype))]

    def logits(self, batch: torch.Tensor) -> torch.Tensor:
        """Raw logits of ``batch`` through the serving forward (prepared or eager), without a
        reload check or calibration: what benchmarks time as the model's own cost."""
        return self.slot.serving.logits(batch, self.amp_dtype)

    def predict_image(self, image) -> float:
        return self.predict_tensors(image_to_tensor(image).unsqueeze(0))[0]

    def preprocess_b64(self, b64: str) -> torch.Tensor:
        """Base64 payload -> model input tensor; raises ``ImageDecodeError`` on bad input."""
        with single_threaded(self.device.type == "cpu"):
            return base_transforms(decode_image(b64, self.limits))

    def predict_b64(self, b64: str) -> float:
        return self.predict_tensors(self.preprocess_b64(b64).unsqueeze(0))[0]

    # ---------------------------------------------------------------- serving API
    def submit(self, tensor: torch.Tensor, priority: float = 0.0) -> Future:
        """Queue one (3,256,256) tensor for the workers, served before those of lower
        ``priority``; the future resolves to a probability (raises ``Overloaded`` at once when
        the queue is full of requests of at least this priority)."""
        return self.batcher.submit(tensor, priority)

    async def predict_b64_async(self, b64: str, priority: float = 0.0) -> float:
        """Decode in a thread, predict on the batching workers (highest ``priority`` first:
        the miner gives the caller's stake); the event loop only awaits."""
        loop = asyncio.get_running_loop()
        with self.batcher.incoming(priority):
            tensor = await loop.run_in_executor(self._decode_pool, self.preprocess_b64, b64)
            fut = self.submit(tensor, priority)
        return await asyncio.wrap_future(fut)

    def close(self) -> None:
        self.batcher.close()
        self.slot.close()
        self._decode_pool.shutdown(wait=False)
