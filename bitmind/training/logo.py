"""Leave-one-family-out (LOGO): how well a training recipe detects generators it never saw.

Why: the miner is scored on generators and cameras absent from every training pool, so
the number that matters is detection of a family the model was NOT trained on, at a
real-photo accuracy that does not give the reward away. In-pool validation rewards
memorising the pool and cannot see that.

Three steps, so the GPU does only what needs a GPU:

1. ``logo_sweep_spec``: one sweep (``bitmind.training.sweep``, one shared data stream)
   whose variants are, for each recipe, the model trained on everything plus one model
   per held-out family (``exclude_sources`` = every source of that family, in every
   root). A held-out family never decides a fold's epoch or calibration either (the
   sweep validates each variant on the others only), so its 0.5 threshold is fixed on
   the validation split of the other families.
2. ``score_models``: every checkpoint's calibrated P(AI) for every picture of the
   evaluation regimes, saved in one ``.npz`` (per item: source, split, label):
   ``validator`` = ready-made validator challenges (``sn34-validator``) as they are;
   ``crops`` = the crop pools through the validator pipeline (seeded, ``--challenge``).
3. ``analyse``: per fold, the held-out family's detection rate (all its pictures: none
   was trained on), its ROC AUC against the real test photos, and real-photo accuracy
   per real kind on the test split; also the detection at the threshold that keeps 90 %
   of validation real photos. ``summary`` gives each recipe's mean and worst held-out
   detection and real accuracy. A ``real-<kind>`` fold holds out a kind of real photo
   instead (an unseen camera): its figure is the share of those photos called real.
   Baseline models (e.g. the shipped one) are scored per family without folds: every
   family they never trained on is held out for them.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from bitmind.data import open_source, sources_of_family, split_of
from bitmind.data.families import GENERATOR_FAMILIES, family_of, is_aligned

logger = logging.getLogger(__name__)

FOLD_SEP = ".minus-"
REGIMES = ("validator", "crops")
#: A fold named ``real-<kind>`` holds out the real photos ``real/<kind>`` (an unseen camera
#: or kind of photo) instead of a generator family; the name stays a valid folder name.
REAL_FOLD_PREFIX = "real-"
#: A LOGO spec's keys its sweep spec takes as they are (``SweepSpec.from_dict`` reads them).
SWEEP_KEYS = ("base", "val_seeds", "val_from", "val_every", "time_budget_s", "ensemble_members", "state_every_s")
#: Every top-level key of a LOGO spec (``logo_sweep_spec`` reads them all); any other is a typo,
#: refused (``check_logo_keys``), but one starting with ``_`` (``_doc``): a comment.
LOGO_KEYS = frozenset({*SWEEP_KEYS, "recipes", "folds", "fold_recipes", "controls", "control_folds"})
#: The keys of one entry of a LOGO spec's ``controls`` (``logo_sweep_spec``, ``_control_excludes``).
CONTROL_KEYS = frozenset({"exclude", "keep", "exclude_roots", "folds", "recipes"})


def held_out_sources(fold: str, sources) -> list[str]:
    """The sources a fold holds out: every source of a generator (or aligned) family, or
    for ``real-<kind>`` the real photos ``real/<kind>``."""
    if fold.startswith(REAL_FOLD_PREFIX):
        return sources_of_family("real/" + fold[len(REAL_FOLD_PREFIX):], sources)
    return sources_of_family(fold, sources)


# ---------------------------------------------------------------------------- 1. the sweep
def check_logo_keys(logo: dict) -> None:
    """A ``SpecError`` (one line, a usage error) naming each top-level key of the LOGO spec ``logo``
    that no code reads, with the closest known one: a typo (``val_seed``, ``time_budget``) would
    run with the default and nobody would notice. Keys starting with ``_`` are comments."""
    from bitmind.training.sweep import SpecError, check_spec_keys  # (sweep imports torch; logo_metrics imports this module)

    if "variants" in logo and "recipes" not in logo:
        raise SpecError("a sweep spec (it has 'variants', not 'recipes'): run it with python -m bitmind.training.sweep")
    check_spec_keys(logo, LOGO_KEYS, "LOGO spec")
    controls = logo.get("controls") or {}
    if not isinstance(controls, dict):
        raise SpecError(f"the LOGO spec's controls must be a JSON object of {{name: {{...}}}}, got {type(controls).__name__}")
    for name, control in controls.items():  # a typo there ("exclue") would make the control its recipe again
        if not isinstance(control, dict):
            raise SpecError(f"control {name!r} must be a JSON object ({', '.join(sorted(CONTROL_KEYS))}), "
                            f"got {type(control).__name__}")
        check_spec_keys(control, CONTROL_KEYS, f"control {name!r}")


def sources_in(roots) -> list[str]:
    """Every ``CLASS/NAME`` source of the given roots (a directory listing, no decoding). A root
    that holds no pictures, or an ``hf:`` root without its role, is a ``TrainingDataError`` (a usage
    error, as in training); a folder that is not there, an OSError."""
    from bitmind.training.trainer import TrainingDataError

    names = set()
    for root in roots:
        try:
            src = open_source(root)
        except ValueError as e:  # (open_source judges the root: what it raises is about the data)
            raise TrainingDataError(str(e)) from None
        names.update(src.source_name(i) for i in range(len(src)))
    return sorted(names)


def default_folds(sources) -> list[str]:
    """The generator families present in ``sources``, then ``aligned`` if round trips are."""
    fams = [f for f in GENERATOR_FAMILIES if sources_of_family(f, sources)]
    return fams + (["aligned"] if any(is_aligned(s) for s in sources) else [])


def _control_excludes(control: dict, sources) -> list[str]:
    """Sources a control variant drops: every source of its ``exclude`` families except
    those of its ``keep`` families (e.g. exclude ``aligned``, keep ``aligned-taef2``)."""
    drop = {s for fam in control.get("exclude", []) for s in sources_of_family(fam, sources)}
    keep = {s for fam in control.get("keep", []) for s in sources_of_family(fam, sources)}
    return sorted(drop - keep)


def logo_sweep_spec(logo: dict, sources) -> dict:
    """A sweep spec (see ``bitmind.training.sweep``) from a LOGO spec::

        {"base": {...}, "val_seeds": [...], "val_every": 2,
         "recipes": {"<recipe>": {<variant overrides>}},
         "folds": ["sdxl", "real-faces", ...],   # default: every generator family present
         "fold_recipes": ["<recipe>", ...],       # recipes that get every fold (default: all)
                                                  # or {"<recipe>": ["sdxl", ...] | null}: folds per recipe
                                                  # (null: the spec's "folds")
         "controls": {"<name>": {"exclude": ["aligned"], "keep": [], "exclude_roots": [], "folds": true,
                                 "recipes": [...]}},
         "control_folds": true}                   # default of each control's "folds"

    Variant names: ``<recipe>``, ``<recipe>.minus-<family>``, ``<recipe>.<control>`` and
    ``<recipe>.<control>.minus-<family>``. A fold ``real-<kind>`` holds out the real photos
    ``real/<kind>`` (``held_out_sources``): how the recipe treats a camera it never saw.
    A ``SpecError`` (a ValueError) for a spec it cannot expand: an unknown key (``check_logo_keys``), no
    recipe, ``fold_recipes`` naming a recipe it lacks, a recipe name with a '.'."""
    from bitmind.training.sweep import SpecError

    check_logo_keys(logo)
    recipes = logo.get("recipes") or {}
    if not recipes:
        raise SpecError("a LOGO spec needs at least one recipe")
    folds = logo.get("folds") or default_folds(sources)
    fold_recipes = logo.get("fold_recipes", list(recipes))  # [] = no folds (a ship run)
    if not isinstance(fold_recipes, dict):
        fold_recipes = {r: None for r in fold_recipes}
    unknown = set(fold_recipes) - set(recipes)
    if unknown:
        raise SpecError(f"fold_recipes names recipes the spec does not have: {sorted(unknown)}")
    fold_recipes = {r: folds if f is None else list(f) for r, f in fold_recipes.items()}
    controls = logo.get("controls") or {}
    variants = {}
    for r, ov in recipes.items():
        if FOLD_SEP in r or "." in r:
            raise SpecError(f"recipe name {r!r} must not contain '.'")
        arms = [(r, ov, set(), True)]  # (name, overrides, excluded sources, with folds)
        for c, cdef in controls.items():
            if r in cdef.get("recipes", [r]):
                ov_c = {**ov, "exclude_roots": cdef["exclude_roots"]} if cdef.get("exclude_roots") else ov
                arms.append((f"{r}.{c}", ov_c, set(_control_excludes(cdef, sources)), cdef.get("folds", logo.get("control_folds", True))))
        for name, ov_arm, excl, with_folds in arms:
            excl = excl | set(ov.get("exclude_sources", []))
            variants[name] = {**ov_arm, "exclude_sources": sorted(excl)}
            if r not in fold_recipes or not with_folds:
                continue
            for fam in fold_recipes[r]:
                held = held_out_sources(fam, sources)
                if not held:
                    logger.warning("fold %s: no source of that family in the data; skipped", fam)
                    continue
                if set(held) <= excl:  # the arm never trains on that family anyway
                    continue
                variants[f"{name}{FOLD_SEP}{fam}"] = {**ov_arm, "exclude_sources": sorted(excl | set(held))}
    out = {k: v for k, v in logo.items() if k in SWEEP_KEYS}
    out["variants"] = variants
    every_fold = list(dict.fromkeys([*folds, *(f for fs in fold_recipes.values() for f in fs)]))
    out["logo"] = {"folds": every_fold, "recipes": list(recipes), "controls": list(controls)}
    return out


# ---------------------------------------------------------------------------- 2. scoring
def _overridden_base(base: dict, name: str, seed: int | None, overrides: dict) -> dict:
    """A spec's ``base`` with each override that is not None, ``seed`` as the training seed
    (if given) and ``name`` as the run's name."""
    base = {**base, **{k: v for k, v in overrides.items() if v is not None}, "name": name}
    if seed is not None:
        base["seed"] = seed
    return base


def logo_run_spec(logo: dict, name: str, seed: int | None = None, **overrides) -> dict:
    """The sweep spec a LOGO spec runs as once a command line has overridden its ``base``:
    each ``overrides`` value that is not None (data roots, epochs, device, ...) replaces the
    spec's, ``seed`` (``--train_seed``) the training seed, ``name`` the run's name; the folds
    are made from the sources found in the roots (``logo_sweep_spec``). One function for
    ``generalisation.py train`` and the benchmarks that must build the same sweep."""
    base = _overridden_base(logo.get("base", {}), name, seed, overrides)
    roots = base.get("data", []) + base.get("challenge_data", []) + base.get("train_data", [])
    return logo_sweep_spec({**logo, "base": base}, sources_in(roots))


def spec_with_overrides(raw: dict, name: str, seed: int | None = None, **overrides) -> dict:
    """The sweep spec a command builds from a spec file's JSON ``raw`` with its command
    line's overrides: a sweep spec (it has ``variants``, even an empty one, which the sweep
    then refuses as having none) gets its ``base`` overridden alike (values that are not None,
    ``seed`` as the training seed, ``name``); a LOGO spec becomes the sweep spec
    ``generalisation.py train`` runs (``logo_run_spec``: the roots decide the folds). One
    function for the benchmarks that must build the sweep a run would."""
    if "variants" not in raw:
        return logo_run_spec(raw, name, seed=seed, **overrides)
    return {**raw, "base": _overridden_base(raw.get("base", {}), name, seed, overrides)}


def scored_items(roots):
    """(source object, index, source name, split, label) of every picture of ``roots`` that
    ``score_models`` scores, in its order; aligned round trips only in the test split (their
    family has thousands)."""
    out = []
    for root in roots:
        src = open_source(root)
        for i in range(len(src)):
            name, split = src.source_name(i), split_of(src.stem(i))
            if is_aligned(name) and split != "test":
                continue
            out.append((src, i, name, split, src.label(i)))
    return out


def scored_resize_factors(roots, seed: int = 0):
    """How much the validator pipeline resized every picture of ``roots`` as ``score_models``
    scored them (same items, same per-picture RNG, ``ValidatorPipeline.resize_factor``; no
    pixels, no model), and the pictures' source names in that order: 1.0 for a plain crop.
    What the benchmarks that split a regime by resize (``benchmarks/logo_by_resize.py``,
    ``benchmarks/synthetic_learnability.py``) replay."""
    from bitmind.data import DetectionDataset
    from bitmind.image_transforms import ValidatorPipeline

    items = scored_items(roots)
    ds = DetectionDataset([(s, i) for s, i, *_ in items], seed=seed)
    pipe = ValidatorPipeline()
    factors = np.array([pipe.resize_factor(*src.load(i).size, ds.rng_for(k)) for k, (src, i, *_) in enumerate(items)])
    return factors, [name for _, _, name, *_ in items]


def resize_bins(factors: np.ndarray, edges) -> dict[str, np.ndarray]:
    """``{name: mask}`` of the pictures whose ``scored_resize_factors`` fall in each bin
    ``(lo, hi]`` of ``edges`` (then ``(last, inf)``); a first edge of 1.0 makes the crops sent
    at their native size a bin of their own, ``"x1 (not resized)"``."""
    bins, lo = {}, 0.0
    for hi in [*edges, np.inf]:
        bins["x1 (not resized)" if hi == 1.0 and lo == 0.0 else f"x{lo:g}-{hi:g}"] = (factors > lo) & (factors <= hi)
        lo = hi
    return bins


def pooled_name(variant: str, pool: str) -> str:
    """The arm an NPR scored with another ``pool`` becomes: ``patch96nopool.minus-gans``
    with ``top25`` -> ``patch96nopool_top25.minus-gans`` (a recipe with the same folds)."""
    recipe, sep, fold = variant.partition(FOLD_SEP)
    return f"{recipe}_{pool}{sep}{fold}"


def unpooled(variant: str) -> tuple[str, str | None]:
    """``pooled_name`` undone: ``patch96nopool_top25.minus-gans`` -> (``patch96nopool.minus-gans``,
    ``top25``), likewise ``_crop192``; a variant that is no such arm -> (itself, None)."""
    recipe, sep, fold = variant.partition(FOLD_SEP)
    base, _, pool = recipe.rpartition("_")
    if not base or view_of(pool) is None:
        return variant, None
    return f"{base}{sep}{fold}", pool


def view_of(name: str) -> tuple[str, object] | None:
    """How an arm of ``score --pools`` looks at a trained NPR without training it again:
    ``topNN`` -> ("pool", "topNN") (the mean of the NN % highest location logits);
    ``cropNNN`` -> ("center_crop", NNN) (the central NNN px only, ``center_square``);
    ``flip`` -> ("flip_mean", True) (the mean logit of the picture and its mirror); else None."""
    if name == "flip":
        return ("flip_mean", True)
    for prefix, key in (("top", "pool"), ("crop", "center_crop")):
        if name.startswith(prefix) and name[len(prefix):].isdigit():
            return (key, name) if key == "pool" else (key, int(name[len(prefix):]))
    return None


def regime_loader(items, regime: str, seed: int = 0, batch_size: int = 256, workers: int = 4):
    """The loader ``score_models`` reads ``items`` (from ``scored_items``) of one regime with,
    in their order, as uint8: ``validator`` files as they are; any other regime through the
    validator pipeline, seeded per picture by ``seed`` (so anything else read through it sees
    the same challenges the scores saw: ``benchmarks/residual_logo.py``)."""
    from torch.utils.data import DataLoader

    from bitmind.data import AsIs, DetectionDataset, collate_skip_none
    from bitmind.data.dataset import worker_init
    from bitmind.image_transforms import ValidatorPipeline

    ds = DetectionDataset([(s, i) for s, i, *_ in items], augment=AsIs() if regime == "validator" else ValidatorPipeline(),
                          seed=seed, uint8=True)
    return DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=workers, collate_fn=collate_skip_none,
                      worker_init_fn=worker_init)


def score_models(models: dict[str, str], regimes: dict[str, list[str]], out: str | Path, device: str = "auto",
                 seed: int = 0, workers: int = 4, batch_size: int = 256, pools: Sequence[str] = ()) -> Path:
    """Raw logits of each model (name -> checkpoint) for every picture of each regime
    (``validator``: files as they are; ``crops``: through the validator pipeline, seeded),
    into one ``.npz``: ``<regime>/source``, ``/split``, ``/label``, ``/<model>``, and each
    model's own calibration as ``calibration/<model>`` = (T, b). Raw logits, so that
    ``analyse`` can fix every fold's threshold the same way, on CPU. Each NPR (a model with
    ``logit_map``) is also scored with every view of ``pools`` (``topNN`` pools,
    ``cropNNN`` centre crops, ``flip``: ``view_of``, ``bitmind.models.npr``) as ``pooled_name(model,
    view)``; it has no stored calibration (its logits are on another scale), so ``analyse``
    fits one as for a fold. A model trained with an auxiliary family head (``aux_weight``)
    also gets ``aux/<regime>/<model>``, its head's class probabilities (float16, one row per
    picture), and ``aux_classes/<model>``, the classes: which known family an unseen
    generator's pictures are taken for (``benchmarks/aux_attribution.py``)."""
    import torch

    from bitmind.checkpoint import load_model
    from bitmind.common import resolve_amp, resolve_device
    from bitmind.inference import forward_logits, forward_outputs, to_model_input
    from bitmind.models.npr import center_square, has_aux_outputs, pool_logit_map

    dev = resolve_device(device)
    amp = resolve_amp("auto", dev)
    nets, aux_names = {}, {}
    for name, path in models.items():
        lm = load_model(path)
        nets[name] = (lm.model.to(dev).eval(), lm.temperature, lm.logit_bias)
        if has_aux_outputs(lm.meta) and lm.meta["train_options"].get("aux_classes"):  # a head whose classes the file names (a shipped file has none)
            aux_names[name] = list(lm.meta["train_options"]["aux_classes"])
    pooled = {n: [(pooled_name(n, p), p) for p in pools] for n, (net, _, _) in nets.items() if pools and hasattr(net, "logit_map")}
    arrays = {}
    for regime, roots in regimes.items():
        if not roots:
            continue
        items = scored_items(roots)
        loader = regime_loader(items, regime, seed=seed, batch_size=batch_size, workers=workers)
        probs = {n: np.full(len(items), np.nan, dtype=np.float32) for n in [*nets, *(d for arms in pooled.values() for d, _ in arms)]}
        aux = {n: np.full((len(items), len(c)), np.nan, dtype=np.float16) for n, c in aux_names.items()}
        with torch.no_grad():
            for batch in loader:
                if batch is None:
                    continue
                x, _, k, _ = batch
                x = to_model_input(x, dev)
                for n, (net, t, b) in nets.items():
                    outputs = forward_outputs(net, x, dev, amp, channels_last=False)
                    probs[n][k.numpy()] = outputs[:, 0].cpu().numpy()
                    if n in aux:
                        aux[n][k.numpy()] = torch.softmax(outputs[:, 1:1 + len(aux_names[n])], dim=1).cpu().numpy()
                    if n in pooled:
                        lmap = None
                        for d, p in pooled[n]:
                            key, value = view_of(p)
                            if key == "center_crop":
                                z = forward_logits(net, center_square(x, value), dev, amp, channels_last=False)
                            elif key == "flip_mean":  # as NPR.forward with flip_mean: the mean with the mirror's
                                z = (outputs[:, 0] + forward_logits(net, x.flip(-1), dev, amp, channels_last=False)) / 2
                            else:  # a net that serves flip_mean pools each view's map, as its forward does
                                if lmap is None:
                                    views = (x, x.flip(-1)) if getattr(net, "flip_mean", False) else (x,)
                                    with torch.autocast(dev.type, dtype=amp or torch.bfloat16, enabled=amp is not None):
                                        lmap = [net.logit_map(v).float() for v in views]
                                z = sum(pool_logit_map(m, p) for m in lmap) / len(lmap)
                            probs[d][k.numpy()] = z.cpu().numpy()
        arrays[f"{regime}/source"] = np.asarray([it[2] for it in items])
        arrays[f"{regime}/split"] = np.asarray([it[3] for it in items])
        arrays[f"{regime}/label"] = np.asarray([it[4] for it in items], dtype=np.int8)
        for n, p in probs.items():
            arrays[f"{regime}/{n}"] = p
        for n, a in aux.items():
            arrays[f"aux/{regime}/{n}"] = a
        print(f"scored {len(items)} {regime} pictures with {len(nets)} models", flush=True)
    for n, (_, t, b) in nets.items():
        arrays[f"calibration/{n}"] = np.asarray([t, b], dtype=np.float64)
    for n, c in aux_names.items():
        arrays[f"aux_classes/{n}"] = np.asarray(c)
    return save_scores(out, arrays)


def save_scores(out: str | Path, arrays: dict[str, np.ndarray]) -> Path:
    """``arrays`` as the compressed ``.npz`` ``out`` (its folder made if missing), written
    whole (``atomic_write``: a temporary file beside it, then renamed over it), so a crash or
    a Ctrl-C mid-write leaves the old file as it was, never a truncated one for ``analyse`` or
    ``--resume`` to read. The temporary file is written through an open file, so ``np.savez``
    does not add ``.npz`` to its name."""
    from bitmind.common import atomic_write

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)

    return atomic_write(out, write)


# ---------------------------------------------------------------------------- 3. analysis
def pos_neg_auc(pos: np.ndarray, neg: np.ndarray) -> float | None:
    """ROC AUC of scores ``pos`` (should be higher) against ``neg``; None if either is empty."""
    if not len(pos) or not len(neg):
        return None
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(np.r_[np.ones(len(pos)), np.zeros(len(neg))], np.r_[pos, neg]))


def _rate(x) -> float | None:
    """The mean of ``x`` (a share, when ``x`` is booleans), or None for no values."""
    return float(np.mean(x)) if len(x) else None


def score_fold(probs: np.ndarray, sources: np.ndarray, splits: np.ndarray, labels: np.ndarray, held_out: list[str],
               excluded: list[str]) -> dict:
    """One model in one regime: detection of the held-out sources (all splits), AUC of
    them vs the real test photos, real accuracy per real kind (test split), in-pool test
    accuracy per trained fake source, and detection at the validation threshold that
    keeps 90 % of real photos. When the held-out sources are real photos (a ``real-<kind>``
    fold), ``heldout_real_accuracy`` is the share of them called real and ``heldout_auc``
    separates the trained fakes' test pictures from them; the detection fields are None."""
    ok = ~np.isnan(probs)
    held = ok & np.isin(sources, held_out)
    held_real = held & (labels == 0)
    held_fake = held & (labels == 1)
    real_test = ok & (labels == 0) & (splits == "test") & ~np.isin(sources, excluded)
    real_val = ok & (labels == 0) & (splits == "val") & ~np.isin(sources, excluded)
    thr90 = float(np.quantile(probs[real_val], 0.90)) if real_val.any() else 0.5
    per_real = {s: _rate(probs[real_test & (sources == s)] <= 0.5) for s in sorted(set(sources[real_test]))}
    per_held = {s: _rate(probs[held_fake & (sources == s)] > 0.5) for s in sorted(set(sources[held_fake]))}
    per_held.update({s: _rate(probs[held_real & (sources == s)] <= 0.5) for s in sorted(set(sources[held_real]))})
    seen_fake = ok & (labels == 1) & (splits == "test") & ~np.isin(sources, excluded)
    per_seen = {s: _rate(probs[seen_fake & (sources == s)] > 0.5) for s in sorted(set(sources[seen_fake]))}
    fake_det = _rate(probs[seen_fake] > 0.5)
    real_acc = _rate(probs[real_test] <= 0.5)
    real_fold = bool(held_real.any()) and not held_fake.any()
    return {"test_fake_detection": fake_det, "test_auc": pos_neg_auc(probs[seen_fake], probs[real_test]),
            "test_balanced_accuracy": (fake_det + real_acc) / 2 if fake_det is not None and real_acc is not None else None,
            "heldout_detection": None if real_fold else _rate(probs[held_fake] > 0.5), "heldout_n": int(held.sum()),
            "heldout_auc": pos_neg_auc(probs[seen_fake], probs[held_real]) if real_fold else pos_neg_auc(probs[held_fake], probs[real_test]),
            "heldout_detection_at_real90": None if real_fold else _rate(probs[held_fake] > thr90), "threshold_real90": thr90,
            "heldout_real_accuracy": _rate(probs[held_real] <= 0.5) if real_fold else None,
            "real_accuracy": real_acc, "real_n": int(real_test.sum()),
            "worst_real_kind": min((v for v in per_real.values() if v is not None), default=None),
            "per_heldout_source": per_held, "per_real_kind": per_real, "per_seen_fake_source": per_seen}


def model_probabilities(data, name: str, excluded: list[str] | None, regimes=REGIMES) -> dict[str, np.ndarray]:
    """P(AI) of one model in each regime. A sweep model (``excluded`` given) gets its
    threshold fixed here, all folds alike: a class-balanced Platt fit on the validation
    pictures of every regime, its held-out sources left out. A baseline (``excluded`` is
    None) keeps the calibration stored in its own file: it is scored as it is served (a
    pooled baseline has none: ``analyse`` passes the fakes it never saw as ``excluded``)."""
    from bitmind.calibration import apply_calibration

    present = [r for r in regimes if f"{r}/{name}" in data]
    if excluded is None:
        t, b = data[f"calibration/{name}"] if f"calibration/{name}" in data else (1.0, 0.0)
    else:
        t, b = fold_calibration(data, name, excluded, regimes)
    return {r: apply_calibration(data[f"{r}/{name}"], t, b) for r in present}


def fold_calibration(data, name: str, excluded, regimes=REGIMES, real_target: float | None = None) -> tuple[float, float]:
    """``(temperature, bias)`` the protocol gives a sweep model: a class-balanced Platt fit
    on its validation pictures of every regime, its ``excluded`` sources left out; with
    ``real_target`` the boundary calls that share of those real pictures real
    (``bitmind.calibration.real_target_bias``)."""
    from bitmind.calibration import fit_platt, real_target_bias

    z, y, _ = validation_logits(data, name, excluded, regimes)
    t, b = fit_platt(z, y, class_balanced=True)
    return (t, real_target_bias(z, y, t, real_target)) if real_target else (t, b)


def validation_logits(data, name: str, excluded=(), regimes=REGIMES) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """One model's raw logits and labels on the validation pictures of every regime it was
    scored on (``excluded`` sources left out), and those regimes: what every calibration
    of the protocol is fitted on, for the folds and for the shipped model alike."""
    zs, ys, used = [], [], []
    for r in regimes:
        if f"{r}/{name}" not in data:
            continue
        val = (data[f"{r}/split"] == "val") & ~np.isin(data[f"{r}/source"], list(excluded)) & ~np.isnan(data[f"{r}/{name}"])
        zs.append(data[f"{r}/{name}"][val].astype(np.float64))
        ys.append(data[f"{r}/label"][val])
        used.append(r)
    if not zs:
        raise KeyError(f"{name!r} has no scores")
    return np.concatenate(zs), np.concatenate(ys), used


def _fold_of(variant: str) -> tuple[str, str | None]:
    return tuple(variant.split(FOLD_SEP, 1)) if FOLD_SEP in variant else (variant, None)  # type: ignore[return-value]


def parse_ensembles(items) -> dict[str, list[str]]:
    """``--ensemble NAME=ARM+ARM[+...]`` -> name -> member arms."""
    out = {}
    for it in items or []:
        name, _, members = it.partition("=")
        if not name or "+" not in members:
            raise ValueError(f"--ensemble wants NAME=ARM+ARM[+...], got {it!r}")
        out[name] = members.split("+")
    return out


def add_ensembles(data, variants: dict, ensembles: dict[str, list[str]]) -> tuple[dict, dict]:
    """Score ensembles of recipes without training anything: for each ``name -> [arm, ...]``
    and each fold (and the everything model) that every member has, the mean of the
    members' raw logits becomes a variant ``<name>[.minus-<family>]`` with the members'
    exclusions, calibrated and analysed like any other. LOGO then says whether an ensemble
    generalises better than its members before one is ever served (it costs CPU time)."""
    data, variants = dict(data), dict(variants)
    folds = [None] + sorted({fam for _, fam in map(_fold_of, variants) if fam})
    for name, members in ensembles.items():
        if len(members) < 2 or FOLD_SEP in name or "." in name:
            raise ValueError(f"ensemble {name!r} needs a name without '.' and >= 2 members, got {members}")
        for fam in folds:
            parts = [m if fam is None else f"{m}{FOLD_SEP}{fam}" for m in members]
            if not all(p in variants for p in parts):
                continue
            vname = name if fam is None else f"{name}{FOLD_SEP}{fam}"
            excl = sorted({s for p in parts for s in variants[p].get("exclude_sources", [])})
            variants[vname] = {"exclude_sources": excl, "members": parts}
            for r in REGIMES:
                if all(f"{r}/{p}" in data for p in parts):
                    data[f"{r}/{vname}"] = np.mean([data[f"{r}/{p}"] for p in parts], axis=0)
    return data, variants


def analyse(npz: str | Path, spec: dict, baselines: dict[str, list[str]] | None = None,
            ensembles: dict[str, list[str]] | None = None) -> dict:
    """Per-fold and summary figures from ``score_models``' file and the sweep's spec
    (``spec.json``: each variant's ``exclude_sources``). ``baselines``: model name ->
    the fake sources it was trained on (every other family is held out for it);
    ``ensembles``: see ``add_ensembles``."""
    data, variants = add_ensembles(np.load(npz), spec["variants"], ensembles or {})
    folds = spec.get("logo", {}).get("folds") or []
    out: dict = {"regimes": {}, "summary": {}}
    probs = {v: model_probabilities(data, v, list(ov.get("exclude_sources", []))) for v, ov in variants.items()
             if any(f"{r}/{v}" in data for r in REGIMES)}
    for n, trained in (baselines or {}).items():  # stored calibration; else (a pooled arm) fitted on what it knows
        unknown = sorted({s for r in REGIMES if f"{r}/source" in data for s in set(data[f"{r}/source"].tolist())
                          if s.startswith("fake/") and s not in trained})
        probs[n] = model_probabilities(data, n, None if f"calibration/{n}" in data else unknown)
    for regime in REGIMES:
        if f"{regime}/source" not in data:
            continue
        sources, splits, labels = (data[f"{regime}/{k}"] for k in ("source", "split", "label"))
        all_sources = sorted(set(sources))
        reg: dict = {"folds": {}, "baselines": {}, "in_pool": {}}
        for v, ov in variants.items():
            if f"{regime}/{v}" not in data:
                continue
            arm, fam = _fold_of(v)
            excluded = list(ov.get("exclude_sources", []))
            if fam is None:  # the model trained on everything of its arm: in-pool test figures
                reg["in_pool"][arm] = score_fold(probs[v][regime], sources, splits, labels, [], excluded)
                continue
            held = held_out_sources(fam, all_sources)
            reg["folds"].setdefault(arm, {})[fam] = score_fold(probs[v][regime], sources, splits, labels, held, excluded)
        for name, trained in (baselines or {}).items():
            if f"{regime}/{name}" not in data:
                continue
            trained_fams = {family_of(s) for s in trained}
            reg["in_pool"][f"baseline:{name}"] = score_fold(probs[name][regime], sources, splits, labels, [], [])
            reg["baselines"][name] = {
                fam: score_fold(probs[name][regime], sources, splits, labels, sources_of_family(fam, all_sources), [])
                for fam in folds if fam not in trained_fams and sources_of_family(fam, all_sources)}
        out["regimes"][regime] = reg
        for arm, per_fam in list(reg["folds"].items()) + [(f"baseline:{n}", f) for n, f in reg["baselines"].items()]:
            out["summary"].setdefault(arm, {})[regime] = _summarise(per_fam)
    return out


def _summarise(per_fam: dict) -> dict:
    """One arm's folds in one regime: mean (and worst) held-out detection and real accuracy
    over its generator folds; over its ``real-<kind>`` folds, if any, the mean (and worst)
    share of the unseen kind's photos called real."""
    gen = {f: r for f, r in per_fam.items() if r["heldout_real_accuracy"] is None}

    def known(key, rows=gen):
        return [r[key] for r in rows.values() if r[key] is not None]

    det = known("heldout_detection")
    generators = [r["heldout_detection"] for f, r in gen.items() if not f.startswith("aligned") and r["heldout_detection"] is not None]
    unseen_real = known("heldout_real_accuracy", per_fam)
    out = {"mean_heldout_detection": _rate(det), "worst_heldout_detection": float(np.min(det)) if det else None,
           "mean_heldout_detection_generators": _rate(generators),
           "mean_heldout_detection_at_real90": _rate(known("heldout_detection_at_real90")),
           "mean_heldout_auc": _rate(known("heldout_auc")),
           "real_accuracy": _rate(known("real_accuracy")),
           "worst_real_kind": min(known("worst_real_kind"), default=None), "folds": len(gen)}
    if unseen_real:
        out.update({"mean_unseen_real_accuracy": _rate(unseen_real), "worst_unseen_real_accuracy": float(np.min(unseen_real)),
                    "real_folds": len(unseen_real)})
    return out


def load_spec(sweep_dir: str | Path) -> dict:
    return json.loads((Path(sweep_dir) / "spec.json").read_text())


def select_recipe(summary: dict, regime: str = "validator", min_real: float = 0.90) -> dict:
    """The recipe (arm) to ship, by LOGO: the best mean held-out GENERATOR detection among
    arms whose fold models keep ``min_real`` of real photos; if none does, the best mean of
    the two (a detector that calls everything fake is no answer). Baselines are not candidates.
    A run with ``real-<kind>`` folds only has nothing to select by: ``recipe`` is then None."""
    rows = []
    for arm, per in summary.items():
        s = per.get(regime)
        if arm.startswith("baseline:") or not s or s.get("mean_heldout_detection_generators") is None:
            continue
        rows.append((arm, s["mean_heldout_detection_generators"], s["real_accuracy"] or 0.0))
    if not rows:
        return {"recipe": None, "regime": regime, "rule": "no arm has generator folds: nothing to select by"}
    ok = [r for r in rows if r[2] >= min_real]
    arm, det, real = max(ok, key=lambda r: r[1]) if ok else max(rows, key=lambda r: (r[1] + r[2]) / 2)
    rule = (f"best mean held-out generator detection with real accuracy >= {min_real}" if ok
            else f"no arm keeps {min_real} of real photos: best mean of held-out detection and real accuracy")
    return {"recipe": arm, "regime": regime, "rule": rule, **summary[arm][regime]}


def ship(npz: str | Path, variant: str, checkpoint: str | Path, out: str | Path, description: str = "",
         real_target: float | None = None, pool: str | None = None) -> dict:
    """Write ``checkpoint`` (the sweep variant trained on everything) to ``out`` with the
    calibration the analysis uses: a class-balanced Platt fit on the validation pictures of
    every regime in the scores file (ready-made challenges as sent, crop pools through the
    validator pipeline), its boundary moved to ``real_target`` of the validation real
    photos if given. ``pool`` (the view of a ``pooled_name`` arm, ``topNN``, ``cropNNN`` or
    ``flip``: ``variant`` is then that arm) goes into the model's config (``pool``,
    ``center_crop`` or ``flip_mean``),
    so it serves as it was scored. A model trained with an auxiliary family head ships without
    it (``detector_only``): the miner serves the first output alone, and the file then has a
    plain ``base.pth``'s shapes, so a running miner swaps it in place; the sweep's checkpoint
    keeps the head. Returns the calibration record."""
    from bitmind.calibration import calibrate_logits, store_calibration
    from bitmind.models.npr import detector_only

    try:
        z, y, used = validation_logits(np.load(npz), variant)
    except KeyError:
        raise KeyError(f"{variant!r} has no scores in {npz}") from None
    record = calibrate_logits(z, y, keep_if_better=False, real_target=real_target, split="val", regimes=used,
                              min_per_class=0)  # the pools' validation (hundreds of each class), as the sweep's

    def as_served(state: dict, meta: dict) -> tuple[dict, dict]:
        state, meta = detector_only(state, meta)
        if pool:
            key, value = view_of(pool) or ("pool", pool)
            meta = {**meta, "config": {**(meta.get("config") or {}), key: value}}
        return state, meta

    updates = {"description": description} if description else {}
    return store_calibration(checkpoint, record, out, transform=as_served, **updates)
