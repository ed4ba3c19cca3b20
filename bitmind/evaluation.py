"""Evaluate a detector file on local data, as plain images or as validator challenges
(the command line is ``python -m bitmind.eval``, in ``bitmind.cli.eval``).

Every data root is split by picture stem with the trainer's rule, so a picture is in the
same split whichever root holds it; with several roots, per-source figures are keyed
``ROOT:CLASS/SOURCE`` (``ROOT`` is the folder name, the full spec if two roots share one).
The split seed and the train/val/test fractions are those the checkpoint's run used
(``train_options``: ``trained_split``), so ``--split val`` is the trainer's validation split
whatever ``--val_fraction`` / ``--test_fraction`` it was trained with.

The model is loaded with ``bitmind.checkpoint.load_model`` and scored exactly as the
miner serves it: base transforms, one logit through the miner's own forward
(``bitmind.inference.serving_forward``: batch norms folded on a CPU, bf16 autocast on CUDA),
``P(fake) = sigmoid(logit / T + b)`` with
the checkpoint's calibration (temperature ``T``, ``logit_bias`` ``b``; 1 and 0 when absent). With ``--challenge`` every image first goes through
the validator pipeline (random augmentation or plain resize, then a JPEG round trip at
quality 75), driven by a per-image RNG derived from ``--seed`` and the image's index,
so a run is reproducible whatever the batch size or number of workers.

Metrics (``bitmind.metrics.compute_metrics``) are reported overall and per source
folder. The functions here (``build_dataset``, ``collect_predictions``, ``evaluate``)
are what notebooks, ``base_miner/NPR/validate.py`` and benchmarks reuse.
"""
from __future__ import annotations

import json
import logging
import os
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bitmind.checkpoint import LoadedModel, load_model
from bitmind.common import atomic_write_text, check_device, resolve_device
from bitmind.data import (
    DetectionDataset,
    ImageSource,
    collate_skip_none,
    open_source,
    split_indices,
    unique_roots,
)
from bitmind.data.splits import DEFAULT_FRACTIONS, SPLITS
from bitmind.image_transforms import ValidatorPipeline
from bitmind.inference import forward_precision, serving_forward
from bitmind.metrics import compute_metrics

logger = logging.getLogger(__name__)


class _NamedSource:
    """A source whose per-image source names carry a prefix (to tell apart several --data);
    everything else is the inner source's."""

    def __init__(self, inner: ImageSource, prefix: str):
        self.inner, self.prefix, self.name = inner, prefix, inner.name

    def __len__(self):
        return len(self.inner)

    def __getattr__(self, attr):  # label, stem, load, describe, path ...
        if attr == "inner":  # not set yet (unpickling)
            raise AttributeError(attr)
        return getattr(self.inner, attr)

    def source_name(self, i):
        return f"{self.prefix}:{self.inner.source_name(i)}"


def open_sources(data: Sequence[str | os.PathLike]) -> list[ImageSource]:
    """Open each data spec (folder or ``hf:NAME[:role]``); with several, source names get
    the folder name as prefix (the full spec if two folders share a name)."""
    data = unique_roots(data)
    sources = [open_source(str(d)) for d in data]
    if len(sources) <= 1:
        return sources
    names = [s.name for s in sources]
    prefixes = [n if names.count(n) == 1 else str(d) for n, d in zip(names, data)]
    return [_NamedSource(s, p) for s, p in zip(sources, prefixes)]


def trained_split(meta: dict, split_seed: int | None = None, val_fraction: float | None = None,
                  test_fraction: float | None = None) -> tuple[int, tuple[float, float, float]]:
    """``(split_seed, (train, val, test) fractions)`` of the run that wrote a checkpoint
    (``meta``), as ``bitmind.training.trainer.build_datasets`` computes them from its
    ``train_options``; each given argument overrides the file, and a file without them (a
    bare state dict, an older checkpoint) gets the trainer's defaults (seed 0, 80/10/10).
    Why: with other fractions the default split's "val" holds pictures the model was
    trained on (and "train" its test pictures), so an evaluation or a calibration on it
    would measure, or fit, the wrong thing. An ensemble (``bitmind.ensemble``) keeps each
    member's training options: its split is theirs when they agree, and a ValueError when
    they do not (no split then keeps every member off its own training pictures) unless
    the differing options are given."""
    opts = meta.get("train_options") or members_split(meta, given=(split_seed, val_fraction, test_fraction))

    def pick(given, key, default):
        value = given if given is not None else opts.get(key)
        return default if value is None else value

    seed = int(pick(split_seed, "split_seed", 0))
    val, test = float(pick(val_fraction, "val_fraction", DEFAULT_FRACTIONS[1])), float(pick(test_fraction, "test_fraction", DEFAULT_FRACTIONS[2]))
    if not (0.0 <= val < 1.0 and 0.0 <= test < 1.0 and val + test < 1.0):
        raise ValueError(f"val and test fractions must be in [0, 1) and leave a training share, got {val:g} and {test:g}")
    return seed, (1.0 - val - test, val, test)


def split_of(meta: dict, split: str | None, split_seed: int | None = None, val_fraction: float | None = None,
             test_fraction: float | None = None) -> tuple[int, tuple[float, float, float]]:
    """``trained_split`` where a ``split`` is asked for; for every picture (``split`` None) no
    split is read, so an ensemble whose members were split differently is scored or fitted on
    all of a folder none of them trained on (``bitmind.ensemble`` prints that line for them),
    where ``trained_split`` would refuse it."""
    if split:
        return trained_split(meta, split_seed, val_fraction, test_fraction)
    return int(split_seed or 0), DEFAULT_FRACTIONS


def member_label(record: dict, index: int) -> str:
    """An ensemble member as a person can tell it from the others: its run folder and file
    (``run/model_epoch_best.pth``; every member of a sweep has that file name), else its place."""
    name = record.get("file") or f"member {index + 1}"
    return f"{record['run']}/{name}" if record.get("run") else str(name)


def members_split(meta: dict, given: tuple = (None, None, None)) -> dict:
    """The split options (``split_seed``, ``val_fraction``, ``test_fraction``) shared by an
    ensemble's members (``meta["members"][i]["train_options"]``; {} for a file without
    members). A ValueError when the members were trained on different splits, unless each
    option they differ in is ``given`` (the caller's override, in that order). A member that
    stores no option was split as the trainer splits by default (seed 0, 80/10/10)."""
    keys = ("split_seed", "val_fraction", "test_fraction")
    defaults = (0, DEFAULT_FRACTIONS[1], DEFAULT_FRACTIONS[2])
    members = meta.get("members") or []
    options = [m.get("train_options") or {} for m in members]
    splits = [tuple(d if o.get(k) is None else o[k] for k, d in zip(keys, defaults)) for o in options]
    if not splits:
        return {}
    differ = [k for i, k in enumerate(keys) if given[i] is None and len({s[i] for s in splits}) > 1]
    if differ:
        raise ValueError("the ensemble's members were trained on different splits ("
                         + "; ".join(f"{member_label(m, i)}: " + ", ".join(f"{k}={s[j]}" for j, k in enumerate(keys))
                                     for i, (m, s) in enumerate(zip(members, splits)))
                         + "), so no split keeps every member off its own training pictures: pass "
                         + ", ".join(f"--{k}" for k in differ) + " to choose one")
    return {k: splits[0][i] for i, k in enumerate(keys)}


def build_dataset(data: Sequence[str | os.PathLike] | str | os.PathLike, split: str | None = None, split_seed: int = 0,
                  challenge: bool = False, seed: int = 0, pipeline: ValidatorPipeline | None = None,
                  fractions: Sequence[float] = DEFAULT_FRACTIONS) -> DetectionDataset:
    """The images to evaluate: all of ``data``, or one split of it (by picture stem, with
    ``split_seed`` and the train/val/test ``fractions``: the model's are ``trained_split``'s).

    ``challenge`` applies ``pipeline`` (default ``ValidatorPipeline()``: random aug or
    plain, JPEG 75) with the RNG of ``DetectionDataset.rng_for(k)``, i.e. derived from
    ``(seed, 0, k)``: image ``k`` always gets the same transformation for a given seed.
    """
    if isinstance(data, (str, os.PathLike)):
        data = [data]
    if split is not None and split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    items = []
    for src in open_sources(data):
        idx = split_indices(src, seed=split_seed, fractions=tuple(fractions))[split] if split else range(len(src))
        items.extend((src, i) for i in idx)
    if not items:
        raise ValueError(f"no images to evaluate in {list(map(str, data))}" + (f" (split {split!r})" if split else ""))
    augment = (pipeline or ValidatorPipeline()) if challenge else None
    return DetectionDataset(items, augment=augment, seed=seed)


@dataclass
class Predictions:
    """Per-image results, aligned: ``index`` is the position in the evaluated dataset."""

    probs: np.ndarray
    logits: np.ndarray
    labels: np.ndarray
    sources: list[str]
    paths: list[str]
    index: np.ndarray
    skipped: list[str] = field(default_factory=list)
    temperature: float = 1.0
    logit_bias: float = 0.0
    precision: str = "fp32"  # the forward's arithmetic (``bitmind.inference.forward_precision``)
    skipped_sources: dict[str, int] = field(default_factory=dict)  # source -> unreadable pictures

    def __len__(self) -> int:
        return int(self.probs.size)

    def metrics(self, threshold: float = 0.5) -> dict[str, Any]:
        return compute_metrics(self.labels, self.probs, self.sources, threshold=threshold)

    def mistakes(self, k: int | None = None, threshold: float = 0.5) -> list[int]:
        """Positions of misclassified images, most confident first."""
        wrong = np.flatnonzero((self.probs > threshold) != (self.labels == 1))
        order = wrong[np.argsort(-np.abs(self.probs[wrong] - 0.5), kind="stable")]
        return order[:k].tolist() if k is not None else order.tolist()


@torch.inference_mode()
def collect_predictions(model: LoadedModel | torch.nn.Module, dataset: DetectionDataset, batch_size: int = 32,
                        device: str | torch.device | None = "cpu", workers: int = 0, temperature: float | None = None,
                        logit_bias: float | None = None, progress: bool = True, amp: str = "auto") -> Predictions:
    """Score every image of ``dataset``; unreadable ones are skipped and listed.

    ``P(fake) = sigmoid(logit / temperature + logit_bias)``; both default to the
    checkpoint's calibration (1 and 0 for a bare module). ``amp``: the forward's arithmetic
    as the miner's ``--neuron.amp`` takes it: "auto" scores what the miner serves (on a CPU
    that runs bf16 natively, bf16 where it is measured faster: so it may differ between runs
    and machines), "none" fp32 everywhere (numbers to compare or commit), "bf16" always.
    """
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    from bitmind.calibration import apply_calibration
    from bitmind.training.loop import validate

    loaded = isinstance(model, LoadedModel)
    net = model.model if loaded else model
    temperature = float(temperature if temperature is not None else model.temperature if loaded else 1.0)
    logit_bias = float(logit_bias if logit_bias is not None else model.logit_bias if loaded else 0.0)
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    dev = resolve_device(device)
    forward, amp_dtype, channels_last = serving_forward(net, dev, amp=amp)  # exactly what the miner serves
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                        collate_fn=collate_skip_none, pin_memory=dev.type == "cuda")
    batches = tqdm(loader, desc="evaluating", unit="batch", disable=not progress, file=sys.stderr)
    lg, labels, idx = validate(forward, batches, dev, amp_dtype, channels_last)  # the trainer's validation pass
    lg, idx = lg.astype(np.float64), idx.astype(int)
    seen = set(idx.tolist())
    unseen = [k for k in range(len(dataset)) if k not in seen]
    skipped = [dataset.describe(k) for k in unseen]
    skipped_sources = Counter(dataset.items[k][0].source_name(dataset.items[k][1]) for k in unseen)
    return Predictions(
        probs=apply_calibration(lg, temperature, logit_bias),
        logits=lg,
        labels=labels.astype(int),
        sources=[dataset.items[k][0].source_name(dataset.items[k][1]) for k in idx],
        paths=[dataset.describe(k) for k in idx],
        index=idx,
        skipped=skipped,
        temperature=temperature,
        logit_bias=logit_bias,
        precision=forward_precision(forward, amp_dtype),
        skipped_sources=dict(skipped_sources),
    )


def write_report_json(report: dict[str, Any], json_path: str | os.PathLike) -> Path:
    """Write ``report`` to ``json_path`` at once (a temporary file renamed over it): an
    interrupted or failed write leaves the old file whole, and a path that is a symbolic link
    has the link replaced, never the file it points at (a data picture, a model)."""
    return atomic_write_text(json_path, json.dumps(report, indent=2))


def evaluate_detailed(model_path: str | os.PathLike, data, challenge: bool = False, seed: int = 0, split: str | None = None,
                      split_seed: int | None = None, batch_size: int = 32, device: str | None = "auto", workers: int = 0,
                      temperature: float | None = None, logit_bias: float | None = None, progress: bool = True,
                      json_path: str | os.PathLike | None = None, plots_dir: str | os.PathLike | None = None,
                      val_fraction: float | None = None, test_fraction: float | None = None,
                      amp: str = "auto") -> tuple[dict[str, Any], Predictions, DetectionDataset]:
    """``evaluate`` that also returns the per-image predictions and the dataset. Raises
    ValueError when not one image could be read (a table of n = 0 is no evaluation)."""
    dev = check_device(device)
    loaded = load_model(model_path, device=dev)
    split_seed, fractions = split_of(loaded.meta, split, split_seed, val_fraction, test_fraction)
    if split:
        logger.info("split %r of seed %d, train/val/test fractions %s%s", split, split_seed, "/".join(f"{f:.3g}" for f in fractions),
                    "" if (loaded.meta.get("train_options") or {}).get("val_fraction") is not None else " (no training options stored)")
    data = [data] if isinstance(data, (str, os.PathLike)) else list(data)
    pipeline = ValidatorPipeline() if challenge else None
    dataset = build_dataset(data, split=split, split_seed=split_seed, challenge=challenge, seed=seed, pipeline=pipeline,
                            fractions=fractions)
    preds = collect_predictions(loaded, dataset, batch_size=batch_size, device=dev, workers=workers,
                                temperature=temperature, logit_bias=logit_bias, progress=progress, amp=amp)
    if len(preds) == 0:
        raise ValueError(f"none of the {len(dataset)} images could be read, e.g. {preds.skipped[0]}")
    report: dict[str, Any] = preds.metrics()
    report["skipped"] = len(preds.skipped)
    report["model"] = {"path": str(model_path), "sha256": loaded.sha256, "arch": loaded.arch,
                       "config": loaded.meta.get("config", {}), "temperature": preds.temperature,
                       "logit_bias": preds.logit_bias, "checkpoint_calibration": {"temperature": loaded.temperature,
                                                                                  "logit_bias": loaded.logit_bias}}
    report["data"] = [str(d) for d in data]
    report["options"] = {"challenge": challenge, "seed": seed, "split": split, "split_seed": split_seed if split else None,
                         "split_fractions": list(fractions) if split else None,
                         "batch_size": batch_size, "device": str(dev), "precision": preds.precision, "workers": workers,
                         "pipeline": {"plain_share": pipeline.plain_share, "jpeg_quality": pipeline.jpeg_quality} if pipeline else None}
    if preds.skipped:
        report["skipped_files"] = preds.skipped[:100]
        report["skipped_by_source"] = dict(sorted(preds.skipped_sources.items()))
    if plots_dir is not None:
        from bitmind.plots import save_eval_plots

        title = f"{Path(model_path).name} on {', '.join(Path(str(d)).name for d in data)}" + (" (challenge)" if challenge else "")
        report["plots"] = save_eval_plots(preds.labels, preds.probs, plots_dir, title=title)
    if json_path is not None:
        write_report_json(report, json_path)
    return report, preds, dataset


def evaluate(model_path: str | os.PathLike, data, challenge: bool = False, seed: int = 0, **kw) -> dict[str, Any]:
    """Evaluate a model file on local data; returns the report (metrics overall and
    ``per_source``, ``skipped``, ``model`` path/sha256/arch, ``data``, ``options``).

    Keyword arguments: ``split``, ``split_seed``, ``val_fraction`` and ``test_fraction`` (the
    split; default: the checkpoint's run's, ``trained_split``), ``batch_size``, ``device``,
    ``workers``, ``temperature`` and ``logit_bias`` (override the checkpoint's calibration),
    ``progress``, ``json_path``, ``plots_dir``, ``amp`` (``collect_predictions``).
    """
    report, _, _ = evaluate_detailed(model_path, data, challenge=challenge, seed=seed, **kw)
    return report
