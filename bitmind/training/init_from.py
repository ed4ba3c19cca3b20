"""Fine-tuning from a checkpoint (``--init_from``): the network options it was built with.

Why: a checkpoint's weights fit only a network built like it, and some options change
the computation without changing a single weight's shape (``stem_pool``, ``pool``,
``input`` modes of equal width), so a strict ``load_state_dict`` alone would accept the
shipped ``base.pth`` (no stem pool) into a network with the pool and fine-tune something
else than was asked. Checkpoints describe themselves, so a fine-tune takes its network
options, and the patch size it was trained with, from the file unless they are given
explicitly; an explicit option that contradicts the file's network is an error.

Its serve-time options (``center_crop``, ``flip_mean``: ``bitmind.models.npr.SERVING_OPTIONS``)
are carried over too. No training option sets them, so a fine-tune of ``base_crop192.pth`` was
built, validated and saved without the crop: it served whole pictures (slower, and not what
was validated before), and ``model_info --serving`` said it could hot-swap over the crop file.
Now ``init_weights`` hands them to ``load_weights`` with the weights, which sets them on the
network it loads into (one log line names them): training, the per-epoch validation (the score
reported and the calibration fitted on its logits) and every checkpoint saved then answer as
the file served. (A ``--resume`` of such a run loads its own state into a network built from
its options and does not pass through here: the trainer must carry them on resume itself.)

The user's problems here (an ensemble file, a checkpoint of an architecture this code does not
build, an option that contradicts the file, weights that do not fit the network) are
``ConfigError``s (ValueErrors), a missing file a ``FileNotFoundError`` and an unreadable one
``read_checkpoint``'s ``CheckpointError``: ``parse_config`` reports those as usage errors and
lets any other exception keep its traceback.
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from bitmind.training.config import ConfigError, TrainConfig

logger = logging.getLogger(__name__)

#: ``TrainConfig`` options that decide how the network computes: a checkpoint's weights
#: only mean what they meant with the values it was built with.
STRUCTURE_KEYS = ("arch", "layers", "width", "input", "stem_pool", "pool")
#: Options taken from the checkpoint when not given: the structure, plus dropout (part of
#: the model config) and the training patch size (part of the recipe).
ADOPTED_KEYS = (*STRUCTURE_KEYS, "dropout", "patch_size")


def folder_given(path: str | Path) -> str | None:
    """Why ``--init_from path`` cannot be read where ``path`` is a folder (a run folder given for
    its model), in one line naming the model file inside it to give instead: its
    ``model_epoch_best.pth`` where it has one, else the ``.pth`` files it holds (a sweep's: its
    variants' ``model_epoch_best.pth``); None for anything but a folder. Why: a run folder was
    refused as "no such file", although it exists; ``bitmind.eval`` and the miner say "is a folder,
    not a model file"."""
    folder = Path(path)
    if not folder.is_dir():
        return None
    try:
        best = folder / "model_epoch_best.pth"
        found = ([best] if best.is_file() else sorted(p for p in folder.glob("*.pth") if p.is_file())
                 or sorted(p for p in folder.glob("*/model_epoch_best.pth") if p.is_file()))
    except OSError:  # an unreadable folder: nothing to name in it
        found = []
    if not found:
        return (f"--init_from {path} is a folder, not a model file, and holds no .pth model: give the model file "
                "(a run's model_epoch_best.pth)")
    more = f" (or {', '.join(str(p) for p in found[1:3])}{', ...' if len(found) > 3 else ''})" if len(found) > 1 else ""
    return f"--init_from {path} is a folder, not a model file: give the model inside it, --init_from {found[0]}{more}"


def read_init_from(path: str | Path) -> tuple[dict, dict]:
    """The ``--init_from`` checkpoint's ``(state, meta)``; a missing file is named as the option's
    (a ``FileNotFoundError``), a folder too, with the model file in it to give instead (an
    ``IsADirectoryError``: ``folder_given``), one ``read_checkpoint`` cannot read is its ``CheckpointError``."""
    from bitmind.checkpoint import read_checkpoint

    if (folder := folder_given(path)) is not None:
        raise IsADirectoryError(folder)
    if not Path(path).is_file():
        raise FileNotFoundError(f"--init_from {path}: no such file")
    return read_checkpoint(path)


def checkpoint_options(path: str | Path, meta: dict | None = None) -> dict:
    """The ``TrainConfig`` values of ``ADOPTED_KEYS`` that the checkpoint at ``path`` was
    built and trained with (keys its config leaves out read as the constructor's
    defaults; ``patch_size`` only when its training options record one). ``meta``: the
    file's metadata when the caller has already read it. An ensemble file, or one of an
    architecture this code does not build, is a ``ConfigError``."""
    from bitmind.checkpoint import DEFAULT_ARCH
    from bitmind.models import available_models, config_defaults, config_type_problem

    if meta is None:
        _, meta = read_init_from(path)
    arch = meta.get("arch") or DEFAULT_ARCH  # a bare state dict: the reference NPR, as load_model reads it
    if arch == "ensemble":
        raise ConfigError(f"--init_from {path}: an ensemble file; fine-tune one of its member networks instead")
    if arch not in available_models():  # config_defaults' KeyError was a traceback
        raise ConfigError(f"--init_from {path}: architecture {arch!r} is not one this code builds "
                          f"(registered: {', '.join(available_models())})")
    saved = meta.get("config") or {}
    if not isinstance(saved, dict):  # a TypeError in the merge below was a traceback
        raise ConfigError(f"--init_from {path}: its metadata's config is a {type(saved).__name__}, not a JSON object")
    if (problem := config_type_problem(arch, saved)) is not None:  # width "8" was a TypeError in TrainConfig.check
        raise ConfigError(f"--init_from {path}: its metadata's {problem}")
    config = {**config_defaults(arch), **saved}
    out = {"arch": arch, **{k: config[k] for k in ADOPTED_KEYS if k in config}}
    if "layers" in out:
        out["layers"] = list(out["layers"])
    patch = (meta.get("train_options") or {}).get("patch_size")
    if patch is not None:
        out["patch_size"] = int(patch)
    return out


def option_differences(cfg: TrainConfig, want: dict, keys) -> dict:
    """``{option: (cfg's value, want's value)}`` for each of ``keys`` that ``want`` sets to
    another value (lists and tuples compare alike): what a checkpoint or a run's ``opt.json``
    says against what a command line asks."""
    return {k: (getattr(cfg, k), want[k]) for k in keys if k in want and _same(getattr(cfg, k)) != _same(want[k])}


def _same(v):
    return list(v) if isinstance(v, (list, tuple)) else v


def adopt_checkpoint_options(cfg: TrainConfig, explicit: set[str], meta: dict | None = None) -> TrainConfig:
    """``cfg`` with the ``--init_from`` checkpoint's options wherever the command line did
    not set them (``explicit``: the option names it did set). An explicit structural option
    that differs from the checkpoint's is a ``ConfigError`` (a ValueError): those weights cannot mean it.
    ``meta``: the file's metadata when the caller has already read it."""
    if not cfg.init_from:
        return cfg
    want = checkpoint_options(cfg.init_from, meta)
    clash = option_differences(cfg, want, [k for k in STRUCTURE_KEYS if k in explicit])
    if clash:
        raise ConfigError(f"--init_from {cfg.init_from} was built with "
                          + ", ".join(f"{k}={w!r}" for k, (_, w) in clash.items()) + "; the command line asks for "
                          + ", ".join(f"{k}={g!r}" for k, (g, _) in clash.items())
                          + ": leave those options out (they are read from the checkpoint)")
    adopted = {k: v for k, v in want.items() if k not in explicit and _same(getattr(cfg, k)) != _same(v)}
    if adopted:
        logger.info("--init_from %s: options read from the checkpoint: %s", cfg.init_from,
                    ", ".join(f"{k}={v!r}" for k, v in adopted.items()))
    return dataclasses.replace(cfg, **adopted)


def check_matches_checkpoint(cfg: TrainConfig, meta: dict) -> None:
    """A ``ConfigError`` (a ValueError) unless ``cfg`` builds the network the ``--init_from``
    checkpoint (whose metadata is ``meta``) was built as (for configs made in code or in sweep
    specs, which bypass the command line)."""
    clash = option_differences(cfg, checkpoint_options(cfg.init_from, meta), STRUCTURE_KEYS)
    if clash:
        raise ConfigError(f"--init_from {cfg.init_from}: the checkpoint was built with "
                          + ", ".join(f"{k}={w!r}" for k, (_, w) in clash.items()) + ", this run builds "
                          + ", ".join(f"{k}={g!r}" for k, (g, _) in clash.items()))


def weights_mismatch(model, state: dict) -> str:
    """Why ``state`` does not load into ``model`` (strictly), in one line: the keys it lacks,
    the keys it has that the network does not, and the tensors of another shape (a few of
    each named); "" if it fits. Why: ``load_state_dict``'s own error lists every key, a
    screenful for a file of another network."""
    want = model.state_dict()

    def few(names) -> str:
        names = list(names)
        return ", ".join(names[:3]) + (f", ... ({len(names)} in all)" if len(names) > 3 else "")

    missing = [k for k in want if k not in state]
    extra = [k for k in state if k not in want]
    shapes = [f"{k} {tuple(getattr(state[k], 'shape', ()))} vs {tuple(want[k].shape)}" for k in want
              if k in state and tuple(getattr(state[k], "shape", ())) != tuple(want[k].shape)]
    parts = [f"missing {few(missing)}" if missing else "", f"unexpected {few(extra)}" if extra else "",
             f"other shapes: {few(shapes)}" if shapes else ""]
    return "; ".join(p for p in parts if p)


class InitWeights(dict):
    """An ``--init_from`` state dict (``init_weights``) with the serve-time options of the file
    it came from (``serving``: ``{"center_crop": 192}``), which ``load_weights`` sets on the
    network it loads the weights into. A dict, so any caller that loads a state dict takes it."""

    def __init__(self, state: dict, serving: dict | None = None):
        super().__init__(state)
        self.serving = dict(serving or {})


def serving_options(meta: dict, what: str = "--init_from") -> dict:
    """The serve-time options (``bitmind.models.npr.SERVING_OPTIONS``) a checkpoint's npr
    network answers with, those set only (``{"center_crop": 192}``; ``{}`` for a file served
    as built). Their types are ``checkpoint_options``' to check (``config_type_problem``); a
    centre crop too small for any network is a ``ConfigError`` naming ``what``."""
    from bitmind.models.npr import SERVING_OPTIONS, check_center_crop

    config = meta.get("config") or {}
    if (meta.get("arch") or "npr") != "npr" or not isinstance(config, dict):
        return {}
    out = {k: config[k] for k in SERVING_OPTIONS if config.get(k)}
    try:
        check_center_crop(out.get("center_crop", 0))
    except ValueError as e:
        raise ConfigError(f"{what}: its config's {e}") from None
    return out


def _carried(meta: dict, what: str) -> dict:
    """The serve-time options a fine-tune takes from its checkpoint: all those it sets, except
    any the training options can set themselves (a ``TrainConfig`` field of that name: then
    the command line, or the checkpoint through ``adopt_checkpoint_options``, decides)."""
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    return {k: v for k, v in serving_options(meta, what).items() if k not in fields}


def load_weights(model, state: dict, what: str) -> None:
    """``model.load_state_dict(state, strict=True)``, a ``ConfigError`` (a ValueError) naming
    ``what`` (the file, with its option) and the mismatch (``weights_mismatch``) in one line if
    the weights do not fit the network, instead of torch's RuntimeError listing every key.
    ``state`` from ``init_weights`` (an ``InitWeights``) also sets the serve-time options of the
    file it came from on ``model`` (``bitmind.models.npr.set_serving_options``), said in one line."""
    problem = weights_mismatch(model, state)
    if problem:
        raise ConfigError(f"{what}: its weights do not fit the network these options build ({problem})")
    model.load_state_dict(state, strict=True)
    serving = getattr(state, "serving", None)
    if serving:
        from bitmind.models.npr import set_serving_options

        if not hasattr(model, "config") or not all(hasattr(model, k) for k in serving):
            raise ConfigError(f"{what}: the file serves with {serving}, which a {type(model).__name__} network cannot")
        set_serving_options(model, **serving)
        logger.info("%s: serve-time options carried over from the checkpoint (training, validation and the "
                    "checkpoints saved use them): %s", what, ", ".join(f"{k}={v!r}" for k, v in serving.items()))


def init_weights(cfg: TrainConfig, checkpoint: tuple[dict, dict] | None = None) -> InitWeights:
    """The ``--init_from`` checkpoint's detector weights (an auxiliary head dropped), after
    checking that ``cfg`` builds the network it was built as (``check_matches_checkpoint``),
    with the serve-time options it answers with (``InitWeights.serving``: ``load_weights`` sets
    them on the network). ``checkpoint``: its ``(state, meta)`` when the caller has already read it."""
    from bitmind.checkpoint import read_checkpoint
    from bitmind.models.npr import detector_only

    if checkpoint is None and (folder := folder_given(cfg.init_from)) is not None:  # a config made in code, a sweep spec
        raise IsADirectoryError(folder)
    state, meta = checkpoint or read_checkpoint(cfg.init_from)
    check_matches_checkpoint(cfg, meta)
    # a file trained with an auxiliary head: fine-tuning starts from its detector
    return InitWeights(detector_only(state, meta)[0], _carried(meta, f"--init_from {cfg.init_from}"))


def check_init_weights(cfg: TrainConfig, checkpoint: tuple[dict, dict] | None = None) -> TrainConfig:
    """``cfg`` if its ``--init_from`` weights load into the network it builds, else a
    ``ConfigError`` (a ValueError) in one line. Why: a file that says nothing of its network
    (a bare or foreign state dict: read as the default NPR) or whose weights do not match what
    its metadata says passed the option checks and failed with a RuntimeError listing every key
    once the data had been read, minutes into a large run; now the command stops before the data."""
    if not cfg.init_from:
        return cfg
    from bitmind.models import build_model

    # a plain dict: the serve-time options are checked (init_weights) but set on the network the
    # run trains, not on this one (which would say so in the log a second time)
    load_weights(build_model(cfg.arch, **cfg.model_config()), dict(init_weights(cfg, checkpoint)), f"--init_from {cfg.init_from}")
    return cfg
