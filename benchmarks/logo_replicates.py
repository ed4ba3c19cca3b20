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
not ``--real_folds``: the seed band holds neither), all of the same two arms, each on runs
of its own (a run shared by two pairs, or one file given twice, would count one seed twice).
Only folds present in every pair with a finite difference are pooled (the others are listed
as skipped); the mean row is the mean of each pair's mean over those folds. Detection at
real 0.90 is pooled the same way, with its own band (``logo_seed_noise.py`` holds both).

How rough it is: the band rests on the few reseed pairs ``logo_seed_noise.py`` found (four,
as of the twenty-seventh session), so a mean just beyond it is a lead, not a proof; and a
pair that prompted the comparison (the discovery run) pooled with its check favours the
change.

Writes the JSON (``--out``) and a markdown table beside it (``.md``). CPU, instant.
"""
from __future__ import annotations

import argparse
import math

import numpy as np
from bitmind.report import read_report, report_path, write_report
from bitmind.training.logo_metrics import read_seed_noise, seed_bands

#: the metrics a logo_paired.py result holds per fold, pooled here (each with its seed band)
POOLED = ("auc", "at_real90")


def read_pair(path: str) -> dict:
    """A ``logo_paired.py`` result usable here: generator folds, one row per fold."""
    d = read_report(path, "regimes", "logo_paired.py")
    if d.get("by_source") or d.get("real_folds"):
        raise ValueError(f"{path}: a per-source or camera-fold comparison; pool the per-fold generator comparisons "
                         "(the seed band holds neither)")
    return d


def check_independent(pairs: list[dict], names: list[str]) -> None:
    """Refuse pairs that are not one comparison on independent seeds: other arms, the same
    file twice, or a run (scores file and arm) that two pairs share."""
    if len(set(names)) < len(names):
        raise ValueError("a --pairs file is given twice: one seed would count twice")
    arms = {(p.get("arm"), p.get("arm_b", p.get("arm"))) for p in pairs}
    if len(arms) > 1:
        raise ValueError(f"the pairs compare different arms ({sorted(arms)}): pool one comparison at a time")
    seen: dict[tuple, str] = {}
    for p, name in zip(pairs, names):
        for run in {(p.get("a"), p.get("arm")), (p.get("b"), p.get("arm_b", p.get("arm")))}:
            if run in seen and seen[run] != name:
                raise ValueError(f"{name} and {seen[run]} share the run {run[0]} ({run[1]}): not independent seeds")
            seen[run] = name


def pool_regime(pairs: list[dict], regime: str, noise: dict | None) -> dict | None:
    """Per fold shared by every pair (and their mean): each pair's difference, the mean
    difference, whether the signs agree, and for AUC the band of a mean of ``n`` pairs."""
    regs = [p["regimes"].get(regime) for p in pairs]
    if any(r is None for r in regs):
        return None
    shared = [f for f in regs[0]["folds"] if all(f in r["folds"] for r in regs)]
    folds = [f for f in shared if all(finite(r["folds"][f][m].get("diff")) for r in regs for m in POOLED)]
    if not folds:
        return None
    n = len(pairs)
    bands = {m: seed_bands(noise, regime, folds, metric=m) for m in POOLED} if noise is not None else {}
    rows = {}
    for f in [*folds, "mean"]:
        row = {}
        for m in POOLED:
            if f == "mean":  # each pair's mean over the pooled folds (a pair may hold more folds)
                diffs = [float(np.mean([r["folds"][g][m]["diff"] for g in folds])) for r in regs]
            else:
                diffs = [float(r["folds"][f][m]["diff"]) for r in regs]
            mean = float(np.mean(diffs))
            same_sign = all(d > 0 for d in diffs) or all(d < 0 for d in diffs)  # a zero is on neither side
            row[m] = {"diffs": diffs, "mean": mean, "same_sign": same_sign}
            band = bands.get(m, {}).get(f)
            if band is not None:
                row[m].update(band_single=band, band_of_mean=band / math.sqrt(n),
                              beyond=bool(abs(mean) > band / math.sqrt(n)) and same_sign)
        rows[f] = row
    return {"folds": folds, "skipped": [f for f in shared if f not in folds], "rows": rows}


def finite(x) -> bool:
    """A difference that can be pooled (``logo_paired.py`` writes NaN, or null, for a fold
    whose AUC or detection could not be computed)."""
    return isinstance(x, (int, float)) and math.isfinite(x)


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
             "Each pair's held-out difference (B - A) in AUC and in detection at real 0.90, their mean, and "
             "the band of a mean of n pairs (the seed band over sqrt(n)); **beyond** needs the mean outside that "
             "band and every pair on the same side of zero. The band rests on a few reseed pairs: a mean just "
             "beyond it is a lead, not a proof.", "",
             "| regime | fold | AUC diffs | mean | band of mean | at real 0.90 diffs | mean | band of mean |",
             "|---|---|---|---|---|---|---|---|"]

    def cells(s: dict) -> str:
        sign = "" if s["same_sign"] else " (not all on one side)"
        band = "-" if "band_of_mean" not in s else f"±{s['band_of_mean']:.3f}" + (" **beyond**" if s["beyond"] else "")
        return f"{', '.join(f'{d:+.3f}' for d in s['diffs'])}{sign} | {s['mean']:+.3f} | {band}"

    for regime, r in result["regimes"].items():
        for f, row in r["rows"].items():
            name = "**mean**" if f == "mean" else f
            lines.append(f"| {regime} | {name} | {cells(row['auc'])} | {cells(row['at_real90'])} |")
        if r.get("skipped"):
            lines.append(f"| {regime} | skipped (a difference not finite in some pair) | {', '.join(r['skipped'])} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pairs", nargs="+", required=True, help="logo_paired.py JSONs, one per seed (generator folds)")
    p.add_argument("--noise", default=None, help="a logo_seed_noise.py JSON: the band of each fold's mean difference")
    p.add_argument("--out", type=report_path, required=True, help="JSON; the markdown table goes beside it (.md)")
    a = p.parse_args(argv)
    if len(a.pairs) < 2:
        p.error("--pairs needs at least two comparisons (one is logo_paired.py's own table)")
    try:
        pairs = [read_pair(x) for x in a.pairs]
        check_independent(pairs, list(a.pairs))
        noise = read_seed_noise(a.noise) if a.noise else None
    except ValueError as e:
        p.error(str(e))
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
