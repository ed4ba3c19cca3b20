"""Train several detector variants on ONE shared data stream.

    python -m bitmind.training.sweep --spec base_miner/NPR/sweeps/final.json --data ../shared/data/sn34-mini

Why: training NPR is bound by the CPU work of decoding and augmenting images, not by
the GPU (the network has 1.4 M parameters). Feeding every augmented batch to N models
costs about as much CPU as training one, so N configurations (architectures, optimiser
settings, seeds) are compared in the time of one run, on identical data.

Every epoch, each variant is validated on the SAME pooled validator-challenge draws of
the validation split (``val_seeds``; pooling several draws makes the choice of epoch
less noisy than one draw of ~240 images). Its best epoch is saved as a normal
self-describing checkpoint (loadable by the miner, ``bitmind.eval`` and
``bitmind.calibrate``) and Platt-calibrated on those pooled logits.

Spec (JSON)::

    {"base": {<TrainConfig fields shared by all variants>},
     "val_seeds": [0, 1, 2, 3, 4, 5],
     "variants": {"<name>": {<overrides>}, ...}}

Beside those, ``val_from``, ``val_every``, ``time_budget_s``, ``ensemble_members`` and
``state_every_s`` (below and ``SweepSpec``); any other top-level key is refused as a typo
(``SPEC_KEYS``), but one starting with ``_`` (``_doc``): a comment.

Shared (``base`` only): data, splits, augmentation, epochs, batch size, sampler, device.
Per variant: the model (``arch``, ``layers``, ``width``, ``dropout``, ``input``,
``stem_pool``, ``init_from``), the optimiser (``lr``, ``lr_schedule``, ``lr_decay``,
``lr_decay_every``, ``warmup_epochs``, ``weight_decay``, ``beta1``, ``label_smoothing``),
the auxiliary family head (``aux_weight``, ``aux_by``: its classes come from the whole training
set, so every variant with the same grouping has the same outputs and a fold's held-out family
is a class it never trains on), the processing-history head (``history_weight``: the training set then carries each
picture's augmentation history for every variant, read by those with the head), the one-class
term (``real_compact_weight``), what is done to each training patch
on the device (``patch_size``, ``tile_shuffle``, ``pair_patches``, the ``aug_freq_mask_*`` and
``aug_cutmix_*`` options) and ``seed`` (weight initialisation). These variant options exist only in sweeps:

- ``train_fraction`` (0-1]: the variant trains on that share of the training pictures
  only (``bitmind.data.in_subset``: by stem, nested, class mix kept on average). It sees
  the same stream and takes the same number of steps, on the part of each batch that
  is in its subset. Variants at 1/4, 1/2 and 1 of the data form a learning curve.
- ``exclude_sources`` (list of source names such as ``"fake/sd1x"``): the variant never
  trains on images of those sources, nor on the aligned round trips of their photos, and
  is not selected on them. With extra training sources (``train_data``), this
  compares "with" and "without" on one stream, or trains on one generator to test
  transfer to another.
- ``exclude_roots`` (list of data-folder names such as ``"sn34-validator"``): the variant
  never trains on the pictures of those roots (all their sources, and the round trips
  of their photos); validation is not affected. "With and without the ready-made validator challenges" on one stream.
- ``swa_start`` (epoch, 0 = off): from that epoch on, the variant also keeps the plain
  average of its end-of-epoch weights (stochastic weight averaging). Batch-norm
  statistics of the average are re-estimated on recent training batches of the
  variant's own subset, and the average is what gets validated and saved. A time budget
  that shortens the run moves it in proportion (``fit_epochs``): the same share of the
  end is averaged.
- ``distill_from`` (checkpoint path), ``distill_weight`` (0-1, default 1) and
  ``distill_temperature`` (default 1): knowledge distillation. The training target
  becomes ``distill_weight`` x the teacher's P(AI) on the same augmented image, plus the
  rest x the (smoothed) label. The teacher's P(AI) is its calibrated logit divided by
  ``distill_temperature`` (above 1 softens a teacher that is sure of its own training
  images). This puts a teacher ensemble's knowledge into one network, at one network's
  serving cost. Each teacher is loaded once, whatever the number of variants using it.

Sweep-level ``val_from`` (epoch, default 0) skips validation before that epoch, which
saves GPU time when the best epoch is known to come late; a time budget moves it in
proportion, as ``swa_start``. ``sweep.json`` records the epochs run and where both ended up.

Writes ``<checkpoints_dir>/<name>/``: ``spec.json``; ``sweep.json`` (per variant: best
epoch and its validation metrics, plus ensembles of the best variants); and per variant
``<variant>/model_epoch_best.pth``, ``history.json``, ``curves.png``, TensorBoard
scalars and ``val_logits_best.npy``. While it runs, ``sweep_state.pt``
(``bitmind.training.sweep_state``): a sweep stopped by Ctrl-C (exit status 130, after the
epoch in progress is saved), a lost machine or a killed process goes on with ``--resume``.
The state is written after an epoch that gave a variant a new best, after the first epoch
to end ``state_every_s`` (120 s) after the previous write, and after the epoch a first
Ctrl-C finishes; never after the last epoch. A second Ctrl-C (or one while the data is read
or the variants are calibrated at the end) stops at once with one line and exit status 130:
what was trained since the state was last written is lost, and ``--resume`` goes on from that
state (the line says when there is none).

``--overwrite`` replaces the sweep in the folder as the trainer replaces a run
(``bitmind.training.run_folder.EarlierRun``): once the data has been read the earlier sweep's
files (its summary, state, spec and variant folders) are set aside in ``.previous_run``, removed
once this sweep has saved an epoch (its state, or at its end its summary) and put back if it ends
before; what a killed sweep left is settled by the next one in the folder. ``sweep.json`` records
``amp`` as asked and ``amp_resolved`` as it ran (``--amp bf16`` on a CPU trains fp32).
"""
from __future__ import annotations

from bitmind.shutdown import (GracefulStop, exit_interrupted, exit_interrupted_while_starting, file_marks, sigterm_as_interrupt,
                              stop_name, written_since)

# The imports below take seconds (torch, ~2 s): nearly all of the start-up of python -m bitmind.training.sweep,
# since the package bitmind.training, which runpy imports first, is lazy (its __init__ imports nothing heavy).
# A Ctrl-C while they run ends with one line and exit status 130, not a traceback.
try:
    import argparse
    import dataclasses
    import difflib
    import json
    import logging
    import math
    import os
    import signal
    import sys
    import time
    from dataclasses import dataclass
    from pathlib import Path

    import numpy as np
    import torch
    import torch.nn as nn
    from torch.utils.data import DataLoader

    from bitmind.calibration import CalibrationDataError, apply_calibration
    from bitmind.common import atomic_write_text, parse_bool, positive_int, resolve_amp
    from bitmind.data import AsIs, DetectionDataset, aligned_partners, collate_skip_none, in_subset
    from bitmind.data.dataset import worker_init
    from bitmind.data.families import aux_classes, content_classes
    from bitmind.image_transforms import ValidatorPipeline
    from bitmind.inference import forward_logits
    from bitmind.metrics import compute_metrics
    from bitmind.training.config import ConfigError, TrainConfig, as_config_error, usage_error
    from bitmind.training.loop import (
        HISTORY_KEY,
        Best,
        Learner,
        check_patch_size,
        check_tile_shuffle,
        epoch_record,
        log_epoch,
        make_writer,
        plot_curves,
        save_if_best,
        selection_score,
        smooth_labels,
        to_device_async,
        train_one_epoch,
        val_metrics,
        validate,
    )
    from bitmind.training.run_folder import (SWEEP, SWEEP_STATE, EarlierRun, RunFolderError, finished_sweep, hold_run_folder,
                                             holds_sweep, prepare_sweep_folder, recover_earlier_run)
    from bitmind.training.sweep_state import (check_same_sweep, load_sweep_state, remove_partial_states, restore_variant,
                                              save_sweep_state)
    from bitmind.training.trainer import (
        EXIT_STATUS,
        TrainingDataError,
        amp_name,
        unreadable_training_data,
        build_datasets,
        build_training_model,
        calibrate_checkpoint,
        loader_kwargs,
        prepare_device,
        say_amp,
        seed_everything,
        train_sampler,
    )
except KeyboardInterrupt:
    if __name__ != "__main__":  # imported (generalisation.py, a test): the importer's Ctrl-C
        raise
    exit_interrupted_while_starting()

logger = logging.getLogger(__name__)

#: Variant options handled by the sweep itself (not ``TrainConfig`` fields), with the JSON type
#: each takes (as ``TrainConfig`` annotates its fields).
SWEEP_ONLY_TYPES = {"train_fraction": "float", "swa_start": "int", "distill_from": "str", "distill_weight": "float",
                    "distill_temperature": "float", "exclude_sources": "list[str]", "exclude_roots": "list[str]"}
SWEEP_ONLY_KEYS = tuple(SWEEP_ONLY_TYPES)
#: Sweep-only options a spec may set to null (their default: off, none).
NULLABLE_KEYS = frozenset({"swa_start", "distill_from", "exclude_sources", "exclude_roots"})
#: The spec's own options beside ``base`` and ``variants`` that ``SweepSpec.from_dict`` reads, with their
#: JSON types (``time_budget_s`` may be null: off).
SPEC_TYPES = {"val_seeds": "list[int]", "val_from": "int", "val_every": "int", "time_budget_s": "float",
              "ensemble_members": "int", "state_every_s": "float"}
#: Keys a sweep spec may hold that say what it is and the sweep does not read: ``logo`` (the folds,
#: recipes and controls of the sweep a LOGO spec became, ``logo_sweep_spec``) and ``ran`` (what such a
#: sweep ran, beside it in its ``logo_spec.json``, which runs again as a sweep spec), and what the
#: benchmarks record in the sweep-shaped specs they write (``merged_runs``: the runs
#: ``generalisation.py analyse`` merged; ``residual_logo``: the probe's options). And any key
#: starting with ``_`` (``_doc``): a comment.
DOC_KEYS = frozenset({"logo", "ran", "merged_runs", "residual_logo"})
#: Every top-level key of a sweep spec; any other (``val_seed``, ``time_budget``) is a typo, refused:
#: ignored, the sweep would run with the default and nobody would notice.
SPEC_KEYS = frozenset({"base", "variants", *SPEC_TYPES, *DOC_KEYS})
#: What a variant may change; everything else is shared by the whole sweep.
VARIANT_KEYS = frozenset({"arch", "layers", "width", "dropout", "input", "stem_pool", "pool", "init_from", "lr", "lr_schedule", "lr_decay",
                          "lr_decay_every", "warmup_epochs", "weight_decay", "beta1", "label_smoothing", "aux_weight", "aux_by", "aux_fakes_only",
                          "seed", "patch_size",
                          "tile_shuffle", "pair_patches", "aug_freq_mask_prob", "aug_freq_mask_ratio", "aug_freq_mask_max_freq",
                          "aug_cutmix_prob", "aug_cutmix_area", "real_compact_weight", "history_weight", "adv_weight",
                          *SWEEP_ONLY_KEYS})
#: Recent training batches kept for re-estimating an averaged model's batch-norm statistics.
BN_BATCHES = 8


#: The auxiliary head's own options: a sweep's base may set them for the variants that train
#: the head (``aux_weight``); one without it (a control) inherits them unused (``head_free``).
HEAD_OPTIONS = ("aux_by", "aux_fakes_only")


def head_free(cfg: TrainConfig, own: dict) -> TrainConfig:
    """``cfg`` with each ``HEAD_OPTIONS`` option it took from the base (not in the variant's
    ``own`` options) back at its default where it trains no auxiliary head: a base that sets
    ``aux_by`` once for its head arms must not make the plain control a refused config. One
    the variant names itself without the head is still refused (``TrainConfig.check``)."""
    if cfg.aux_weight:
        return cfg
    defaults = TrainConfig()
    return dataclasses.replace(cfg, **{k: getattr(defaults, k) for k in HEAD_OPTIONS if k not in own})


class SpecError(ConfigError):
    """A sweep spec no sweep can run: a file that cannot be read or is not JSON, a key or an
    option ``TrainConfig`` (or the sweep) does not know, a value of the wrong type, an option a
    variant may not change. A usage error, as an option value no run can use (``ConfigError``,
    its base class, a ValueError): the command line ends with its one line and exit status 2,
    before any data is read, not with a traceback."""


#: What each JSON type is called in a ``SpecError``.
_TYPE_NAMES = {"bool": "true or false", "int": "an integer", "float": "a number", "str": "a string",
               "list[int]": "a list of integers", "list[float]": "a list of numbers", "list[str]": "a list of strings"}


def _fits(value, kind: str) -> bool:
    """Whether the JSON ``value`` is of ``kind`` (``int``, ``float``, ``str``, ``bool`` or ``list[...]`` of one):
    an integer is a number too, but true/false is neither (JSON's booleans are Python ints). From
    Python, a tuple is a list and a path a string, as the options take them."""
    if kind.startswith("list["):
        return isinstance(value, (list, tuple)) and all(_fits(x, kind[5:-1]) for x in value)
    if kind not in _TYPE_NAMES:  # a type this check does not know (a future ``str | None``): the options' own checks judge
        return True
    if isinstance(value, bool):
        return kind == "bool"
    return isinstance(value, {"int": int, "float": (int, float), "str": (str, os.PathLike)}.get(kind, ()))


def _annotation(f: dataclasses.Field) -> str:
    """A ``TrainConfig`` field's type as written (``int``, ``list[str]``, ...)."""
    return f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))


def _json_kind(value) -> str:
    """What a JSON value is, in JSON's words (a spec's wrong kind of block)."""
    return ("null" if value is None else "true/false" if isinstance(value, bool) else "a number" if isinstance(value, (int, float))
            else "a string" if isinstance(value, str) else "an array" if isinstance(value, list) else "an object")


def _check_types(where: str, options: dict, kinds: dict, nullable=frozenset()) -> None:
    """A ``SpecError`` naming ``where`` (``base option``, ...) and the first of ``options`` whose value is
    not of its type in ``kinds``."""
    for key, value in options.items():
        kind = kinds.get(key)
        if kind is None or (value is None and key in nullable) or _fits(value, kind):
            continue
        shown = json.dumps(value, default=str)  # (from Python: a path, a set)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        raise SpecError(f"{where} {key!r} must be {_TYPE_NAMES.get(kind, kind)}, got {shown}")


def _unknown(keys, candidates, shared=frozenset()) -> str:
    """``keys`` quoted, each with the closest of ``candidates`` if one is close (a typo); one of
    ``shared`` (a base option, for a variant's typo) is said to belong in ``base``."""
    said = []
    for key in sorted(keys):
        close = difflib.get_close_matches(key, sorted(candidates), n=1)
        where = ", an option of 'base'" if close and close[0] in shared else ""
        said.append(f"{key!r}" + (f" (did you mean {close[0]!r}{where}?)" if close else ""))
    return ", ".join(said)


def check_spec_keys(d: dict, known, what: str = "spec") -> None:
    """A ``SpecError`` naming each top-level key of the spec ``d`` that is not in ``known``, nor a
    comment (a key starting with ``_``), with the closest known one (a typo)."""
    unknown = {k for k in d if not (isinstance(k, str) and k.startswith("_"))} - set(known)
    if unknown:
        raise SpecError(f"unknown {what} key(s): {_unknown(unknown, known)}; a key starting with '_' is a comment")


def read_spec(path) -> dict:
    """The JSON of the spec file ``path``; a ``SpecError`` (one line) if it cannot be read or is not JSON."""
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise SpecError(f"cannot read the spec {path}: {getattr(e, 'strerror', None) or e}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise SpecError(f"the spec {path} is not JSON: {e.msg} at line {e.lineno} column {e.colno}") from None


@dataclass
class SweepSpec:
    base: TrainConfig
    variants: dict[str, dict]
    val_seeds: list[int]
    val_from: int = 0
    val_every: int = 1
    time_budget_s: float = 0.0  # 0 = off; else fewer epochs so the sweep ends within this many seconds
    ensemble_members: int = 3  # largest ensemble of variants the final report tries (0 or 1: none)
    base_size: int = 256  # the side of the images the data stream yields
    state_every_s: float = 120.0  # write the resumable state at least this often (and after a new best, and on Ctrl-C)

    @classmethod
    def from_dict(cls, d: dict, **base_overrides) -> "SweepSpec":
        """The sweep of the spec ``d`` (a spec file's JSON), ``base_overrides`` that are not None
        replacing its ``base`` options. A ``SpecError`` (a ValueError) names what the spec gets
        wrong: a key or an option no one knows (with the closest known name, if one is close), a value of
        the wrong JSON type, an option a variant may not change; the values themselves are
        checked by ``check``."""
        if not isinstance(d, dict):
            raise SpecError(f'a sweep spec is a JSON object ({{"base": {{...}}, "variants": {{...}}}}), got {_json_kind(d)}')
        if "recipes" in d and "variants" not in d:
            raise SpecError("a LOGO spec (it has 'recipes', not 'variants'): run it with benchmarks/generalisation.py train")
        check_spec_keys(d, SPEC_KEYS, "sweep spec")
        fields = {f.name: _annotation(f) for f in dataclasses.fields(TrainConfig)}
        base = {} if d.get("base") is None else d["base"]
        if not isinstance(base, dict):
            raise SpecError(f"the spec's base must be a JSON object of options, got {_json_kind(base)}")
        base = {**base, **{k: v for k, v in base_overrides.items() if v is not None}}
        bad = set(base) - set(fields)
        if bad:
            raise SpecError(f"unknown base option(s): {_unknown(bad, fields)}")
        _check_types("base option", base, fields)
        _check_types("the spec's option", d, SPEC_TYPES, nullable={"time_budget_s"})
        variants = d.get("variants") or {}
        if not isinstance(variants, dict):
            raise SpecError(f"the spec's variants must be a JSON object of {{name: {{options}}}}, got {_json_kind(variants)}")
        if not variants:
            raise SpecError("a sweep needs at least one variant")
        for name, ov in variants.items():
            if not isinstance(ov, dict):
                raise SpecError(f"variant {name!r} must be a JSON object of options, got {_json_kind(ov)}")
            unknown = set(ov) - VARIANT_KEYS - set(fields)
            if unknown:
                raise SpecError(f"variant {name!r}: unknown option(s): "
                                f"{_unknown(unknown, VARIANT_KEYS | set(fields), shared=set(fields) - VARIANT_KEYS)}")
            shared = set(ov) - VARIANT_KEYS
            if shared:
                raise SpecError(f"variant {name!r} sets {sorted(shared)}, which all variants share (set them in 'base')")
            _check_types(f"variant {name!r}: option", ov, {**fields, **SWEEP_ONLY_TYPES}, NULLABLE_KEYS)
        return cls(base=TrainConfig(**base), variants={k: dict(v) for k, v in variants.items()},
                   val_seeds=[int(s) for s in d.get("val_seeds", [0])], val_from=int(d.get("val_from", 0)),
                   val_every=max(int(d.get("val_every", 1)), 1), time_budget_s=float(d.get("time_budget_s", 0) or 0),
                   ensemble_members=int(d.get("ensemble_members", 3)),
                   state_every_s=float(d.get("state_every_s", 120.0)))

    def check(self) -> dict:
        """Every variant's (checked ``TrainConfig``, sweep options), by name: a ``ConfigError`` naming
        the option (and the variant) that no run can use otherwise. What a sweep checks before it
        reads its data, and the command line before it starts one."""
        self.checked_base()
        return {name: (self.variant_config(name), self.variant_extras(name)) for name in self.variants}

    def checked_base(self) -> TrainConfig:
        """The base options, checked as the variants that inherit them are (``head_free``: the
        auxiliary head's own options a base sets for its head arms are not refused on a base
        without the head): a ``ConfigError`` names one no run can use."""
        return head_free(self.base, {}).check()

    def variant_config(self, name: str) -> TrainConfig:
        own = {k: v for k, v in self.variants[name].items() if k not in SWEEP_ONLY_KEYS}
        cfg = head_free(dataclasses.replace(self.base, **own), own)
        cfg.name = f"{self.base.name}/{name}"
        try:
            return cfg.check()
        except ConfigError as e:
            raise ConfigError(f"variant {name!r}: {e}") from None

    def variant_extras(self, name: str) -> dict:
        """The sweep-only options of a variant, with their defaults; a ``ConfigError`` for a value no run can use."""
        ov = self.variants[name]
        frac = float(ov.get("train_fraction", 1.0))
        if not 0.0 < frac <= 1.0:
            raise ConfigError(f"variant {name!r}: train_fraction must be in (0, 1], got {frac}")
        weight = float(ov.get("distill_weight", 1.0))
        if not 0.0 <= weight <= 1.0:
            raise ConfigError(f"variant {name!r}: distill_weight must be in [0, 1], got {weight}")
        temp = float(ov.get("distill_temperature", 1.0))
        if not temp > 0:
            raise ConfigError(f"variant {name!r}: distill_temperature must be positive, got {temp}")
        swa = int(ov.get("swa_start", 0) or 0)
        if swa < 0 or swa >= self.base.epochs > 0:
            raise ConfigError(f"variant {name!r}: swa_start {swa} must be an epoch of the run (0 = off, else below "
                              f"epochs = {self.base.epochs}): a later start averages nothing and ships the plain weights")
        with as_config_error(f"variant {name!r}: "):
            patch = check_patch_size(ov.get("patch_size", self.base.patch_size), self.base_size)
            check_tile_shuffle(ov.get("tile_shuffle", self.base.tile_shuffle), patch or self.base_size)
        return {"train_fraction": frac, "swa_start": swa,
                "distill_from": ov.get("distill_from") or None, "distill_weight": weight if ov.get("distill_from") else 0.0,
                "distill_temperature": temp, "exclude_sources": sorted(ov.get("exclude_sources") or []),
                "exclude_roots": sorted(ov.get("exclude_roots") or [])}

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class _Variant(Learner):
    """One model of the sweep (a ``Learner``) with its history and best epoch; optionally a
    training subset (``mask`` over the training set), a weight average (``swa``), patch
    training and a distillation teacher."""

    def __init__(self, name: str, cfg: TrainConfig, extras: dict, device: torch.device, amp_dtype: torch.dtype | None = None,
                 mask: torch.Tensor | None = None, training_images: int = 0, val_mask: np.ndarray | None = None,
                 aux: tuple[list[str], list[int]] | None = None, content: tuple[list[str], list[int]] | None = None):
        """``extras``: the variant's sweep-only options (``SweepSpec.variant_extras``); ``aux``: the
        auxiliary classes and each training item's class (``aux_classes``), used if ``cfg.aux_weight``;
        ``content``: the real kinds and each training item's kind (``content_classes``), used if
        ``cfg.adv_weight``."""
        self.name, self.mask, self.swa_start = name, mask, extras["swa_start"]
        self.val_mask = val_mask  # validation challenges this variant is selected on (None = all)
        self.training_images = training_images if mask is None else int(mask.sum())
        self.teacher, self.distill_weight = extras["distill_from"], extras["distill_weight"]
        self.distill_temperature = extras["distill_temperature"]
        self.swa: torch.optim.swa_utils.AveragedModel | None = None
        self.bn_batches: list[torch.Tensor] = []
        torch.manual_seed(cfg.seed)  # each variant's initial weights depend on its own seed only
        super().__init__(build_training_model(cfg, device, len(aux[0]) if aux is not None and cfg.aux_weight else 0),
                         cfg, amp_dtype)
        if aux is not None:
            self.set_aux(*aux)  # ignored without aux_weight
        if content is not None:
            self.set_content(*content)  # ignored without adv_weight
        self.history: list[dict] = []
        self.best = Best()
        self.failed: str | None = None  # why this variant stopped training (its loss or weights not finite)
        self.run_dir = cfg.run_dir
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.writer = make_writer(self.run_dir)

    def select(self, x: torch.Tensor, y: torch.Tensor, k: torch.Tensor,
               teacher_logit: torch.Tensor | None = None,
               history: torch.Tensor | None = None) -> tuple[torch.Tensor, ...] | None:
        """The part of a shared batch in this variant's subset: images, labels, teacher logits
        (or None), item keys and processing-history targets (CPU, or None) (None if under 2
        images); with ``cfg.share_multiple`` m > 1, its first rows in a multiple of m (all of
        them when fewer than m)."""
        if self.mask is None:
            return x, y, teacher_logit, k, history
        rows = self.mask[k].nonzero().squeeze(1)  # on the CPU, as the mask and the keys: no device sync
        m = self.cfg.share_multiple
        if m > 1 and len(rows) >= m:
            rows = rows[: len(rows) - len(rows) % m]
        if len(rows) < 2:
            return None
        k = k[rows]
        history = history[rows] if history is not None else None  # CPU, as the rows here
        # rows as indices, copied without a sync: a boolean index on the device (x[keep]) waits
        # for the GPU to finish all it was given to count the rows, once per variant and batch
        rows = to_device_async(rows, x.device)
        return (x.index_select(0, rows), y.index_select(0, rows),
                (teacher_logit.index_select(0, rows) if teacher_logit is not None else None), k, history)

    def begin_epoch(self, epoch: int) -> float:
        self.bn_batches = []  # the average's statistics come from this epoch's batches only (a resumed sweep has no others)
        return super().begin_epoch(epoch)

    def remember(self, x: torch.Tensor) -> None:
        """Keep the latest training batches of the epoch (of this variant's subset) for batch-norm re-estimation."""
        if self.swa_start:
            self.bn_batches = (self.bn_batches + [x.detach()])[-BN_BATCHES:]

    def end_epoch(self, epoch: int) -> None:
        """Fold this epoch's weights into the average (from ``swa_start`` on) and re-estimate
        the average's batch-norm statistics on the kept batches: averaged weights need their
        own statistics, not an average of the old ones."""
        if not self.swa_start or epoch < self.swa_start or self.failed:
            return
        if self.swa is None:
            self.swa = torch.optim.swa_utils.AveragedModel(self.model)
        self.swa.update_parameters(self.model)
        if self.bn_batches:
            torch.optim.swa_utils.update_bn(self.bn_batches, self.swa.module)

    @property
    def eval_model(self) -> nn.Module:
        return self.swa.module if self.swa is not None else self.model

    def target(self, y: torch.Tensor, teacher_logit: torch.Tensor | None = None) -> torch.Tensor:
        """The loss target: the smoothed label, mixed with the teacher's P(AI) when distilling."""
        y = smooth_labels(y, self.cfg.label_smoothing)
        if teacher_logit is not None and self.distill_weight > 0:
            soft = torch.sigmoid(teacher_logit / self.distill_temperature)
            y = self.distill_weight * soft + (1.0 - self.distill_weight) * y
        return y

    def train_batch(self, x: torch.Tensor, y: torch.Tensor, k: torch.Tensor, context: dict) -> None:
        if self.failed:  # diverged: the others go on, this one keeps its last finite best
            return
        part = self.select(x, y, k, context.get(self.teacher), context.get(HISTORY_KEY))
        if part is None:
            return
        xv = self.crop(part[0], part[3])
        self.step(xv, part[1], target=self.target(part[1], part[2]), aux=self.aux_for(part[3], x.device),
                  history=self.history_for(part[4], x.device), content=self.content_for(part[3], x.device))
        self.remember(xv)


def carries_history(options: dict) -> bool:
    """Whether a sweep's shared training set must carry each picture's processing history: some
    variant (``SweepSpec.check``'s options) trains a processing-history head (``history_weight``)."""
    return any(cfg.history_weight for cfg, _ in options.values())


def budget_epochs(budget_s: float, elapsed_s: float, epochs_done: int, epoch_s: float, planned: int) -> int:
    """How many epochs fit in ``budget_s``: the ``epochs_done`` already run (in ``elapsed_s``)
    plus as many more as the remaining time allows at ``epoch_s`` each (training and its share
    of validation), never more than ``planned`` nor fewer than ``max(epochs_done, 3)``
    (``fit_epochs`` then keeps the epoch about to run)."""
    more = int(max(budget_s - elapsed_s, 0.0) / max(epoch_s, 1e-6))
    return max(min(epochs_done + more, planned), epochs_done, 3)


def validates(epoch: int, epochs: int, val_from: int, val_every: int) -> bool:
    """Whether a sweep of ``epochs`` epochs validates ``epoch``: from ``val_from`` every
    ``val_every`` epochs, and always the last one."""
    return epoch == epochs - 1 or (epoch >= val_from and (epoch - val_from) % max(val_every, 1) == 0)


def validations_between(start: int, end: int, val_from: int, val_every: int) -> int:
    """How many of epochs ``start`` .. ``end - 1`` a sweep ending with ``end - 1`` validates."""
    return sum(validates(e, end, val_from, val_every) for e in range(start, end))


def epochs_within(budget_s: float, elapsed_s: float, next_epoch: int, epoch_s: float, val_s: float,
                  val_from: int, val_every: int, epochs: int) -> int:
    """The longest run, at most ``epochs``, whose remaining epochs (from ``next_epoch``, at
    ``epoch_s`` of training each) and remaining validations (``val_s`` each, counted by
    ``validations_between``) end within ``budget_s``; at least ``next_epoch`` (stop after the
    epoch just run). Used once validations are under way, when what one costs is measured:
    the early fits (``budget_epochs``) see only training epochs, and a run whose validations
    start halfway overran its guard by 14 % (1,144 s for 1,000: docs/Training.md)."""
    left = budget_s - elapsed_s
    for end in range(epochs, next_epoch, -1):
        if (end - next_epoch) * epoch_s + validations_between(next_epoch, end, val_from, val_every) * val_s <= left:
            return end
    return next_epoch


def planned_shape(spec: SweepSpec, variants: list) -> dict:
    """The epoch-indexed options of a sweep as planned, before a time budget moves them."""
    return {"epochs": spec.base.epochs, "val_from": spec.val_from, "swa_start": {v.name: v.swa_start for v in variants}}


def scaled_epoch(value: int, planned: int, epochs: int, now: int) -> int:
    """An epoch index of a ``planned``-epoch run, moved in proportion to a run of ``epochs``:
    0 (off) stays 0 and a moved one stays on (at least 1), an index already passed (before
    ``now``, the next epoch to run) stays where it was, and a moved one lands no earlier than
    ``now`` and no later than the last epoch; halves round up."""
    if not value or value < now:
        return value
    return max(min(math.floor(value * epochs / planned + 0.5), epochs - 1), now, 1)


def fit_epochs(spec: SweepSpec, variants: list, epochs: int, why: str, plan: dict | None = None, now: int = 0) -> None:
    """Re-plan the sweep to ``epochs`` epochs so it ends within ``spec.time_budget_s``; every
    variant's schedule (cosine, warm-up) is re-planned for the new length, so a budgeted run
    still anneals to its end; ``now`` is the next epoch to run, so it never ends before that
    one. The run keeps its shape: ``val_from`` and each variant's ``swa_start`` not yet
    passed move in proportion, from the ``plan``
    (``planned_shape``, the spec's own values if None), so a run cut from 78 to 52 epochs
    averages and selects over its second half as the 78-epoch plan did (scaled from the
    plan, not from the previous re-plan, so two re-plans do not compound their rounding)."""
    plan = plan or planned_shape(spec, variants)
    epochs = max(epochs, now + 1)
    if epochs == spec.base.epochs:
        return
    spec.base.epochs = epochs
    # an index the run has already passed (validation or averaging under way since an earlier
    # re-plan) stays: moving it would leave early epochs in the average or among the candidates
    if not 0 < spec.val_from < now:
        spec.val_from = scaled_epoch(plan["val_from"], plan["epochs"], epochs, now)
    for v in variants:
        v.cfg.epochs = epochs
        if not 0 < v.swa_start < now:
            v.swa_start = scaled_epoch(plan["swa_start"].get(v.name, v.swa_start), plan["epochs"], epochs, now)
    averaged = {v.name: v.swa_start for v in variants if v.swa_start}
    length = f"back to the planned {epochs} epochs" if epochs == plan["epochs"] else f"{epochs} epochs instead of {plan['epochs']}"
    print(f"time budget {spec.time_budget_s:.0f}s ({why}): {length}, validation from "
          f"epoch {spec.val_from}" + (f", weight averaging from {averaged}" if averaged else ""), flush=True)


def stop_after(spec: SweepSpec, variants: list, epoch: int, why: str) -> None:
    """End the sweep with ``epoch``, just run and validated (the budget holds no further epoch
    and its validation). A variant whose weight averaging was still to begin never averaged:
    its ``swa_start`` becomes 0 so that ``sweep.json`` says so, and a warning names it (it
    saves plain weights, which its spec did not ask for)."""
    spec.base.epochs = epoch + 1
    for v in variants:
        v.cfg.epochs = epoch + 1
        if v.swa_start > epoch:
            logger.warning("%s: the time budget ends the run at epoch %d, before its weight averaging (from %d) began: "
                           "plain weights", v.name, epoch, v.swa_start)
            v.swa_start = 0
    print(f"time budget {spec.time_budget_s:.0f}s ({why}): the run ends with epoch {epoch}", flush=True)


class Teachers:
    """Distillation teachers, loaded once each: the calibrated logit of a batch per checkpoint."""

    def __init__(self, paths, device: torch.device, channels_last: bool):
        from bitmind.checkpoint import check_calibration, load_model

        self.models = {}
        for p in sorted(set(paths)):
            lm = load_model(p)
            check_calibration(lm.meta, p)  # a NaN or negative temperature would teach NaN or inverted targets
            net = lm.model.to(device).eval()
            if device.type == "cuda" and channels_last:
                net = net.to(memory_format=torch.channels_last)
            self.models[p] = (net, lm.temperature, lm.logit_bias)
            logger.info("distillation teacher %s (%s, T=%.3f, b=%.3f)", p, lm.arch, lm.temperature, lm.logit_bias)

    @torch.no_grad()
    def logits(self, x: torch.Tensor, amp_dtype) -> dict[str, torch.Tensor]:
        return {p: forward_logits(net, x, x.device, amp_dtype, channels_last=False) / t + b
                for p, (net, t, b) in self.models.items()}


def _logits(model: nn.Module, images: torch.Tensor, device: torch.device, amp_dtype, channels_last: bool, batch: int = 256) -> np.ndarray:
    """Logits of pre-drawn validation challenges (uint8, on any device), through ``validate``."""
    batches = ((images[i:i + batch], torch.zeros(0), torch.zeros(0, dtype=torch.long), 0) for i in range(0, len(images), batch))
    return validate(model, batches, device, amp_dtype, channels_last=channels_last and device.type == "cuda")[0]


def load_val_challenges(val_ds: DetectionDataset, seeds: list[int], workers: int,
                        challenge: bool = True) -> tuple[torch.Tensor, np.ndarray, np.ndarray, np.ndarray]:
    """The validation split through the validator pipeline, one draw per seed, as uint8
    (N, 3, 256, 256), with labels, source names and, for aligned round trips, the source
    of the photo they were made from ("" for other pictures). Items that already are
    challenges (``AsIs``, including round trips paired with a challenge photo) are taken
    once, as they are: re-drawing them changes nothing. ``challenge=False`` (the option
    ``val_challenge: false``, as in a single run) takes every picture once, plainly resized,
    whatever the seeds."""
    partner = aligned_partners(val_ds)
    ready = [k for k in range(len(val_ds)) if isinstance(val_ds.augment_of(k), AsIs)]
    redraw = [k for k in range(len(val_ds)) if not isinstance(val_ds.augment_of(k), AsIs)]
    if challenge:
        parts = [(DetectionDataset([val_ds.items[k] for k in redraw], augment=ValidatorPipeline(), seed=s, uint8=True), redraw)
                 for s in seeds]
    else:
        parts = [(DetectionDataset([val_ds.items[k] for k in redraw], augment=None, seed=seeds[0], uint8=True), redraw)]
    if ready:
        parts.append((DetectionDataset([val_ds.items[k] for k in ready], augment=AsIs(), seed=seeds[0], uint8=True), ready))
    xs, ys, names, photo_names = [], [], [], []
    for part, where in parts:
        if not len(part):
            continue
        loader = DataLoader(part, batch_size=128, shuffle=False, num_workers=workers,
                            collate_fn=collate_skip_none, worker_init_fn=worker_init)
        for batch in loader:
            if batch is None:
                continue
            xs.append(batch[0])
            ys.append(batch[1].numpy())
            for k in batch[2].tolist():
                names.append(part.items[k][0].source_name(part.items[k][1]))
                p = partner[where[k]]
                photo_names.append(val_ds.items[p][0].source_name(val_ds.items[p][1]) if p >= 0 else "")
    return torch.cat(xs), np.concatenate(ys), np.asarray(names), np.asarray(photo_names)


def sweep_train_loader(base: TrainConfig, train_ds: DetectionDataset, sampler, device: torch.device) -> DataLoader:
    """The one training DataLoader every variant of a sweep shares (``benchmarks/loader_speed.py``
    times the same one): ``base``'s batch size in its loader parts (``TrainConfig.loader_batch``,
    joined again by ``train_one_epoch``) and loader options, ``sampler`` (or shuffling),
    the last short batch dropped where a whole one exists."""
    return DataLoader(train_ds, batch_size=base.loader_batch()[0], sampler=sampler, shuffle=sampler is None,
                      drop_last=len(sampler if sampler is not None else train_ds) >= base.batch_size,
                      **loader_kwargs(base, device))


@dataclass(frozen=True)
class TrainItems:
    """What the variants' masks read of each training item, read once for every variant:
    stem, source name, root folder name and aligned partner (``aligned_partners``, -1: none)."""
    stems: list[str]
    sources: list[str]
    roots: list[str]
    partner: list[int]

    @classmethod
    def of(cls, ds: DetectionDataset) -> "TrainItems":
        return cls(stems=[src.stem(i) for src, i in ds.items], sources=[src.source_name(i) for src, i in ds.items],
                   roots=[getattr(src, "name", "") for src, _ in ds.items], partner=aligned_partners(ds))


def variant_masks(name: str, extras: dict, items: TrainItems, val_sources: np.ndarray, val_photo_sources: np.ndarray,
                  split_seed: int) -> tuple[torch.Tensor | None, np.ndarray | None]:
    """A variant's training items (``train_fraction``, ``exclude_sources``,
    ``exclude_roots``; None = all) and the validation challenges it is selected and
    calibrated on (None = all). A round trip goes where its photo goes (``items.partner``):
    a fold that holds out a kind of real photo neither trains on those photos through a
    decoder, labelled fake, nor is selected on them."""
    excluded, excluded_roots = set(extras["exclude_sources"]), set(extras["exclude_roots"])
    val_mask = None
    if excluded:
        val_mask = ~(np.isin(val_sources, sorted(excluded)) | np.isin(val_photo_sources, sorted(excluded)))
    if extras["train_fraction"] >= 1.0 and not excluded and not excluded_roots:
        return None, val_mask
    for kind, unknown in (("sources (CLASS/NAME)", excluded - set(items.sources)), ("roots (folder names)", excluded_roots - set(items.roots))):
        if unknown:
            logger.warning("variant %s excludes %s, which the training data does not have as %s", name, sorted(unknown), kind)
    out = [so in excluded or r in excluded_roots for so, r in zip(items.sources, items.roots)]
    out = [o or (p >= 0 and out[p]) for o, p in zip(out, items.partner)]
    mask = torch.tensor([in_subset(st, extras["train_fraction"], split_seed) and not o for st, o in zip(items.stems, out)],
                        dtype=torch.bool)
    return mask, val_mask


def ensemble_report(logits: dict[str, np.ndarray], labels: np.ndarray, max_members: int = 3) -> list[dict]:
    """Validation metrics of every mean-logit ensemble of 2..``max_members`` variants, best first.

    Every combination is tried (a sweep has a handful of variants): ranking members by
    their own accuracy would miss that diverse pairs (a residual model with a raw-pixel
    one) beat pairs of the two best look-alikes."""
    from itertools import combinations

    out = []
    names = sorted(logits)
    for k in range(2, min(max_members, len(names)) + 1):
        for combo in combinations(names, k):
            m = compute_metrics(labels, apply_calibration(np.mean([logits[n] for n in combo], axis=0)))
            out.append({"members": list(combo), **{key: m[key] for key in ("accuracy", "ap", "real_accuracy", "fake_accuracy", "brier")}})
    out.sort(key=lambda r: (-r["accuracy"], -(r["ap"] if r["ap"] is not None else 0.0), len(r["members"])))  # AP: None with one class
    return out


def report_from_dir(sweep_dirs: str | Path | list, max_members: int = 3, out: str | Path | None = None,
                    top: int | None = None) -> dict:
    """Rebuild the per-variant and ensemble validation report of one or more sweep folders
    from the ``val_logits_best.npy`` files they wrote (also for sweeps stopped early).

    One folder: written to ``<folder>/sweep_report.json``. Several folders (variants named
    ``<folder>/<variant>``, to pair members across sweeps): written to ``out`` if given.
    Their validation draws must be the same images in the same order. ``top`` keeps only
    the best ensembles in the report (many folders make thousands of combinations)."""
    dirs = [Path(d) for d in ([sweep_dirs] if isinstance(sweep_dirs, (str, Path)) else sweep_dirs)]
    logits, labels, variants = {}, None, {}
    for sweep_dir in dirs:
        for f in sorted(sweep_dir.glob("*/val_logits_best.npy")):
            arr = np.load(f)
            if labels is not None and (len(arr[1]) != len(labels) or not np.array_equal(arr[1], labels)):
                raise ValueError(f"{f} was validated on other challenges than the rest; cannot compare or pair it")
            name = f.parent.name if len(dirs) == 1 else f"{sweep_dir.name}/{f.parent.name}"
            logits[name], labels = arr[0], arr[1]
            hist = json.loads((f.parent / "history.json").read_text()) if (f.parent / "history.json").exists() else []
            # the epoch the run kept: by balanced accuracy (histories before it was recorded: plain)
            best = max(hist, key=lambda r: r.get("val_balanced_acc") if r.get("val_balanced_acc") is not None
                       else r["val_acc"]) if hist else {}
            variants[name] = {"best_epoch": best.get("epoch"), "epochs_run": hist[-1]["epoch"] + 1 if hist else 0,
                              **{k: v for k, v in compute_metrics(labels, apply_calibration(arr[0])).items() if k != "per_source"}}
    if not logits:
        raise FileNotFoundError(f"no */val_logits_best.npy under {[str(d) for d in dirs]}")
    ensembles = ensemble_report(logits, labels, max_members)
    rep = {"variants": variants, "ensembles": ensembles[:top] if top else ensembles, "ensembles_tried": len(ensembles),
           "val_challenges": int(len(labels))}
    if len(dirs) > 1:
        rep["sweeps"] = [str(d) for d in dirs]
    target = Path(out) if out else (dirs[0] / "sweep_report.json" if len(dirs) == 1 else None)
    if target is not None:
        target.write_text(json.dumps(rep, indent=2))
    return rep


def run_sweep(spec: SweepSpec, beside: dict[str, str] | None = None) -> dict:
    """Train every variant of ``spec`` on one data stream; returns the summary written to
    ``sweep.json``. With ``base.resume`` the sweep goes on from its ``sweep_state.pt`` (a
    finished one is left as it is and its summary returned). The first Ctrl-C stops once the
    epoch in progress is trained, validated and its state saved (``stopped: interrupted``); a
    variant whose loss or weights stop being finite numbers stops training and keeps its best
    (``failed``), the others go on. With ``base.overwrite`` the earlier sweep in the folder is
    set aside once the data has been read and removed only once this one has saved an epoch
    (``EarlierRun``): put back if it ends before (every variant diverged in its first epoch: the
    summary returned then says ``earlier_sweep_kept``, the folder holds none of this sweep's files).
    ``beside``: files (name: text) a new sweep writes into its folder with its ``spec.json``
    (``generalisation.py``'s ``logo_spec.json``), after the earlier sweep's are set aside, so they go
    and come back with them."""
    options = spec.check()  # the base's and every variant's options, checked before the data is read
    base = spec.base
    with (hold_run_folder(base.run_dir),  # one sweep per folder at a time
          EarlierRun(base.run_dir, overwrite=bool(base.overwrite and not base.resume), kind=SWEEP) as earlier):
        summary = _run_sweep(spec, options, earlier, beside or {})
    if earlier.restored:  # (its files were removed as the block ended): nothing may be written there for this sweep
        summary["earlier_sweep_kept"] = str(base.run_dir)
    return summary


def _run_sweep(spec: SweepSpec, options, earlier: EarlierRun, beside: dict[str, str]) -> dict:
    """``run_sweep``'s body, run while this process holds the sweep's folder; ``earlier`` keeps an
    ``--overwrite``'s earlier sweep aside until this one saves an epoch (its state, or at its end its summary)."""
    base = spec.base
    out_dir = base.run_dir
    recover_earlier_run(out_dir, SWEEP)  # what a killed --overwrite sweep left, settled before the folder is judged
    # a folder holding a sweep is refused, never replaced silently (unless --resume / --overwrite)
    prepare_sweep_folder(out_dir, base.overwrite, base.resume)
    if base.resume:
        check_same_sweep(out_dir, spec.to_dict())  # a finished one too: its results must be the ones asked for
        done_before = finished_sweep(out_dir)
        if done_before is not None:
            print(f"--resume: the sweep in {out_dir} already ran to its end; nothing to train", flush=True)
            return done_before
        remove_partial_states(out_dir)
    device = prepare_device(base)
    seed_everything(base.seed)
    amp_dtype = resolve_amp(base.amp, device)
    amp_used = amp_name(amp_dtype)  # recorded beside ``amp`` as asked: bf16 asked on a CPU trains fp32
    say_amp(base.amp, amp_used, device, records="sweep.json and the variants' checkpoints")

    train_ds, val_ds, counts = build_datasets(base, history=carries_history(options))
    # only once the data has been read: a typo in --data never costs the earlier sweep; --overwrite sets it aside
    # until this sweep saves an epoch (put back if it ends before)
    earlier.set_aside()
    out_dir.mkdir(parents=True, exist_ok=True)
    if not base.resume:
        (out_dir / "spec.json").write_text(json.dumps(spec.to_dict(), indent=2))
        for name, text in beside.items():
            atomic_write_text(out_dir / name, text)
    print("training set:\n" + train_ds.summary(), flush=True)
    t0 = time.time()
    val_x, val_y, val_sources, val_photo_sources = load_val_challenges(val_ds, spec.val_seeds, base.workers,
                                                                       challenge=base.val_challenge)
    drawn = f"seeds {spec.val_seeds}" if base.val_challenge else "once, plain (val_challenge false)"
    print(f"validation: {len(val_y)} pictures ({len(val_ds)} images, {drawn}) in {time.time() - t0:.1f}s", flush=True)
    if device.type == "cuda":
        val_x = val_x.to(device)

    items = TrainItems.of(train_ds)
    aux = {by: aux_classes(items.sources, by) for by in {cfg.aux_by for cfg, _ in options.values() if cfg.aux_weight}}
    variants = []
    for name, (cfg, extras) in options.items():
        # held-out sources never decide this variant's epoch or calibration
        mask, val_mask = variant_masks(name, extras, items, val_sources, val_photo_sources, base.split_seed)
        variants.append(_Variant(name, cfg, extras, device, amp_dtype, mask=mask,
                                 training_images=len(train_ds), val_mask=val_mask, aux=aux.get(cfg.aux_by),
                                 content=content_classes(items.sources, None if mask is None else mask.tolist())
                                 if cfg.adv_weight else None))
    teacher_paths = [v.teacher for v in variants if v.teacher]
    teachers = Teachers(teacher_paths, device, base.channels_last) if teacher_paths else None
    for v in variants:
        n_params = sum(p.numel() for p in v.model.parameters())
        print(f"variant {v.name}: {n_params:,} parameters, {v.training_images} training images, options {spec.variants[v.name]}", flush=True)
    sampler = train_sampler(base, train_ds)
    sampler_gen = getattr(sampler, "generator", None)  # family / class-balanced samplers draw from their own stream
    for v in variants:  # pair_patches variants crop each round trip and its photo alike
        v.align_pairs(train_ds.partner)
    loader = sweep_train_loader(base, train_ds, sampler, device)
    # The time budget is fitted twice from training epochs: after epochs 0-1 (a cautious guess:
    # they carry the start-up of the workers and cuDNN), then on a steady window of epochs, which
    # may give back the epochs the guess took. Validations usually start later (val_from), so
    # after each one the run is fitted again, shorter only, with what epochs and validations
    # now cost (epochs_within).
    plan, window = planned_shape(spec, variants), max(spec.val_every, 2)
    shortened = False  # by a fit after a validation: the steady fit may not lengthen the run again
    epoch, images_seen, elapsed_before, window_s = -1, 0, 0.0, None
    if base.resume:
        state = load_sweep_state(out_dir, [v.name for v in variants])
        for v in variants:
            restore_variant(v, state["variants"][v.name])
        torch.set_rng_state(state["torch_rng"])
        if sampler_gen is not None and "sampler_rng" in state:
            sampler_gen.set_state(state["sampler_rng"])
        epoch, images_seen, elapsed_before = int(state["epoch"]), int(state["images_seen"]), float(state["elapsed_s"])
        window_s = float(state["window_s"]) if "window_s" in state else None
        plan, shortened = state["plan"], bool(state["shortened"])
        spec.base.epochs, spec.val_from = int(state["epochs"]), int(state["val_from"])
        for v in variants:
            v.cfg.epochs = spec.base.epochs
        print(f"resumed {out_dir} after epoch {epoch} of {base.epochs} ({elapsed_before:.0f}s trained before)", flush=True)
    t_start = time.time() - elapsed_before  # the time budget counts the time before a resume
    t_window = None if window_s is None else t_start + window_s  # a resumed sweep fits as if never stopped
    recent: list[float] = []  # training seconds of the latest epochs
    last_state = time.time()
    stopped = None  # why the sweep ended before its last epoch, if it did

    def place() -> dict:
        return {"epochs": base.epochs, "val_from": spec.val_from, "plan": plan, "shortened": shortened,
                "elapsed_s": time.time() - t_start, "images_seen": images_seen,
                "window_s": None if t_window is None else t_window - t_start,
                "sampler_rng": sampler_gen.get_state() if sampler_gen is not None else None}

    # first Ctrl-C or SIGTERM (timeout, docker stop, systemctl stop): finish the epoch, save, calibrate, stop; second: now
    ctrl_c = GracefulStop(signals=(signal.SIGINT, signal.SIGTERM)).install()
    try:
        while epoch + 1 < base.epochs:
            epoch += 1
            if spec.time_budget_s and epoch == 2:
                t_window = time.time()
                elapsed = t_window - t_start
                fit_epochs(spec, variants, budget_epochs(spec.time_budget_s, elapsed, 2, elapsed / 2, plan["epochs"]),
                           f"{elapsed / 2:.1f}s per epoch over epochs 0-1", plan, now=epoch)
            elif spec.time_budget_s and t_window is not None and epoch == 2 + window:
                steady = (time.time() - t_window) / window
                longest = spec.base.epochs if shortened else plan["epochs"]
                fit_epochs(spec, variants, budget_epochs(spec.time_budget_s, time.time() - t_start, epoch, steady, longest),
                           f"{steady:.1f}s per epoch over epochs 2-{epoch - 1}", plan, now=epoch)
            train_ds.set_epoch(epoch)
            lrs = {v.name: v.begin_epoch(epoch) for v in variants}
            t_epoch = time.time()
            done = train_one_epoch(variants, loader, base, epoch, device,
                                   context=(lambda x: teachers.logits(x, amp_dtype)) if teachers else None)
            images_seen += done["images"]
            if not done["images"]:
                if epoch == 0:  # nothing ever trained: the data, not the run
                    raise unreadable_training_data(epoch, done)
                stopped = "no-images"
                logger.error("epoch %d: no training picture could be read: stopped; the variants keep their best "
                             "checkpoints and %s the state after epoch %d", epoch, SWEEP_STATE, epoch - 1)
                break
            for v in variants:
                if not v.failed and v.diverged():
                    v.failed = f"non-finite at epoch {epoch} (lr {lrs[v.name]:.3g})"
                    logger.error("%s: the training loss or weights are not finite numbers at epoch %d (lr %.3g): it "
                                 "stops training and keeps its best checkpoint; the other variants go on",
                                 v.name, epoch, lrs[v.name])
            if all(v.failed for v in variants):
                stopped = "non-finite"
                break
            for v in variants:
                v.end_epoch(epoch)
            epoch_s = time.time() - t_epoch
            recent = (recent + [epoch_s])[-window:]
            improved = False
            if validates(epoch, base.epochs, spec.val_from, spec.val_every):
                line = [f"epoch {epoch} ({epoch_s:.1f}s)"]
                t_val = time.time()
                for v in variants:
                    if v.failed:
                        continue
                    logits = _logits(v.eval_model, val_x, device, amp_dtype, base.channels_last)
                    sel = v.val_mask if v.val_mask is not None else slice(None)
                    m = val_metrics(logits[sel], val_y[sel])
                    rec = epoch_record(epoch, v.mean_loss, lrs[v.name], m, epoch_s, averaged=v.swa is not None,
                                       **v.aux_record)
                    v.history.append(rec)
                    log_epoch(v.writer, rec)
                    meta_extra = {"metrics": {"val": m, "epoch": epoch, "val_seeds": spec.val_seeds},
                                  "train_options": {**v.cfg.to_dict(), **options[v.name][1], "sweep": str(out_dir),
                                                    "amp_resolved": amp_used, **v.aux_meta}}
                    improved |= save_if_best(v.best, selection_score(m), epoch, m, v.eval_model, v.cfg.arch, v.run_dir,
                                             meta_extra, logits, val_y, val_mask=v.val_mask)
                    line.append(f"{v.name} loss={rec['train_loss']:.3f} acc={m['accuracy']:.3f}")
                print(" | ".join(line), flush=True)
                for v in variants:
                    v.writer.flush()
                    (v.run_dir / "history.json").write_text(json.dumps(v.history, indent=1))
                # (from epoch 2 on; one that shortens the run before the steady fit binds it: the steady
                # fit, blind to validations, may then only shorten, so the schedule never rises and falls)
                if spec.time_budget_s and t_window is not None and epoch < base.epochs - 1:
                    val_s, train_s = time.time() - t_val, sum(recent) / len(recent)
                    end = epochs_within(spec.time_budget_s, time.time() - t_start, epoch + 1, train_s, val_s,
                                        spec.val_from, spec.val_every, base.epochs)
                    why = f"{train_s:.1f}s per epoch, {val_s:.1f}s per validation"
                    shortened = shortened or end < base.epochs
                    if end == epoch + 1:
                        stop_after(spec, variants, epoch, why)
                    elif end < base.epochs:
                        fit_epochs(spec, variants, end, why, plan, now=epoch + 1)
            else:
                print(f"epoch {epoch} ({epoch_s:.1f}s) " + " | ".join(f"{v.name} loss={v.mean_loss:.3f}"
                                                                     for v in variants if not v.failed), flush=True)
            # the state goes with every new best (so the best files and the state agree), at least
            # every state_every_s, and on Ctrl-C; not after the last epoch (the sweep is done)
            if epoch < base.epochs - 1 and (improved or ctrl_c.requested or time.time() - last_state >= spec.state_every_s):
                save_sweep_state(out_dir, epoch, variants, place())
                last_state = time.time()
                earlier.drop()  # --overwrite: this sweep can be resumed, the earlier sweep's files go for good
            if ctrl_c.requested and epoch < base.epochs - 1:
                stopped = ctrl_c.reason  # interrupted (Ctrl-C) or terminated (SIGTERM)
                print(f"stopped after epoch {epoch} ({ctrl_c.name}): {out_dir} keeps every variant's best and the state after "
                      "this epoch; the same command with --resume (RESUME=1 for the scripts) goes on from there",
                      file=sys.stderr, flush=True)
                break
    finally:  # also when the sweep fails: Ctrl-C must stop a process that is not training any more
        ctrl_c.uninstall()
    seconds = time.time() - t_start

    results, best_logits = {}, {}
    for v in variants:
        plot_curves(v.history, v.run_dir / "curves.png")
        v.writer.close()
        calib = None
        if (v.run_dir / "val_logits_best.npy").exists():
            try:
                calib = calibrate_checkpoint(v.run_dir / "model_epoch_best.pth", v.run_dir / "val_logits_best.npy",
                                             v.val_mask, real_target=base.calibration_real_target,
                                             min_per_class=0)  # research runs on the pools: whatever they validate on
            except CalibrationDataError as e:  # its validation pictures hold one class: kept uncalibrated
                logger.warning("%s: calibration not fitted: %s", v.name, e)
            best_logits[v.name] = np.load(v.run_dir / "val_logits_best.npy")[0]
        results[v.name] = {"options": spec.variants[v.name], "best": v.best.record, "calibration": calib,
                           "checkpoint": str(v.run_dir / "model_epoch_best.pth") if v.name in best_logits else None,
                           "parameters": sum(p.numel() for p in v.model.parameters()),
                           "training_images": v.training_images, "swa_start": v.swa_start}
        if v.failed:
            results[v.name]["failed"] = v.failed
    summary = {"variants": results, "ensembles": (ensemble_report(best_logits, val_y, spec.ensemble_members)[:20]
                                if len(best_logits) > 1 and spec.ensemble_members > 1 else []),
               "val_challenges": int(len(val_y)), "val_seeds": spec.val_seeds, "epochs": base.epochs,
               "planned_epochs": plan["epochs"], "val_from": spec.val_from,
               "seconds": seconds, "images_per_second": images_seen / max(seconds, 1e-9), "splits": counts,
               "amp": base.amp, "amp_resolved": amp_used}  # as asked, and as it ran
    if stopped:
        summary.update(stopped=stopped, epochs_run=epoch + (stopped in ("interrupted", "terminated")))
    atomic_write_text(out_dir / "sweep.json", json.dumps(summary, indent=2))
    if best_logits:  # --overwrite: a variant saved a best epoch, and the summary says so; else the earlier sweep comes back
        earlier.drop()
    if not stopped and (out_dir / SWEEP_STATE).exists():  # ran to its end (and says so): nothing left to resume
        (out_dir / SWEEP_STATE).unlink()
    print("\nvariant                best-epoch  val-acc  val-AP  real-acc  fake-acc")
    for name, r in sorted(results.items(), key=lambda kv: -(kv[1]["best"].get("accuracy") or 0.0)):
        b = r["best"]
        f = lambda key: "   -  " if b.get(key) is None else f"{b[key]:.4f}"  # noqa: E731 - one class absent
        print(f"{name:<22} {b.get('epoch', '-'):>10}  {f('accuracy')}  {f('ap')}  {f('real_accuracy')}    {f('fake_accuracy')}"
              + (f"  ({r['failed']})" if r.get("failed") else ""))
    for e in summary["ensembles"]:
        print(f"ensemble of {len(e['members'])}: acc {e['accuracy']:.4f} AP {e['ap']:.4f} real {e['real_accuracy']:.4f}  {e['members']}")
    print(f"sweep: {len(variants)} variants x {base.epochs} epochs in {seconds:.0f}s ({summary['images_per_second']:.0f} img/s shared)"
          + (f"; stopped ({stopped})" if stopped else ""))
    return summary


#: The files that tell where a sweep in its folder stands (``interrupted_sweep_message``).
SWEEP_MARKS = ("spec.json", SWEEP_STATE, "sweep.json")


def sweep_marks(out_dir: Path) -> dict:
    """``file_marks`` of ``SWEEP_MARKS`` in ``out_dir``, taken before a command runs its sweep,
    so that ``interrupted_sweep_message`` tells the files the command wrote from those of an
    earlier sweep (which ``--overwrite`` sets aside only once the data has been read, and removes
    only once this sweep has saved an epoch)."""
    return file_marks(out_dir / name for name in SWEEP_MARKS)


def interrupted_sweep_message(out_dir: Path, before: dict, resume: bool = False, overwrite: bool = False) -> str:
    """The line a sweep stopped at once by Ctrl-C (or SIGTERM: ``StopSignal``) ends with, instead of a KeyboardInterrupt
    traceback (a second press while it trains, the first one having asked to finish the epoch;
    or any press while it reads its data or calibrates its variants at the end): what ``out_dir``
    keeps and how to go on, read from the folder as the sweep left it. ``before``: its
    ``sweep_marks`` when the command started; a file unchanged since is an earlier sweep's,
    unless the command resumes that sweep."""
    how = stop_name()  # Ctrl-C, or SIGTERM while a StopSignal is handled
    if getattr(sys.exc_info()[1], "earlier_run_kept", None):  # set by EarlierRun as the stop left ``run_sweep``
        return (f"stopped ({how}) before this sweep saved an epoch: {out_dir} holds the earlier sweep's files as they "
                "were (--overwrite replaces them only once an epoch is saved); run the command again")
    written = {path.name for path in written_since(before)}
    ours = {name for name in SWEEP_MARKS if (out_dir / name).exists() and (resume or name in written)}
    if "sweep.json" in ours and finished_sweep(out_dir) is not None:
        return f"stopped ({how}) after the sweep ran to its end: {out_dir / 'sweep.json'} holds its results"
    if SWEEP_STATE in ours:
        again = "the same command with --resume" + (" in place of --overwrite" if overwrite else "")
        return (f"stopped at once ({how}): what was trained since {SWEEP_STATE} was last written is lost; {out_dir} "
                "keeps that state and every variant's best checkpoint (calibrated when the sweep ends); "
                f"{again} (RESUME=1 for the scripts) goes on from there")
    if "spec.json" in ours:  # under way, but no epoch has written the state yet (or the only epoch was the last)
        return (f"stopped ({how}) before the sweep wrote {SWEEP_STATE}: {out_dir} holds nothing to resume; run the "
                "command again" + (" with --overwrite" if holds_sweep(out_dir) and not overwrite else ""))
    return f"stopped ({how}) before the sweep began training: nothing to resume was saved; run the command again"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--spec", help="sweep spec JSON (see the module docstring)")
    p.add_argument("--report", metavar="SWEEP_DIR", nargs="+",
                   help="only rebuild the validation report of sweep folder(s); several folders pair members across sweeps")
    p.add_argument("--report_out", default=None, help="where the report of several folders goes (JSON)")
    p.add_argument("--report_top", type=int, default=None, help="keep only this many of the best ensembles in the report")
    p.add_argument("--max_members", type=int, default=3, help="largest ensemble the report tries")
    p.add_argument("--data", nargs="+", default=None, help="overrides base.data")
    p.add_argument("--name", default=None, help="overrides base.name (the output folder under checkpoints_dir)")
    p.add_argument("--checkpoints_dir", default=None)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--device", default=None)
    p.add_argument("--max_steps_per_epoch", type=int, default=None, help="cap batches per epoch (quick tests)")
    p.add_argument("--val_seeds", type=int, nargs="+", default=None, metavar="SEED",
                   help="overrides the spec's val_seeds: the validator-challenge draws of the validation split every "
                        "variant is chosen on (one draw, --val_seeds 0, makes a quick try of a large spec quick)")
    p.add_argument("--val_every", type=positive_int, default=None,
                   help="overrides the spec's val_every (validate every N epochs; at least 1)")
    p.add_argument("--progress", type=parse_bool, default=None)
    p.add_argument("--overwrite", action="store_true", default=None,
                   help="replace the sweep already in the output folder (without it, or --resume, such a folder is refused)")
    p.add_argument("--resume", action="store_true", default=None,
                   help="go on with the sweep in the output folder from its sweep_state.pt (stopped by Ctrl-C or lost); "
                        "the spec must be the same, only where and how fast it runs and where its data lives may change")
    return p


def main(argv=None) -> dict:
    """Run the sweep the command line ``argv`` describes (or only rebuild a report); returns its
    summary. A usage error exits 2 with one line; a sweep that stopped early exits with
    ``EXIT_STATUS`` once its summary is written (130 after a first Ctrl-C); a Ctrl-C that stops
    the command at once ends it with one line and exit status 130, whenever it comes."""
    try:
        p = build_parser()
        args = p.parse_args(argv)
        if args.resume and args.overwrite:
            p.error("--resume continues the sweep in the folder, --overwrite replaces it: pass one of them")
    except KeyboardInterrupt:
        exit_interrupted_while_starting()
    if args.report:
        try:
            rep = report_from_dir(args.report[0] if len(args.report) == 1 else args.report, args.max_members,
                                  args.report_out, args.report_top)
            for name, v in sorted(rep["variants"].items(), key=lambda kv: -kv[1]["accuracy"]):
                print(f"{name:<22} epoch {v['best_epoch']:>4}  acc {v['accuracy']:.4f}  AP {v['ap']:.4f}  real {v['real_accuracy']:.4f}")
            for e in rep["ensembles"][:12]:
                print(f"ensemble acc {e['accuracy']:.4f} AP {e['ap']:.4f} real {e['real_accuracy']:.4f}  {e['members']}")
        except KeyboardInterrupt:
            exit_interrupted("stopped (Ctrl-C) while the report was built; run the command again")
        return rep
    try:
        if not args.spec:
            p.error("--spec is required (or --report SWEEP_DIR)")
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        overrides = ("data", "name", "checkpoints_dir", "epochs", "workers", "device", "max_steps_per_epoch", "progress",
                     "overwrite", "resume")
        raw = read_spec(args.spec)
        if isinstance(raw, dict):  # spec-level overrides (a resumed sweep still refuses another value than it ran with)
            raw = {**raw, **{k: getattr(args, k) for k in ("val_seeds", "val_every") if getattr(args, k) is not None}}
        spec = SweepSpec.from_dict(raw, **{k: getattr(args, k) for k in overrides})
        spec.check()  # (run_sweep checks again; here a bad value is a usage error, as a bad spec is)
        before = sweep_marks(spec.base.run_dir)
    except KeyboardInterrupt:
        exit_interrupted_while_starting()
    except ConfigError as e:  # a spec that cannot be read or run (SpecError), or an option value no run can use;
        usage_error(p, str(e))  # any other ValueError is a bug: its traceback, not a usage line
    try:
        with sigterm_as_interrupt():  # SIGTERM: as Ctrl-C (a first one finishes the epoch; exit 143 once written)
            summary = run_sweep(spec)
    except (RunFolderError, TrainingDataError) as e:
        usage_error(p, str(e))
    except KeyboardInterrupt:  # a second Ctrl-C (the first finishes the epoch), or one before the first epoch or after the last
        exit_interrupted(interrupted_sweep_message(spec.base.run_dir, before, bool(spec.base.resume),
                                                   bool(spec.base.overwrite)))
    exit_if_stopped(summary)
    return summary


def exit_if_stopped(summary: dict) -> None:
    """Exit with ``EXIT_STATUS`` if the sweep ended early (after its variants' best checkpoints
    were calibrated and ``sweep.json`` written), so a script running it stops there instead of
    scoring a sweep that did not run to its end."""
    if summary.get("stopped") in EXIT_STATUS:
        raise SystemExit(EXIT_STATUS[summary["stopped"]])


if __name__ == "__main__":
    main()
