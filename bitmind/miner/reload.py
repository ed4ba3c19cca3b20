"""Hot reload: swap in the model file when it changes, never serving a broken one.

``ModelSlot`` owns the model file and what serves from it. Before serving, the predictor
asks it to ``check()``: it ``stat``s the model file (cheap; rate-limited
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

import hashlib
import logging
import os
import stat
import threading
import time
from dataclasses import dataclass

import torch
import torch.nn as nn

from bitmind import checkpoint
from bitmind.checkpoint import (CheckpointError, LoadedModel, check_calibration, file_sha256, load_model, looks_complete,
                                too_large)
from bitmind.image_transforms import TARGET_SIZE
from bitmind.inference import compile_for_cpu, prepare_for_serving
from bitmind.miner.cpu import Serving, logits_of, single_threaded

logger = logging.getLogger(__name__)

#: A model file that fails to load within this many seconds of its last write is reported
#: as probably still being copied (a warning), not as broken (an error).
RECENT_WRITE_S = 2.0
#: What a model file must satisfy before it serves: no weight beyond this magnitude (the shipped
#: files stay below 6; one flipped exponent bit gives 1e37), and test logits on a seeded noise
#: picture within this bound (the shipped files give 10-48; a corrupt file inf, NaN or 1e28).
MAX_WEIGHT = 1e6
MAX_PROBE_LOGIT = 1e4


def probe_pictures() -> torch.Tensor:
    """Two seeded noise pictures for the test forward: an all-zero picture has a zero NPR
    residual, so the first layer's weights multiplied nothing and a corrupt value there
    passed (then every answer was -1 or 1)."""
    return torch.rand(2, 3, TARGET_SIZE, TARGET_SIZE, generator=torch.Generator().manual_seed(0))


def check_servable(lm: LoadedModel, out: torch.Tensor, path) -> None:
    """A ``CheckpointError`` unless the loaded weights are finite numbers of a sane magnitude
    and the test forward ``out`` (logits of ``probe_pictures``) is two finite, bounded logits."""
    for name, t in lm.model.state_dict().items():
        if t.is_floating_point() and t.numel() and not (torch.isfinite(t).all() and t.abs().max() <= MAX_WEIGHT):
            raise CheckpointError(f"{path}: weight {name} holds values that are not finite or beyond {MAX_WEIGHT:g} "
                                  f"(largest {t.abs().max().item():.3g}): a corrupt file, not served")
    if out.shape != (2,) or not torch.isfinite(out).all() or out.abs().max() > MAX_PROBE_LOGIT:
        raise CheckpointError(f"{path}: test forward gave {tuple(out.shape)} / {out.tolist() if out.numel() <= 4 else ''} "
                              f"(finite logits within {MAX_PROBE_LOGIT:g} expected): not served")


def structure_of(model: nn.Module) -> dict[str, tuple[int, ...]]:
    """Parameter/buffer names and shapes: two models with equal structures are the same
    architecture and config (whatever their metadata says)."""
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def swap_problem(new: LoadedModel, serving: LoadedModel) -> str | None:
    """Why ``new`` cannot hot-swap over ``serving`` (another architecture or config: other
    parameter names or shapes), or None. Shared by the reload and ``bitmind.model_info --serving``,
    so an operator can ask before copying a file over the served one."""
    if structure_of(new.model) == structure_of(serving.model):
        return None
    return (f"architecture {new.arch!r} with config {new.meta.get('config')} differs from the serving model's "
            f"({serving.arch!r}, {serving.meta.get('config')}); restart the miner, or start it with "
            "--neuron.allow_arch_change, to serve it (or train with --init_from the served file, which keeps "
            "its network)")


@dataclass(frozen=True)
class FileSignature:
    ino: int
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: str) -> "FileSignature | None":
        """The signature of the regular file at ``path``; None for anything else (missing, a folder)."""
        try:
            st = os.stat(path)
        except OSError:
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        return cls(st.st_ino, st.st_size, st.st_mtime_ns)


def unreadable_reason(path: str) -> str:
    """Why the model file at ``path`` cannot be read, in words for the miner's log ("" if it can):
    gone, a link to nothing, a folder or another non-regular file in its place (never opened: a
    FIFO's ``open`` blocks until a writer comes), or an error opening it (no permission)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return ("is a link to nothing (its target was deleted or moved)" if os.path.islink(path)
                else "cannot be found (deleted or moved)")
    except OSError as e:
        return f"cannot be read ({e.strerror or type(e).__name__})"
    if stat.S_ISDIR(st.st_mode):
        return "is a folder, not a model file"
    if not stat.S_ISREG(st.st_mode):
        return "is not a regular file (a pipe, socket or device), not a model file"
    try:
        with open(path, "rb"):
            pass
    except OSError as e:
        return f"cannot be read ({e.strerror or type(e).__name__})"
    return ""


def read_stable(path: str, limit: int | None = None) -> tuple[bytes, FileSignature] | None:
    """The file's bytes and signature, or None if it is missing, larger than ``limit`` bytes
    (``checkpoint.MAX_MODEL_BYTES`` unless given; ``too_large`` says why) or changed while being read (a
    writer in progress: the bytes could mix two versions).

    The file is read twice and both reads must agree, with the same signature before,
    between and after: a writer that rewrites a file of the same size within one
    timestamp tick leaves the signature unchanged, but not the bytes of both reads
    (torch.load has no checksum that would catch a torn read). The second read is
    compared by its hash, streamed, so the file is in memory once."""
    limit = checkpoint.MAX_MODEL_BYTES if limit is None else limit
    before = FileSignature.of(path)
    if before is None or before.size > limit:
        return None
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)  # never more than the limit, even if the file grew since the stat
        middle = FileSignature.of(path)
        again = file_sha256(path)
    except OSError:
        return None
    after = FileSignature.of(path)
    if not (before == middle == after) or len(data) != before.size or hashlib.sha256(data).hexdigest() != again:
        return None
    return data, before


class ModelSlot:
    """The model file and what serves from it: the first load, validation, the swap on
    change and, when ``optimize``, the CPU-prepared copy swapped in once ready (in bf16
    autocast when ``cpu_bf16``; ``"if_faster"``: where measured faster). With ``compile_threads``, the first model's prepared copy is
    compiled for those intra-op thread counts (``compile_for_cpu``) before it serves; a
    hot-reloaded model serves prepared, uncompiled, until the next start.

    ``serving`` (a ``Serving``: loaded model + forward) is replaced as one reference, so a
    reader that takes it once per batch never mixes two models. ``check()`` is cheap when
    nothing changed (one ``stat`` at most every ``check_interval`` seconds) and safe from any
    thread."""

    def __init__(self, path: str, device: torch.device, arch: str | None = None, allow_arch_change: bool = False,
                 check_interval: float = 0.05, amp_dtype: torch.dtype | None = None, optimize: bool = False,
                 cpu_bf16: bool | str = False, compile_threads: tuple[int, ...] = (), max_bytes: int | None = None):
        self.path, self.device, self.arch = str(path), device, arch
        self.max_bytes = checkpoint.MAX_MODEL_BYTES if max_bytes is None else int(max_bytes)
        self.allow_arch_change, self.check_interval = allow_arch_change, check_interval
        self.amp_dtype, self.optimize, self.cpu_bf16 = amp_dtype, optimize, cpu_bf16
        self.compile_threads = tuple(compile_threads) if optimize else ()
        self.reloads, self.loaded_at = 0, 0.0
        self._bad: set[FileSignature] = set()  # versions that failed: not retried until the file changes
        self._last_check = 0.0
        self._gone = False  # the model file was missing at the last check (said once, until it is back)
        self._gone_lock = threading.Lock()  # check() runs on several threads: one line per change
        self._reload_lock = threading.Lock()
        self._prepare_lock = threading.Lock()
        self._preparing: threading.Thread | None = None  # the latest reload's CPU preparation
        if os.path.isdir(self.path):  # as bitmind.eval and model_info say it (not after 5 s of "unstable" reads)
            raise CheckpointError(f"model path {self.path} is a folder, not a model file")
        snap = None
        for _ in range(50):  # the file may be being written right now: wait for a stable read
            if not os.path.exists(self.path):
                raise CheckpointError(f"model file {self.path} not found")
            if (why := unreadable_reason(self.path)):  # at once, not after 5 s of failed reads
                raise CheckpointError(f"model file {self.path} {why}")
            if (sig := FileSignature.of(self.path)) is not None and (why := too_large(self.path, sig.size, self.max_bytes)):
                raise CheckpointError(why)
            snap = read_stable(self.path, self.max_bytes)
            if snap is not None:
                break
            time.sleep(0.1)
        if snap is None:
            raise CheckpointError(f"model file {self.path} kept changing while being read for 5 s (still being "
                                  "written?); start again once the copy is complete")
        lm = self._load_validated(snap[0])  # first load must succeed
        self.serving = Serving(lm, self._prepared(lm))  # at start-up, prepare before serving
        self._sig = snap[1]
        if self.compile_threads and self.serving.forward is not None:
            self._compile_before_serving(lm)

    @property
    def bad_versions(self) -> int:
        return len(self._bad)

    def _load_validated(self, data: bytes, expected: LoadedModel | None = None) -> LoadedModel:
        """Load the model file's ``data`` and check it can serve; with ``expected``, also that it
        has the same architecture and parameter shapes (checked before the swap, so a refused
        file never serves)."""
        path = self.path
        # Every torch op of loading and checking on one thread: building, loading and even
        # filling the probe are parallel ops (see ``single_threaded``).
        with single_threaded(self.device.type == "cpu"):
            lm = load_model(path, data=data, arch=self.arch, device=self.device, detector_only=True,
                            expected_arch=expected.arch if expected is not None else None)
            check_calibration(lm.meta, path)
            if expected is not None and (problem := swap_problem(lm, expected)):
                raise CheckpointError(f"{path}: {problem}")
            if expected is not None and (lm.meta.get("config") or {}) != (expected.meta.get("config") or {}):
                # same shapes, other serve-time options (center_crop, pool, flip_mean): it swaps in
                # place, but what a request costs and sees may change, so say it
                logger.info("%s: same parameter shapes, serve-time config changes from %s to %s", path,
                            expected.meta.get("config"), lm.meta.get("config"))
            if self.device.type == "cuda":
                lm.model = lm.model.to(memory_format=torch.channels_last)
            out = logits_of(lm.model, probe_pictures(), self.amp_dtype)
            check_servable(lm, out.float(), path)
        self.loaded_at = time.time()
        logger.info("serving model %s (arch=%s, sha256=%s) on %s", path, lm.arch, lm.sha256[:12], self.device)
        return lm

    def check(self, force: bool = False) -> bool:
        """Swap in the model file if it changed. Returns True if a new model was loaded."""
        now = time.monotonic()
        if not force and now - self._last_check < self.check_interval:
            return False
        self._last_check = now
        sig = FileSignature.of(self.path)
        if sig is None:
            self._note_missing(unreadable_reason(self.path) or "cannot be found or read")
            return False
        if sig == self._sig or sig in self._bad:  # a version already read (loaded or refused)
            self._note_back()
            return False
        with self._reload_lock:
            if sig in self._bad:  # another thread refused this version meanwhile
                return False
            if (why := too_large(self.path, sig.size, self.max_bytes)):
                self._note_back()
                self._bad.add(sig)
                logger.error("%s (still serving sha256=%s)", why, self.serving.lm.sha256[:12])
                return False
            snap = read_stable(self.path, self.max_bytes)
            if snap is None:  # being written, gone or unreadable: keep serving, look again at the next check
                if (why := unreadable_reason(self.path)):
                    self._note_missing(why)  # once, until a readable file is back
                else:
                    logger.debug("model file %s changed while being read; will re-check", self.path)
                return False
            self._note_back()
            data, sig = snap
            if sig == self._sig or sig in self._bad:  # another thread just did it
                return False
            expected = None if self.allow_arch_change else self.serving.lm
            try:
                lm = self._load_validated(data, expected=expected)
            except Exception as e:  # keep serving the last good model
                self._bad.add(sig)
                age = time.time() - sig.mtime_ns / 1e9
                if age < RECENT_WRITE_S and not looks_complete(data):  # most likely a copy in progress
                    logger.warning("model file %s (size %d, written %.2f s ago) does not load yet; still serving "
                                   "sha256=%s; if it is being copied, the complete file will be loaded: %s",
                                   self.path, sig.size, age, self.serving.lm.sha256[:12], e)
                else:
                    logger.error("model file %s (size %d) failed to load; still serving sha256=%s: %s",
                                 self.path, sig.size, self.serving.lm.sha256[:12], e)
                return False
            self.serving, self._sig = Serving(lm), sig  # eager at once...
            self.reloads += 1
            if self.optimize:  # ...prepared as soon as it is ready (recorded under the lock: close waits for the latest)
                self._preparing = threading.Thread(target=self._upgrade, args=(lm,), name="bitmind-prepare", daemon=True)
                self._preparing.start()
        return True

    def _note_missing(self, why: str) -> None:
        """Say once that the model file cannot be read (``why``: deleted, moved, a folder in its
        place, no permission): the miner keeps answering with the model it loaded, which an
        operator who removed the file may not expect, and a file put back at the path is loaded
        as any new version is."""
        with self._gone_lock:
            first, self._gone = not self._gone, True
        if first:
            logger.warning("model file %s %s; still serving sha256=%s; a readable model file put back at that "
                           "path is loaded", self.path, why, self.serving.lm.sha256[:12])

    def _note_back(self) -> None:
        """Say once that a readable file is at the model path again, after ``_note_missing``."""
        if self._gone:
            with self._gone_lock:
                back, self._gone = self._gone, False
            if back:
                logger.info("model file %s is there again", self.path)

    def close(self, timeout: float = 30.0) -> None:
        """Wait (at most ``timeout`` s) for a reload's CPU preparation still running: a process
        that exits under it aborts in native code ("terminate called without an active
        exception", exit 134) instead of stopping cleanly."""
        thread = self._preparing
        if thread is not None and thread.is_alive():
            thread.join(timeout)
            if thread.is_alive():
                logger.warning("model preparation still running after %.0f s; exiting without it", timeout)

    def _prepared(self, lm: LoadedModel) -> nn.Module | None:
        """The CPU-prepared forward for ``lm``, or None (eager) if disabled or it failed."""
        if not self.optimize:
            return None
        with single_threaded():
            return prepare_for_serving(lm.model, name=f"model sha256={lm.sha256[:12]}", bf16=self.cpu_bf16)

    def _upgrade(self, lm: LoadedModel) -> None:
        with self._prepare_lock:  # one at a time; skip models already replaced
            if self.serving.lm is not lm:
                return
            fast = self._prepared(lm)
        if fast is None:
            return
        self._swap_forward(lm, fast)
        if self.compile_threads:  # compiling needs the forwards to stand still: only at start-up
            logger.info("model sha256=%s serves prepared, not compiled: restart the miner to compile it", lm.sha256[:12])

    def _compile_before_serving(self, lm: LoadedModel) -> None:
        """Compile the prepared copy (``compile_for_cpu``) before anything serves: Dynamo must
        not trace while other threads run forwards. On its own thread, so the caller's thread
        never runs the multi-threaded probes (see ``single_threaded``); on failure the
        prepared copy serves."""
        t0 = time.perf_counter()
        result: list = []
        worker = threading.Thread(target=lambda: result.append(compile_for_cpu(
            self.serving.forward, thread_counts=self.compile_threads, name=f"model sha256={lm.sha256[:12]}")),
            name="bitmind-compile", daemon=True)
        worker.start()
        worker.join()
        if result and result[0] is not None:
            self.serving = Serving(lm, result[0])
            logger.info("model sha256=%s compiled for %s intra-op threads in %.1f s", lm.sha256[:12],
                        "/".join(map(str, result[0].thread_counts)), time.perf_counter() - t0)

    def _swap_forward(self, lm: LoadedModel, forward: nn.Module) -> None:
        with self._reload_lock:
            if self.serving.lm is lm:  # not replaced meanwhile
                self.serving = Serving(lm, forward)
