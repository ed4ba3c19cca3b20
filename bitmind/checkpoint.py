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


def read_checkpoint(path: str | os.PathLike, data: bytes | None = None) -> tuple[dict, dict]:
    """Return ``(state_dict, meta)`` from a file, without unpickling code.

    With ``data``, those bytes are parsed (``path`` only names the file and its
    format): the hot reloader loads exactly the bytes it checked and hashed.
    """
    path = Path(path)
    if data is None and not path.is_file():
        raise CheckpointError(f"model file not found: {path}")
    if path.suffix == ".safetensors":
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
            meta = json.loads((raw_meta or {}).get(_META_KEY, "{}"))
        except Exception as e:
            raise CheckpointError(f"cannot read safetensors file {path}: {e}") from e
        return state, _meta_dict(meta, path)
    try:
        obj = torch.load(io.BytesIO(data) if data is not None else path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt, truncated, or pickled code (UnpicklingError)
        raise CheckpointError(f"cannot read {path} safely (weights_only): {type(e).__name__}: {str(e).splitlines()[0][:200]}") from e
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a state dict")
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


def _meta_dict(meta, path) -> dict:
    """The metadata block, which must be a JSON object (a list or a number there was an
    AttributeError deep in ``load_model``)."""
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: its metadata is a {type(meta).__name__}, not a JSON object")
    return meta


#: Stored calibration a served file may hold: ``bitmind.calibration.fit_platt`` keeps T in
#: [0.05, 20] and the bias in [-100, 100] (the real-target rule moves it a few logits more);
#: far outside, every answer is the same (T 1e-300: all 0; bias 1e9: all 1; T 1e300: all 0.46).
CALIBRATION_BOUNDS = {"temperature": (1e-3, 1e3), "logit_bias": (-1e4, 1e4)}


def check_calibration(meta: dict, path: str | os.PathLike = "") -> None:
    """Refuse stored calibration that would break every answer: the served probability is
    ``sigmoid(logit / temperature + logit_bias)``, so a temperature that is not a finite
    positive number (NaN answers, or every decision inverted when negative) or a bias that is
    not finite (NaN, or every answer 0 or 1), or either far beyond what a fit gives
    (``CALIBRATION_BOUNDS``: every answer the same), must stop the load, not reach a request: a miner
    keeps serving its last good model instead of hot-swapping to one that answers nothing.
    Absent, None or 0 keep their meaning (no calibration: 1 and 0). Called where a file is
    loaded to serve (``bitmind.miner.reload``), not by ``load_model``: ``bitmind.calibrate``
    must still open such a file to fit it anew, and ``model_info`` to show it."""
    for key, default in (("temperature", 1.0), ("logit_bias", 0.0)):
        raw = meta.get(key, default)
        try:
            value = float(raw or default)
        except (TypeError, ValueError, OverflowError):  # OverflowError: an integer beyond any float (10**400)
            raise CheckpointError(f"{path}: {key} {raw!r} is not a number") from None
        lo, hi = CALIBRATION_BOUNDS[key]
        if isinstance(raw, bool) or not math.isfinite(value) or not lo <= value <= hi:
            raise CheckpointError(f"{path}: {key} {raw!r} would break every answer (served P = sigmoid(logit / "
                                  f"temperature + logit_bias); {key} must lie in [{lo:g}, {hi:g}])")


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
    if detector_only and name == "npr":
        from bitmind.models.npr import detector_only as drop_head

        state, meta = drop_head(state, meta)
    config = meta.get("config") or {}
    try:
        model = build_model(name, **config)
        model.load_state_dict(state, strict=True)
    except Exception as e:
        raise CheckpointError(f"{path} does not fit architecture {name!r} {config}: {str(e).splitlines()[0][:300]}") from e
    model.eval().to(device)
    meta = {**meta, "arch": name, "config": config}
    sha = hashlib.sha256(data).hexdigest() if data is not None else file_sha256(path)
    return LoadedModel(model=model, meta=meta, path=str(path), sha256=sha)
