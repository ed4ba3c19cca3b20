"""Prediction for the miner: ``predict`` and the hot-reloading, micro-batching ``Predictor``.

A ``Predictor`` is three parts, a module each: ``bitmind.miner.reload`` (hot swap of the
model file), ``bitmind.miner.cpu`` (CPU preparation, and which threads run torch) and
``bitmind.miner.batching`` (the request queue and the forward workers). Its options are
one ``PredictorConfig``.
"""
from __future__ import annotations

import dataclasses
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import torch
import torch.nn as nn
from PIL import Image

from bitmind.checkpoint import CheckpointError, LoadedModel
from bitmind.common import resolve_amp, resolve_device
from bitmind.image_io import DecodeLimits, decode_image
from bitmind.image_transforms import TARGET_SIZE, base_transforms
from bitmind.miner.batching import MicroBatcher, auto_max_batch, auto_workers
from bitmind.miner.cpu import CpuPreparation, Serving, logits_of, single_threaded
from bitmind.miner.reload import HotReload, read_stable


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
    amp: str | None = "auto"  # autocast dtype on CUDA ("auto": bf16)
    limits: DecodeLimits = DecodeLimits()  # payload and image size limits
    decode_workers: int | None = None  # own decode thread pool of this size (None: the event loop's)
    optimize: bool | str = "auto"  # serve a CPU-prepared copy ("auto": on a CPU)
    workers: int = 0  # forward workers; 0: auto_workers
    threads: int = 0  # intra-op thread budget of the workers; 0: torch's


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


def predict(model: nn.Module | LoadedModel, image) -> float:
    """Probability in [0, 1] that ``image`` is AI-generated (> 0.5 means generated).

    Given a ``LoadedModel`` (what ``load_model`` returns), its stored calibration is applied;
    given a bare module, the plain sigmoid of its logit.
    """
    x = image_to_tensor(image).unsqueeze(0)
    if isinstance(model, LoadedModel):
        return float(model.probabilities(logits_of(model.model, x))[0])
    return float(torch.sigmoid(logits_of(model, x))[0])


class Predictor(HotReload, CpuPreparation, MicroBatcher):
    """Owns the serving model, its device, hot reload and the micro-batching workers.

    ``Predictor(path, config)``, or ``Predictor(path, device="cpu", ...)`` with any
    ``PredictorConfig`` field as a keyword (overriding ``config``)."""

    def __init__(self, model_path: str, config: PredictorConfig = PredictorConfig(), **options):
        cfg = self.config = dataclasses.replace(config, **options)
        self.model_path = str(model_path)
        self.device = torch.device(cfg.device) if cfg.device else resolve_device("auto")
        self.arch, self.allow_arch_change, self.check_interval = cfg.arch, cfg.allow_arch_change, cfg.check_interval
        self.max_batch, self.batch_window = int(cfg.max_batch) or auto_max_batch(self.device), cfg.batch_window_ms / 1000.0
        self.limits = cfg.limits
        self.amp_dtype = resolve_amp(cfg.amp, self.device)
        # Prepare a faster copy for CPU serving ("auto": on CPU only; False: always eager).
        self.optimize = self.device.type == "cpu" if cfg.optimize == "auto" else bool(cfg.optimize)
        # Forward workers and their shared intra-op thread budget (see MicroBatcher._threads_for).
        self.threads = int(cfg.threads) or torch.get_num_threads()
        self.workers = int(cfg.workers) or auto_workers(self.device, self.threads)
        self._busy = 0
        self._busy_lock = threading.Lock()
        self._primary_busy = False
        self._helpers = threading.Condition()  # wakes helper workers when worker 0 is busy and work waits
        self._reload_lock = threading.Lock()
        self._prepare_lock = threading.Lock()
        self._inflight_lock = threading.Lock()
        self._inflight = 0  # requests being decoded that will be submitted soon (the worker waits for them)
        # Own decode pool if asked (bounds decode threads vs torch threads); else the loop's default executor.
        self._decode_pool = (ThreadPoolExecutor(cfg.decode_workers, thread_name_prefix="bitmind-decode")
                             if cfg.decode_workers else None)
        self._last_check = 0.0
        self._bad = set()
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
        self._serving = Serving(lm, self._prepared(lm))  # at start-up, prepare before serving
        self._sig = snap[1]
        self._queue: queue.Queue = queue.Queue(maxsize=cfg.max_queue)
        self._workers: list[threading.Thread] = []
        self._stop = threading.Event()

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
