#!/usr/bin/env python3
"""Does a change hold over several seeds? Pool paired LOGO comparisons run on different seeds.

Why: one paired LOGO comparison (``logo_paired.py``: arm B against arm A on the same
pictures) is one draw of the training seed; the seed band (``logo_seed_noise.py``: twice the
RMS of the held-out AUC differences between reseeds of one recipe) says how far a single
difference may stray with no change at all. When the same comparison is repeated on other
seeds (the auxiliary head against the plain recipe on seeds 1 and 0, each pair on its own
data stream), the question becomes whether the *mean* difference is beyond the noise of a
mean: ``n`` independent pairs average to a difference whose spread is the single pair's over
``sqrt(n)``, so its band is the seed band over ``sqrt(n)``. A fold whose differences change
sign between seeds is reported as such: a mean beyond the band on two seeds that disagree is
one seed's effect, not the change's.

    python benchmarks/logo_replicates.py \\
        --pairs benchmarks/results/logo_paired_aux01_s1.json benchmarks/results/logo_paired_aux01_s0_52.json \\
        --noise benchmarks/results/logo_seed_noise.json --out benchmarks/results/logo_replicates_aux01.json

Each ``--pairs`` file is a ``logo_paired.py`` result over generator folds (not ``--by_source``,
not ``--real_folds``: the seed band holds neither). Only folds present in every pair are
pooled; the mean row is the mean of each pair's mean over those folds. Detection at real
0.90 is pooled the same way, with no band (the seed pairs give one for AUC only).

Writes the JSON (``--out``) and a markdown table beside it (``.md``). CPU, instant.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
from bitmind.report import write_report
from bitmind.training.logo_metrics import seed_bands

#: the metrics a logo_paired.py result holds per fold, pooled here; the band is for AUC only
POOLED = ("auc", "at_real90")


def read_pair(path: str) -> dict:
    """A ``logo_paired.py`` result usable here: generator folds, one row per fold."""
    try:
        d = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: {e}") from e
    if not isinstance(d, dict) or "regimes" not in d:
        raise ValueError(f"{path}: not a logo_paired.py result (no 'regimes')")
    if d.get("by_source") or d.get("real_folds"):
        raise ValueError(f"{path}: a per-source or camera-fold comparison; pool the per-fold generator comparisons "
                         "(the seed band holds neither)")
    return d


def pool_regime(pairs: list[dict], regime: str, noise: dict | None) -> dict | None:
    """Per fold shared by every pair (and their mean): each pair's difference, the mean
    difference, whether the signs agree, and for AUC the band of a mean of ``n`` pairs."""
    regs = [p["regimes"].get(regime) for p in pairs]
    if any(r is None for r in regs):
        return None
    folds = [f for f in regs[0]["folds"] if all(f in r["folds"] for r in regs)]
    if not folds:
        return None
    n = len(pairs)
    bands = seed_bands(noise, regime, folds) if noise is not None else {}
    rows = {}
    for f in [*folds, "mean"]:
        row = {}
        for m in POOLED:
            if f == "mean":  # each pair's mean over the shared folds (a pair may hold more folds)
                diffs = [float(np.nanmean([r["folds"][g][m]["diff"] for g in folds])) for r in regs]
            else:
                diffs = [float(r["folds"][f][m]["diff"]) for r in regs]
            mean = float(np.mean(diffs))
            signs = {int(np.sign(d)) for d in diffs if d != 0}
            row[m] = {"diffs": diffs, "mean": mean, "same_sign": len(signs) <= 1}
            if m == "auc" and bands.get(f) is not None:
                band = bands[f] / math.sqrt(n)
                row[m].update(band_single=bands[f], band_of_mean=band,
                              beyond=bool(abs(mean) > band) and row[m]["same_sign"])
        rows[f] = row
    return {"folds": folds, "rows": rows}


def pool(pairs: list[dict], noise: dict | None, names: list[str]) -> dict:
    regimes = {}
    for regime in dict.fromkeys(r for p in pairs for r in p["regimes"]):
        r = pool_regime(pairs, regime, noise)
        if r is not None:
            regimes[regime] = r
    arms = sorted({(p.get("arm"), p.get("arm_b", p.get("arm"))) for p in pairs})
    return {"pairs": names, "arms": [list(a) for a in arms], "n": len(pairs), "regimes": regimes}


def markdown(result: dict) -> str:
    arms = "; ".join(f"`{a}` (A) against `{b}` (B)" for a, b in result["arms"])
    lines = [f"{result['n']} paired LOGO comparisons pooled ({arms}): "
             + ", ".join(f"`{p}`" for p in result["pairs"]), "",
             "Each pair's held-out AUC difference (B - A), their mean, and the band of a mean of n pairs "
             "(the seed band over sqrt(n)); **beyond** needs the mean outside that band and every pair on the "
             "same side. Detection at real 0.90: the same pooling, no band.", "",
             "| regime | fold | AUC diffs | mean | band of mean | at real 0.90 diffs | mean |",
             "|---|---|---|---|---|---|---|"]
    for regime, r in result["regimes"].items():
        for f, row in r["rows"].items():
            auc, det = row["auc"], row["at_real90"]
            band = "-" if "band_of_mean" not in auc else f"±{auc['band_of_mean']:.3f}" + (" **beyond**" if auc["beyond"] else "")
            sign = "" if auc["same_sign"] else " (signs differ)"
            name = "**mean**" if f == "mean" else f
            lines.append(f"| {regime} | {name} | {', '.join(f'{d:+.3f}' for d in auc['diffs'])}{sign} | {auc['mean']:+.3f} "
                         f"| {band} | {', '.join(f'{d:+.3f}' for d in det['diffs'])} | {det['mean']:+.3f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pairs", nargs="+", required=True, help="logo_paired.py JSONs, one per seed (generator folds)")
    p.add_argument("--noise", default=None, help="a logo_seed_noise.py JSON: the band of each fold's mean difference")
    p.add_argument("--out", required=True, help="JSON; the markdown table goes beside it (.md)")
    a = p.parse_args(argv)
    if len(a.pairs) < 2:
        p.error("--pairs needs at least two comparisons (one is logo_paired.py's own table)")
    try:
        pairs = [read_pair(x) for x in a.pairs]
    except ValueError as e:
        p.error(str(e))
    noise = None
    if a.noise:
        try:
            noise = json.loads(Path(a.noise).read_text())
        except (OSError, ValueError) as e:
            p.error(f"--noise {a.noise}: {e}")
        if not isinstance(noise, dict) or "summary" not in noise:
            p.error(f"--noise {a.noise}: not a logo_seed_noise.py result (no 'summary')")
    result = pool(pairs, noise, list(a.pairs))
    if not result["regimes"]:
        p.error("the pairs share no regime with a common fold")
    if noise is not None:
        result["noise"] = a.noise
    try:
        write_report(a.out, result, markdown(result))
    except ValueError as e:
        p.error(str(e))
    print(markdown(result))
    return result


if __name__ == "__main__":
    main()
