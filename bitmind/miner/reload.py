"""Hot reload: swap in the model file when it changes, never serving a broken one.

Before serving, the predictor ``stat``s the model file (cheap; rate-limited
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
"""
from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass

import torch
import torch.nn as nn

from bitmind.checkpoint import CheckpointError, LoadedModel, load_model
from bitmind.image_transforms import TARGET_SIZE
from bitmind.miner.cpu import Serving, logits_of, single_threaded

logger = logging.getLogger(__name__)

#: A model file that fails to load within this many seconds of its last write is reported
#: as probably still being copied (a warning), not as broken (an error).
RECENT_WRITE_S = 2.0


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


class HotReload:
    """The model-file half of ``Predictor``: the first load, validation, and the swap on change."""

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
            self._serving, self._sig = Serving(lm), sig  # eager at once...
            self.reloads += 1
        if self.optimize:  # ...prepared as soon as it is ready
            threading.Thread(target=self._upgrade, args=(lm,), name="bitmind-prepare", daemon=True).start()
        return True
