"""Checkpoint I/O without pickle.

Two formats, both self-describing when written by this package:

* ``.pth``: ``torch.save({"model": state_dict, "meta": {...}})``. Also accepted: a
  bare state dict (the reference NPR/SN34 format) or ``{"model": sd}`` / ``{"state_dict": sd}``.
  Always read with ``torch.load(..., weights_only=True)``: a file carrying pickled code
  is refused, never executed.
* ``.safetensors``: tensors plus metadata (a JSON string under the ``bitmind`` key).

``meta`` holds ``arch`` (registry name), ``config`` (constructor kwargs), ``transform``
(how inputs are prepared), ``metrics`` and, optionally, ``temperature`` and ``logit_bias`` (calibration:
the served probability is ``sigmoid(logit / temperature + logit_bias)``).
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
import pickle
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from bitmind.common import atomic_write
from bitmind.models import build_model

logger = logging.getLogger(__name__)

DEFAULT_ARCH = "npr"
_META_KEY = "bitmind"


class CheckpointError(RuntimeError):
    """A model file could not be turned into a working model."""


@dataclass
class LoadedModel:
    model: nn.Module
    meta: dict = field(default_factory=dict)
    path: str = ""
    sha256: str = ""

    @property
    def arch(self) -> str:
        return self.meta.get("arch", DEFAULT_ARCH)

    @property
    def temperature(self) -> float:
        return float(self.meta.get("temperature", 1.0) or 1.0)

    @property
    def logit_bias(self) -> float:
        return float(self.meta.get("logit_bias", 0.0) or 0.0)

    def probabilities(self, logits):
        """Raw logits -> calibrated P(AI-generated): ``sigmoid(logit / temperature + logit_bias)``."""
        from bitmind.calibration import apply_calibration

        return apply_calibration(logits, self.temperature, self.logit_bias)


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def model_meta(model: nn.Module, arch: str = DEFAULT_ARCH, **extra: Any) -> dict:
    """Build the metadata block for ``model`` (its config comes from ``model.config``)."""
    from bitmind.image_transforms import describe_eval_transform

    meta = {"arch": arch, "config": dict(getattr(model, "config", {})), "transform": describe_eval_transform(), "format_version": 1}
    meta.update(extra)
    return meta


def save_checkpoint(model_or_state: nn.Module | dict, path: str | os.PathLike, meta: dict | None = None) -> Path:
    """Save weights and metadata atomically; format chosen by suffix (.pth or .safetensors)."""
    path = Path(path)
    if isinstance(model_or_state, nn.Module):
        state = model_or_state.state_dict()
        meta = meta if meta is not None else model_meta(model_or_state)
    else:
        state = model_or_state
        meta = meta or {}
    state = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        atomic_write(path, lambda p: save_file(state, p, metadata={_META_KEY: json.dumps(meta)}))
    else:
        atomic_write(path, lambda p: torch.save({"model": state, "meta": _jsonable(meta)}, p))
    return path


def _jsonable(obj):
    """Round-trip through JSON: metadata must be plain data for weights_only loading."""
    return json.loads(json.dumps(obj, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


def names_safetensors(path: Path, max_links: int = 40) -> bool:
    """Whether ``path``, or a link on the way from it to its file, is named ``.safetensors``.
    Why the links: the served name is fixed (``--neuron.model_path .../current.pth``) while the
    file it links to may be a .safetensors one (docs/Mining.md), and the Hugging Face cache
    links ``model.safetensors`` to a blob without a suffix."""
    for _ in range(max_links):
        if path.suffix == ".safetensors":
            return True
        if not path.is_symlink():
            return False
        try:
            path = path.parent / os.readlink(path)
        except OSError:
            return False
    return False


def read_checkpoint(path: str | os.PathLike, data: bytes | None = None) -> tuple[dict, dict]:
    """Return ``(state_dict, meta)`` from a file, without unpickling code.

    With ``data``, those bytes are parsed (``path`` only names the file and its
    format): the hot reloader loads exactly the bytes it checked and hashed.
    """
    path = Path(path)
    if data is None and not path.is_file():
        raise CheckpointError(_not_a_file(path))
    if names_safetensors(path):
        try:
            from safetensors import safe_open
            from safetensors.torch import load as load_safetensors_bytes

            if data is None:
                with safe_open(str(path), framework="pt") as f:
                    raw_meta, state = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
            else:
                state = load_safetensors_bytes(data)
                header_len = int.from_bytes(data[:8], "little")
                raw_meta = json.loads(data[8:8 + header_len]).get("__metadata__")
        except Exception as e:
            raise CheckpointError(load_failure(path, data, e, "safetensors")) from e
        try:
            meta = json.loads((raw_meta or {}).get(_META_KEY, "{}"))
        except (TypeError, ValueError) as e:
            raise CheckpointError(f"{path}: its {_META_KEY!r} metadata is not valid JSON ({type(e).__name__})") from e
        return state, _meta_dict(meta, path)
    try:
        obj = torch.load(io.BytesIO(data) if data is not None else path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt, truncated, not a model, or pickled code: named by load_failure
        raise CheckpointError(load_failure(path, data, e, "torch.load")) from e
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a state dict")
    if (why := training_state_problem(obj, path)) is not None:
        raise CheckpointError(why)
    meta: dict = {}
    if "model" in obj and isinstance(obj["model"], dict):
        state, meta = obj["model"], obj.get("meta") or {}
    elif "state_dict" in obj and isinstance(obj["state_dict"], dict):
        state, meta = obj["state_dict"], obj.get("meta") or {}
    else:
        state = obj
    state = {k.removeprefix("module."): v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if not state:
        raise CheckpointError(f"{path} contains no tensors")
    return state, _meta_dict(meta, path)


#: What a run's resumable state holds (the trainer's ``STATE_KEYS``, which its ``--resume``
#: requires, is this tuple: defined here, where the miner's loaders need it without the trainer).
RUN_STATE_KEYS = ("model", "optimizer", "epoch", "best_acc")
#: What a sweep's resumable state holds (``bitmind.training.sweep_state.save_sweep_state``).
SWEEP_STATE_KEYS = ("version", "epoch", "variants")


def training_state_problem(obj: dict, path: str | os.PathLike) -> str | None:
    """Why ``obj`` (what ``torch.load`` read from ``path``) is a training state and not a model,
    in one line naming the model file to use instead; None for anything else.

    Why: a run folder holds ``model_epoch_best.pth`` (the calibrated model to serve) beside
    ``state_last.pt`` (weights, optimiser, epoch: what ``--resume`` goes on from), and a
    sweep folder ``sweep_state.pt``. The run's state has a ``model`` state dict, so
    ``--neuron.model_path run/state_last.pt`` loaded it as an uncalibrated NPR of the last
    epoch, without a word. Told by content (the keys the trainer and the sweep write, and no
    ``meta``), not by name: a renamed copy is refused too, and a reference checkpoint with an
    optimiser (``model``, ``optimizer``, ``total_steps``) still loads. The resume code reads
    these files with ``torch.load`` itself, never through here."""
    if "meta" in obj:
        return None
    path = Path(path)
    if all(k in obj for k in RUN_STATE_KEYS) and isinstance(obj["model"], dict) and isinstance(obj["optimizer"], dict):
        best = path.parent / "model_epoch_best.pth"
        serve = (f"use {best} instead (or model_last.pth for the last epoch)" if best.is_file()
                 else "use the model_epoch_best.pth of the run that wrote it instead (not beside this copy)")
        return f"{path} is a training run's resumable state (for --resume), not a model: {serve}"
    if all(k in obj for k in SWEEP_STATE_KEYS) and isinstance(obj["variants"], dict):
        bests = [path.parent / str(v) / "model_epoch_best.pth" for v in obj["variants"]]
        found = [str(b) for b in bests if b.is_file()] or [str(b) for b in bests]
        return (f"{path} is a sweep's resumable state (for --resume), not a model: use a variant's "
                f"model_epoch_best.pth instead ({', '.join(found[:3])}{', ...' if len(found) > 3 else ''})")
    return None


#: Why a file did not load, in plain words (``load_failure``); the tests match these.
NOT_A_MODEL = "not a model file (neither a torch zip nor safetensors)"
TRUNCATED = "incomplete or truncated (a copy in progress?)"
REFUSED = ("holds pickled objects that are not plain tensors/metadata: refused (never loaded with pickle, "
           "which could run code)")

_ZIP_MAGIC = b"PK\x03\x04"
_ZIP_END = b"PK\x05\x06"  # end of central directory: the last record of a whole zip file
_ZIP_END_SPAN = 22 + 0xFFFF  # that record, with the longest comment a zip may end with
#: torch.save's pre-1.6 (non-zip) format: a pickled magic number first.
_LEGACY_MAGIC = b"\x80\x02\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little")
_SCAN_LIMIT = 64 << 20  # bytes read to tell why a file failed (an error path: never the whole of a huge file)


def _not_a_file(path: Path) -> str:
    """Why ``path`` is not a file to read: missing (``not found``: what callers and
    operators grep for), a folder, or something else (a device, a socket)."""
    if not path.exists():
        return f"model file not found: {path}"
    if path.is_dir():
        return f"{path} is a folder, not a model file"
    return f"{path} is not a regular file"


class _Bytes:
    """Random access to the bytes being diagnosed: ``data`` if given, else the file."""

    def __init__(self, path: Path, data: bytes | None):
        self.path, self.data = path, data
        if data is not None:
            self.size = len(data)
        else:
            try:
                self.size = path.stat().st_size
            except OSError:
                self.size = 0

    def read(self, start: int, n: int) -> bytes:
        start, n = max(0, start), max(0, n)
        if self.data is not None:
            return bytes(self.data[start:start + n])
        try:
            with open(self.path, "rb") as f:
                f.seek(start)
                return f.read(n)
        except OSError:
            return b""


def _zip_end_present(b: _Bytes) -> bool:
    """Whether a zip file ends with its whole end-of-central-directory record (22 bytes and
    the comment it announces): the last thing written, so a cut copy lacks it."""
    tail = b.read(b.size - _ZIP_END_SPAN, _ZIP_END_SPAN)
    at = tail.rfind(_ZIP_END)
    while at >= 0:
        if len(tail) - at >= 22 and len(tail) - at == 22 + int.from_bytes(tail[at + 20:at + 22], "little"):
            return True
        at = tail.rfind(_ZIP_END, 0, at)
    return False


def _safetensors_header(b: _Bytes) -> dict | None:
    """``{"header_len", "end"}`` where the bytes start like a safetensors file (an 8-byte
    little-endian length, then a JSON object); ``end`` (the whole file's size by its header)
    is None where the header is not all there or does not parse. None: not safetensors."""
    head = b.read(0, 9)
    if len(head) < 9 or head[8:9] != b"{":
        return None
    n = int.from_bytes(head[:8], "little")
    if not 2 <= n <= 100_000_000:
        return None
    if b.size < 8 + n:
        return {"header_len": n, "end": None}
    try:
        header = json.loads(b.read(8, n))
        end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
    except Exception:  # noqa: BLE001 - a header that does not parse: not a safetensors file after all
        return None
    return {"header_len": n, "end": 8 + n + end}


#: The largest file read as a model (the shipped files are 6 MB, an ensemble of a few members
#: tens of MB): a wrong file copied to the model path (a video, a data archive) is refused from
#: its size instead of being read whole into the miner's memory. The miner's
#: ``--neuron.max_model_mb`` sets its own; every other reader of served files checks this one.
MAX_MODEL_BYTES = 256 * 1024 * 1024


def too_large(path: str | os.PathLike, size: int, limit: int | None = None) -> str:
    """Why a file of ``size`` bytes at ``path`` is not read as a model ("" if it may be);
    ``limit``: ``MAX_MODEL_BYTES`` unless given."""
    limit = MAX_MODEL_BYTES if limit is None else limit
    if size <= limit:
        return ""
    return (f"model file {path} is {_size(size)}, more than the {_size(limit)} a model file may be (the shipped "
            "ones are 6 MB; a miner's --neuron.max_model_mb raises its limit): not read, is it the right file?")


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n} bytes"


def model_file_problem(path: str | os.PathLike) -> str | None:
    """Why a local miner could not serve the model file ``path``, else None: it must exist, be
    a file no larger than a miner reads (``MAX_MODEL_BYTES``, the miner's default), and load as
    the miner loads it (``load_model(..., detector_only=True)`` and the calibration check).
    Commands that start a miner (the demo, the validator harness) ask first, so a bad file is
    one line up front, not a traceback in a miner's start-up."""
    p = Path(path).expanduser()
    if not p.exists():
        return f"model file {path} not found"
    if not p.is_file():
        return f"model file {path} is not a file"
    if (why := too_large(path, p.stat().st_size)):
        return why
    try:
        check_calibration(load_model(p, device="cpu", detector_only=True).meta, p)
    except CheckpointError as e:
        return str(e)
    except OSError as e:  # unreadable (permissions) while hashing
        return f"model file {path} cannot be read: {e.strerror or e}"
    return None


def looks_complete(data: bytes) -> bool:
    """Whether ``data`` is a whole model file rather than one caught part-way through a copy.

    Why: the miner's hot reload reports a file that fails to load within seconds of its last
    write as probably still being copied (a warning: the whole file will load), but a whole
    file refused for what it holds (another architecture, calibration out of bounds) must be
    reported as refused at once. A copy in progress has the whole file's first bytes and lacks
    its last ones: a torch zip is whole when it ends with its end-of-directory record, a
    safetensors file when it is as long as its header says; anything else (an unknown format,
    a header that does not parse) is taken as whole, since waiting will not make it load.
    Never raises: it runs where a refusal is being logged."""
    try:
        b = _Bytes(Path(), data)
        if data[:4] == _ZIP_MAGIC:
            return _zip_end_present(b)
        if len(data) < 9:
            return False  # the first bytes of something
        header = _safetensors_header(b)
        if header is None:
            return True
        return header["end"] is not None and len(data) >= header["end"]
    except Exception:  # noqa: BLE001 - whatever the bytes, a log line must not fail
        return True


def _legacy_pickles_complete(b: _Bytes) -> bool | None:
    """Whether the five pickles of torch's legacy format (magic, protocol, system info, the
    object, storage keys) are all there, read with ``pickletools.genops`` (which parses and
    never runs anything); None where the file is too large to tell."""
    import pickletools

    if b.size > _SCAN_LIMIT:
        return None
    f = io.BytesIO(b.read(0, b.size))
    try:
        for _ in range(5):
            for _op in pickletools.genops(f):
                pass
    except Exception:  # noqa: BLE001 - exhausted or cut inside an opcode: not all there
        return False
    return True


def _refused_global(e: BaseException) -> str:
    """The global a weights-only load refused (``io.open``, ``argparse.Namespace`` ...), if torch named it."""
    import re

    m = re.search(r"GLOBAL ([\w.]+) was not an allowed global", str(e)) or re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(e))
    return f" (the first refused: {m.group(1)})" if m else ""


def _short_detail(e: BaseException) -> str:
    """The exception's first line, where it is short and gives no advice (torch's long
    messages are cut mid-sentence, and some suggest ``weights_only=False``)."""
    line = (str(e).strip().splitlines() or [""])[0].strip()
    if not line or len(line) > 160 or "weights_only" in line or "If you are seeing" in line:
        return ""
    return f": {line}"


def load_failure(path: str | os.PathLike, data: bytes | None, e: BaseException, reader: str = "torch.load") -> str:
    """One line saying why ``path`` (or ``data``, its bytes) did not load: a plain cause
    told from the bytes (zip magic and end of central directory, torch's legacy magic,
    a safetensors header) and from the exception, whose class name is kept for debugging.
    Never torch's own text, which is long and advises a load that could run code."""
    path = Path(path)
    name = type(e).__name__ if type(e).__name__ != "error" else f"{type(e).__module__}.error"  # struct.error
    tag = f"({reader}: {name}{{}})"
    if isinstance(e, FileNotFoundError) and data is None:
        return f"model file not found: {path} (it disappeared while being read) {tag.format('')}"
    if isinstance(e, IsADirectoryError) and data is None:
        return f"{path} is a folder, not a model file"
    if isinstance(e, PermissionError) and data is None:
        return f"cannot read {path}: permission denied {tag.format('')}"
    b = _Bytes(path, data)
    head = b.read(0, 16)

    def say(cause: str, detail: str = "") -> str:
        return f"cannot load {path}: {cause} {tag.format(detail)}"

    if b.size == 0:
        return say("the file is empty (0 bytes): " + TRUNCATED)
    is_zip = head.startswith(_ZIP_MAGIC)
    zip_whole = is_zip and _zip_end_present(b)
    is_legacy = head.startswith(_LEGACY_MAGIC)
    if b.size < len(_LEGACY_MAGIC) and (_LEGACY_MAGIC.startswith(head) or _ZIP_MAGIC.startswith(head)):
        return say(TRUNCATED)  # the first bytes of a torch file, and no more
    if reader == "safetensors":
        if is_zip or is_legacy:
            return say("a torch checkpoint, not safetensors: name it .pth to load it")
        st = _safetensors_header(b)
        if st is None:
            return say(NOT_A_MODEL)
        if st["end"] is None or b.size < st["end"]:
            return say(TRUNCATED)
        return say("a safetensors file that cannot be read (damaged?)", _short_detail(e))
    if is_zip:
        if not zip_whole:
            return say(TRUNCATED)
        if isinstance(e, pickle.UnpicklingError):
            return say(REFUSED + _refused_global(e))
        return say("a zip archive but not a readable torch checkpoint (damaged, or another kind of zip)", _short_detail(e))
    if is_legacy:  # torch.save(..., _use_new_zipfile_serialization=False), as some reference weights are
        complete = _legacy_pickles_complete(b)
        if complete is False or isinstance(e, (EOFError, struct.error)) or "EOF" in str(e):
            return say(TRUNCATED)
        if isinstance(e, pickle.UnpicklingError):
            return say(REFUSED + _refused_global(e))
        return say("a legacy (non-zip) torch checkpoint that cannot be read (damaged?)", _short_detail(e))
    if _safetensors_header(b) is not None:
        return say(f"a safetensors file named {path.suffix or 'without a suffix'}: name it .safetensors to load it")
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return say("a plain Python pickle, not torch.save's format: refused (never loaded with pickle, which could run code)")
    return say(NOT_A_MODEL)


def _meta_dict(meta, path) -> dict:
    """The metadata block, which must be a JSON object (a list or a number there was an
    AttributeError deep in ``load_model``)."""
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: its metadata is a {type(meta).__name__}, not a JSON object")
    return meta


#: Stored temperature a served file may hold: ``bitmind.calibration.fit_platt`` keeps it in
#: [0.05, 20] (the shipped files: 0.47-0.98; every fit recorded under benchmarks/: 0.47-2.1);
#: far outside, every answer is the same (T 1e-300: all 0 or 1; T 1e300: all 0.5).
CALIBRATION_BOUNDS = {"temperature": (1e-3, 1e3)}
#: The farthest a served file's decision boundary may lie from the network's own undecided
#: logit 0, in raw logit units: the raw logit the miner answers 0.5 for is ``-logit_bias *
#: temperature``, and beyond +-20 the network itself would have to be more than
#: ``sigmoid(20)`` = 1 - 2e-9 sure of one class before the answer changes: every picture a
#: working network can meet gets the same answer (``logit_bias`` 50 with T 1: 1.0 to
#: everything). Real calibrations sit far inside: the shipped files' boundaries are within
#: 0.25 of 0 (|bias| <= 0.4, T <= 1), every fit recorded under benchmarks/ within about 1, and
#: the real-target rule puts it at a quantile of the validation real photos' raw logits.
MAX_BOUNDARY_LOGIT = 20.0


def check_calibration(meta: dict, path: str | os.PathLike = "") -> None:
    """Refuse stored calibration that would break every answer: the served probability is
    ``sigmoid(logit / temperature + logit_bias)``, so a temperature that is not a finite
    positive number (NaN answers, or every decision inverted when negative) or a bias that is
    not finite (NaN, or every answer 0 or 1), a temperature far beyond what a fit gives
    (``CALIBRATION_BOUNDS``: every answer the same), or a decision boundary out of the network's
    reach must stop the load, not reach a request: a miner keeps serving its last good model
    instead of hot-swapping to one that answers nothing.

    The boundary: the answer crosses 0.5 where the raw logit is ``-logit_bias * temperature``.
    It is judged in raw logit units, not by the bias alone, because a fit at a sharp temperature
    legitimately needs a large bias (T 0.05 and a boundary at raw logit 2: bias -40), while the
    same bias at T 1 puts the boundary at 40, where nothing a network gives reaches it. Beyond
    ``MAX_BOUNDARY_LOGIT`` (20: the network more than 1 - 2e-9 sure) the file answers one class
    to every picture: a bias of 50 at T 1 answers 1.0 to everything, and was served.

    Absent, None or 0 keep their meaning (no calibration: 1 and 0). Called where a file is
    loaded to serve (``bitmind.miner.reload``) and by ``bitmind.model_info``, not by ``load_model``:
    ``bitmind.calibrate`` must still open such a file to fit it anew, and ``model_info`` to show it.
    A refusal is a ``CheckpointError`` naming ``path``."""
    values = {}
    for key, default in (("temperature", 1.0), ("logit_bias", 0.0)):
        raw = meta.get(key, default)
        try:
            value = float(raw or default)
        except (TypeError, ValueError, OverflowError):  # OverflowError: an integer beyond any float (10**400)
            raise CheckpointError(f"{path}: {key} {raw!r} is not a number") from None
        lo, hi = CALIBRATION_BOUNDS.get(key, (-math.inf, math.inf))
        if isinstance(raw, bool) or not math.isfinite(value) or not lo <= value <= hi:
            rule = f"; {key} must lie in [{lo:g}, {hi:g}]" if key in CALIBRATION_BOUNDS else ""
            raise CheckpointError(f"{path}: {key} {raw!r} would break every answer (served P = sigmoid(logit / "
                                  f"temperature + logit_bias){rule})")
        values[key] = value
    t, b = values["temperature"], values["logit_bias"]
    if abs(b) * t > MAX_BOUNDARY_LOGIT:  # abs(b) * t: no overflow to compare, b * t could be inf
        boundary = -b * t
        answer = "1.0 (AI-generated)" if b > 0 else "0.0 (real)"
        raise CheckpointError(
            f"{path}: logit_bias {b:g} with temperature {t:g} puts the decision boundary (P = 0.5) at raw logit "
            f"{boundary:+.3g}, beyond +-{MAX_BOUNDARY_LOGIT:g}: it would answer {answer} to nearly every picture "
            f"(P = {0.5 * (1.0 + math.tanh(b / 2)):.3g} where the network is undecided, at logit 0)")


def build_network(arch: str, state: dict, meta: dict, *, detector_only: bool = False, built: nn.Module | None = None,
                  path: str | os.PathLike = "") -> tuple[nn.Module, dict]:
    """The network of architecture ``arch`` that ``meta["config"]`` describes, ``state``
    loaded strictly, in eval mode (on the CPU), and the ``meta`` that describes it: the one
    step from weights and metadata to a model, for ``load_model`` and for
    ``bitmind.cli.model_info`` (which turns a model it loaded whole into the miner's form).

    ``detector_only`` leaves an auxiliary head of an npr network behind
    (``bitmind.models.npr.detector_only``; the meta returned then says ``num_classes`` 1),
    as the miner loads a file. ``built``: a network already built from this ``state`` and
    ``meta`` as stored, returned as it is (with ``meta`` itself) where dropping the head
    changes nothing, rather than built again. A state that does not fit is a
    ``CheckpointError`` naming ``path``."""
    if detector_only and arch == "npr":
        from bitmind.models.npr import detector_only as drop_head

        state, dropped = drop_head(state, meta)
        if dropped is meta and built is not None:  # no head: the network already built is the detector
            return built, meta
        meta = dropped
    elif built is not None:
        return built, meta
    config = meta.get("config") or {}
    model = None
    try:
        model = build_model(arch, **config)
        model.load_state_dict(state, strict=True)
    except Exception as e:
        raise CheckpointError(f"{path} does not fit architecture {arch!r} {config}: {_misfit(e, model, state)}") from e
    return model.eval(), meta


def _misfit(e: BaseException, model: nn.Module | None, state: dict) -> str:
    """Why ``state`` did not load into ``model``, in one line: the keys it lacks, those it has
    that the network does not, the tensors of another shape (``weights_mismatch``, a few of
    each named). torch's own message only begins ``Error(s) in loading state_dict for NPR:``
    on its first line, the keys on the next ones; where the network was not built (a bad
    config) or the keys all fit, its first non-empty lines are kept instead."""
    if model is not None:
        try:
            from bitmind.training.init_from import weights_mismatch

            summary = weights_mismatch(model, state)
        except Exception:  # noqa: BLE001 - an error message must not fail: fall back on torch's lines
            summary = ""
        if summary:
            return summary[:500]
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return " ".join(lines[:2])[:300] or type(e).__name__


def load_model(path: str | os.PathLike, arch: str | None = None, device: str | torch.device = "cpu",
               expected_arch: str | None = None, data: bytes | None = None, detector_only: bool = False) -> LoadedModel:
    """Build the model a checkpoint describes and load its weights (strict).

    ``arch`` overrides the file's metadata (for bare state dicts of another
    architecture); ``expected_arch`` refuses a file of a different architecture;
    ``data`` parses those bytes of ``path`` instead of reading it (``sha256`` is theirs);
    ``detector_only`` leaves an auxiliary head behind (``bitmind.models.npr.detector_only``:
    the miner serves the first output alone, so a training checkpoint with the head serves,
    and hot-swaps, as the plain detector it contains).
    """
    state, meta = read_checkpoint(path, data)
    name = arch or meta.get("arch") or DEFAULT_ARCH
    if expected_arch is not None and name != expected_arch:
        raise CheckpointError(f"{path} is architecture {name!r}, expected {expected_arch!r}")
    model, meta = build_network(name, state, meta, detector_only=detector_only, path=path)
    model.to(device)
    meta = {**meta, "arch": name, "config": meta.get("config") or {}}
    sha = hashlib.sha256(data).hexdigest() if data is not None else file_sha256(path)
    return LoadedModel(model=model, meta=meta, path=str(path), sha256=sha)
