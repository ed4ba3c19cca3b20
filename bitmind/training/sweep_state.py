"""A sweep's resumable state (``<sweep folder>/sweep_state.pt``).

Why: a sweep is the longest run there is (the shipped recipe is a one-variant sweep of 135
epochs: minutes on an H200, an hour or more on a small GPU; a LOGO sweep trains 5-21 models
at once). One stopped by Ctrl-C, a lost machine or an out-of-memory kill used to keep only
its uncalibrated best checkpoints, and the only way on was to start again. The state holds
what the next epoch needs and nothing the folder does not already say: every variant's
weights, optimiser, gradient scaler, weight average, patch streams, history and best epoch,
and the sweep's own place (the last epoch done, the epochs a time budget re-planned, the
time spent, the sampler's stream). It is written with ``torch.save`` of tensors and plain
containers only, and read back with ``weights_only=True`` (no pickle), like every file here.

A resumed sweep must be the same sweep: ``check_same_sweep`` compares the spec on the command
line with the ``spec.json`` the sweep wrote when it started, and refuses any difference but
where and how fast it runs (``RUNTIME_KEYS``) and where its data lives (``data`` and the
other roots may move, as they do between a laptop and a GPU machine; logged).
"""
from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import torch

from bitmind.common import atomic_write
from bitmind.training.config import TrainConfig
from bitmind.training.run_folder import RUNTIME_KEYS, SWEEP_STATE, RunFolderError

logger = logging.getLogger(__name__)

#: Base options a resumed sweep may change: where and how fast it runs, and where its data lives.
RESUMABLE_BASE_KEYS = frozenset({*RUNTIME_KEYS, "max_steps_per_epoch", "data", "train_data", "challenge_data"})
#: Top-level spec keys a resumed sweep may change: how often its state is saved.
RESUMABLE_SPEC_KEYS = frozenset({"state_every_s"})
#: Version of the state's layout; a state of another version is refused with a clear message.
STATE_VERSION = 2  # 2: the time budget's steady window (window_s)


def check_same_sweep(out_dir: Path, spec_dict: dict) -> None:
    """A ``RunFolderError`` unless ``spec_dict`` (``SweepSpec.to_dict()`` of the resuming run)
    is the sweep that ``out_dir/spec.json`` describes, up to ``RESUMABLE_BASE_KEYS``."""
    try:
        saved = json.loads((out_dir / "spec.json").read_text())
    except (OSError, ValueError):
        raise RunFolderError(f"--resume: {out_dir}/spec.json is missing or unreadable, so the sweep cannot be "
                             "checked to be the same one; start a new sweep (another --name, or --overwrite)") from None
    diffs = []
    for key in sorted(set(saved) | set(spec_dict)):
        if key == "base" or key in RESUMABLE_SPEC_KEYS:
            continue
        if saved.get(key) != spec_dict.get(key):
            diffs.append(f"{key}: {saved.get(key)!r} -> {spec_dict.get(key)!r}")
    base_saved, base_now = saved.get("base", {}), spec_dict.get("base", {})
    # An option added to TrainConfig after the sweep was started is missing from its spec.json:
    # it ran with that option's default, so read it as the default (not as a change).
    defaults = dataclasses.asdict(TrainConfig())
    moved = []
    for key in sorted(set(base_saved) | set(base_now)):
        was, now = base_saved.get(key, defaults.get(key)), base_now.get(key, defaults.get(key))
        if was == now or key in RUNTIME_KEYS:
            continue
        (moved if key in RESUMABLE_BASE_KEYS else diffs).append(f"{key}: {was!r} -> {now!r}")
    if diffs:
        # the sweep command's --val_seeds / --val_every override the spec: one forgotten on resume
        # is a difference the same command line mends, not a reason for another sweep
        flags = []
        for key in ("val_seeds", "val_every"):
            was = saved.get(key)
            if was is not None and was != spec_dict.get(key):
                flags.append(f"--{key} " + (" ".join(map(str, was)) if isinstance(was, list) else str(was)))
        again = " ".join(flags)
        raise RunFolderError(f"--resume {out_dir}: the spec differs from the sweep's spec.json ("
                             + "; ".join(diffs) + "): a resumed sweep must be the same sweep (only where and how fast "
                             "it runs, and where its data lives, may change); "
                             + (f"pass {again} as the sweep started with, or " if again else "")
                             + "start a new one with another --name")
    if moved:
        logger.warning("--resume %s: data moved: %s", out_dir, "; ".join(moved))


def variant_state(v) -> dict:
    """What one sweep variant (``sweep._Variant``) needs to go on: weights, optimiser, scaler,
    weight average, patch streams, history and best epoch."""
    return {"model": {k: t.detach().cpu() for k, t in v.model.state_dict().items()},
            "optimizer": v.opt.state_dict(), "scaler": v.scaler.state_dict(),
            "swa": v.swa.state_dict() if v.swa is not None else None, "swa_start": int(v.swa_start),
            "history": json.dumps(v.history), "best": json.dumps(v.best.record), "best_score": float(v.best.score),
            "bad_epochs": int(v.best.bad_epochs), "failed": v.failed or "", **v.rng_state()}


def restore_variant(v, st: dict) -> None:
    """Put ``variant_state`` ``st`` back into variant ``v`` (built as the sweep builds it)."""
    try:
        v.model.load_state_dict(st["model"])
    except RuntimeError as e:  # e.g. an auxiliary head sized by another data set's families
        raise RunFolderError(f"--resume: the saved weights of variant {v.name!r} do not fit the network this "
                             f"sweep builds ({str(e).splitlines()[0]}): was the data changed?") from None
    try:
        v.check_resumable(st)
    except ValueError as e:
        raise RunFolderError(f"--resume: variant {v.name!r}: {e}") from None
    v.opt.load_state_dict(st["optimizer"])
    v.scaler.load_state_dict(st["scaler"])
    if st.get("swa") is not None:
        v.swa = torch.optim.swa_utils.AveragedModel(v.model)
        v.swa.load_state_dict(st["swa"])
    v.swa_start = int(st["swa_start"])
    v.history = json.loads(st["history"])
    v.best.record, v.best.score, v.best.bad_epochs = json.loads(st["best"]), float(st["best_score"]), int(st["bad_epochs"])
    v.failed = st.get("failed") or None
    v.load_rng_state(st)
    adopt_saved_best(v)


def adopt_saved_best(v) -> None:
    """Take the variant's best from its ``model_epoch_best.pth`` when that file is of another
    epoch than the state says: a sweep killed between writing a variant's new best and the
    state after that epoch left a best the state does not know. That file is a trained and
    validated model; keeping its score stops the resumed sweep from replacing it with a
    worse epoch (on a GPU the re-run epochs do not repeat exactly)."""
    from bitmind.checkpoint import read_checkpoint
    from bitmind.training.loop import selection_score

    path = v.run_dir / "model_epoch_best.pth"
    if not path.exists():
        return
    try:
        metrics = read_checkpoint(path)[1].get("metrics") or {}
    except Exception as e:  # an unreadable best: the state's record stands, and a new best will replace the file
        logger.warning("%s: cannot read %s (%s); the state's best record is kept", v.name, path, e)
        return
    epoch, val = metrics.get("epoch"), metrics.get("val")
    if epoch is None or not val or epoch == v.best.record.get("epoch"):
        return
    logger.warning("%s: %s is epoch %s's, the state's best is epoch %s's (the sweep stopped between the two): "
                   "the file's is kept as the best", v.name, path.name, epoch, v.best.record.get("epoch"))
    v.best.score = selection_score(val)
    v.best.record = {"epoch": epoch, **{k: x for k, x in val.items() if k != "per_source"}}


def save_sweep_state(out_dir: Path, epoch: int, variants: list, place: dict) -> Path:
    """Write the state after ``epoch`` (all at once: a crash mid-write keeps the previous one).
    ``place``: the sweep's own counters (``epochs``, ``val_from``, ``plan``, ``shortened``,
    ``elapsed_s``, ``window_s`` (when the time budget's steady window began, in seconds of
    the sweep, None before), ``images_seen``, ``sampler_rng``)."""
    state = {"version": STATE_VERSION, "epoch": int(epoch), "torch_rng": torch.get_rng_state(),
             **{k: (json.dumps(v) if k == "plan" else v) for k, v in place.items() if v is not None},
             "variants": {v.name: variant_state(v) for v in variants}}
    path = out_dir / SWEEP_STATE
    atomic_write(path, lambda tmp: torch.save(state, tmp))
    return path


def remove_partial_states(out_dir: Path) -> None:
    """Remove what a process killed while writing the state left behind (the temporary files
    of ``atomic_write``; the state itself is whole, the previous one or the new one)."""
    for tmp in out_dir.glob(f".{SWEEP_STATE}.*.tmp"):
        tmp.unlink(missing_ok=True)


def load_sweep_state(out_dir: Path, variant_names: list[str]) -> dict:
    """The state in ``out_dir`` (``save_sweep_state``), checked to hold ``variant_names``."""
    path = out_dir / SWEEP_STATE
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated or foreign file: one line, not a traceback from the unpickler
        raise RunFolderError(f"--resume: {path} cannot be read ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    if state.get("version") != STATE_VERSION:
        raise RunFolderError(f"--resume: {path} is of layout version {state.get('version')!r}, this code reads "
                             f"{STATE_VERSION}; start a new sweep")
    missing = sorted(set(variant_names) - set(state["variants"]))
    if missing:
        raise RunFolderError(f"--resume: {path} holds no state for variant(s) {missing}")
    state["plan"] = json.loads(state["plan"])
    return state
