"""Calibration-free held-out metrics of one LOGO fold model, for comparing two runs.

Why a module: ``benchmarks/logo_paired.py`` (is run B better than run A, beyond the
pictures' noise?) and ``benchmarks/logo_seed_noise.py`` (how far apart do two runs land
when only the training seed differs?) must measure a fold the same way, or the second could
not tell how to read the first. AUC of the held-out fakes against the test real photos, and
detection at the threshold that keeps 0.90 of the validation real photos (interpolated
between raw logits), as ``bitmind.training.logo.score_fold`` defines them.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from bitmind.report import read_report
from bitmind.training.logo import FOLD_SEP, REAL_FOLD_PREFIX

METRICS = ("auc", "at_real90")


def fold_sets(spec: dict, arm: str, real_folds: bool) -> dict[str, list[str]]:
    """Fold name -> its held-out sources, for ``arm``'s generator folds (or camera folds)."""
    prefix = arm + FOLD_SEP
    out = {}
    for name, v in spec["variants"].items():
        fold = name[len(prefix):]
        if name.startswith(prefix) and fold.startswith(REAL_FOLD_PREFIX) == real_folds:
            out[fold] = list(v.get("exclude_sources", []))
    return out


def by_source(folds: dict[str, list[str]], present: np.ndarray) -> dict[str, tuple[str, list[str], list[str]]]:
    """One row per held-out source of every fold that has pictures in ``present``:
    ``FOLD:SOURCE`` -> (the fold, its held-out sources, [that source])."""
    have = set(present.tolist())
    return {f"{f}:{src.partition('/')[2] or src}": (f, held, [src]) for f, held in folds.items() for src in held if src in have}


def fold_metrics(z: np.ndarray, sources: np.ndarray, splits: np.ndarray, labels: np.ndarray, held_out: list[str],
                 only: list[str] | None = None) -> dict:
    """AUC and detection at real 0.90 of one fold model on (resampled) pictures, as
    ``logo.score_fold`` defines them; for a camera fold, AUC of the trained fakes' test
    pictures against the held-out photos and the share of those photos kept real. ``only``:
    of the held-out sources, only these count as the held-out pictures (the others are still
    kept out of the threshold and the negatives)."""
    ok = ~np.isnan(z)
    held = ok & np.isin(sources, held_out)
    real_val = ok & (labels == 0) & (splits == "val") & ~held
    thr = float(np.quantile(z[real_val], 0.90)) if real_val.any() else 0.0
    scored = held if only is None else held & np.isin(sources, only)
    held_fake, held_real = scored & (labels == 1), scored & (labels == 0)
    if held_fake.any():
        pos, neg = z[held_fake], z[ok & (labels == 0) & (splits == "test") & ~held]
        at90 = float((pos > thr).mean())
    else:  # a camera fold: trained fakes' test pictures against the unseen photos
        pos, neg = z[ok & (labels == 1) & (splits == "test") & ~np.isin(sources, held_out)], z[held_real]
        at90 = float((neg <= thr).mean()) if len(neg) else np.nan
    if not len(pos) or not len(neg):
        return {"auc": np.nan, "at_real90": at90}
    auc = float(roc_auc_score(np.r_[np.ones(len(pos)), np.zeros(len(neg))], np.r_[pos, neg]))
    return {"auc": auc, "at_real90": at90}


def shared_pictures(a, b, regime: str) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """The sources, splits and labels of ``regime``'s pictures, which two score files must
    share for a paired comparison (a ``ValueError`` if they differ); None if either file
    lacks the regime."""
    key = f"{regime}/source"
    if key not in a or key not in b:
        return None
    sources, splits, labels = a[key], a[f"{regime}/split"], a[f"{regime}/label"]
    if not (np.array_equal(sources, b[key]) and np.array_equal(splits, b[f"{regime}/split"])
            and np.array_equal(labels, b[f"{regime}/label"])):
        raise ValueError(f"{regime}: the two score files hold different pictures; a paired comparison needs the same")
    return sources, splits, labels


def point_diffs(a, b, regime: str, folds: dict[str, list[str]], arm: str, arm_b: str | None = None) -> dict | None:
    """Each fold's metrics in run A (``arm``) and run B (``arm_b``, default the same) on the
    pictures both scored, and B - A, plus the mean over the folds both hold (no resampling:
    the point values ``logo_paired`` reports). None if the regime or no fold is in both."""
    shared = shared_pictures(a, b, regime)
    if shared is None:
        return None
    sources, splits, labels = shared
    out: dict = {"folds": {}}
    for fold, held in folds.items():
        na, nb = f"{regime}/{arm}{FOLD_SEP}{fold}", f"{regime}/{arm_b or arm}{FOLD_SEP}{fold}"
        if na not in a or nb not in b:
            continue
        ma = fold_metrics(a[na].astype(np.float64), sources, splits, labels, held)
        mb = fold_metrics(b[nb].astype(np.float64), sources, splits, labels, held)
        out["folds"][fold] = {m: {"a": ma[m], "b": mb[m], "diff": mb[m] - ma[m]} for m in METRICS}
    if not out["folds"]:
        return None
    out["mean"] = {m: {k: float(np.nanmean([v[m][k] for v in out["folds"].values()])) for k in ("a", "b", "diff")}
                   for m in METRICS}
    return out


def seed_bands(noise: dict, regime: str, folds: list[str] | None = None, metric: str = "auc") -> dict[str, float]:
    """Fold -> the seed band of ``noise`` (a ``logo_seed_noise.py`` JSON): twice the root mean
    square of the differences between runs that differ only in training seed. A difference
    between two runs on different data streams (another seed, or any change to the sampled
    data, such as an added family) inside the band is what a reseed alone gives.

    ``mean``: the band of the mean over ``folds`` (the folds compared), from each seed pair's
    mean over those folds; a mean over fewer folds varies more, so the six-fold band would be
    too narrow for it. Left out when a fold of ``folds`` is missing from a pair (the band of a
    mean over other folds would not be this mean's)."""
    rows = noise.get("summary", {}).get(regime, {}) if isinstance(noise, dict) else {}
    out = {fold: 2.0 * r[metric]["rms"] for fold, r in rows.items()
           if fold != "mean" and isinstance(r, dict) and r.get(metric, {}).get("rms") is not None}
    if folds:
        means = []
        for pair in noise.get("seed", []) if isinstance(noise, dict) else []:
            per = pair.get("regimes", {}).get(regime, {}).get("folds", {})
            diffs = [per.get(f, {}).get(metric, {}).get("diff") for f in folds]
            if any(d is None or not np.isfinite(d) for d in diffs):
                return out
            means.append(float(np.mean(diffs)))
        if means:
            out["mean"] = 2.0 * float(np.sqrt(np.mean(np.square(means))))
    return out


def read_seed_noise(path: str | Path) -> dict:
    """A ``logo_seed_noise.py`` result read for ``seed_bands``; ValueError (the file, and what
    is wrong) when it cannot be read or is not one, for a script's ``--noise`` usage error."""
    return read_report(path, "summary", "logo_seed_noise.py", label=f"--noise {path}")
