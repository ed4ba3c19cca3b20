#!/usr/bin/env python3
"""Is one LOGO run really better than another, or inside the noise of the pictures?

Why: two LOGO runs of the same spec (a fix against no fix, 150 epochs against 78) are
compared by their mean held-out AUC and detection at the threshold that keeps 90 % of the
validation real photos. Folds hold 97-612 held-out pictures and a few hundred real photos,
so a difference of 0.01 may be luck. Both runs were scored on the same pictures, so the
comparison can be paired: resample the pictures (with replacement, within each source and
split, so every fold keeps its size), recompute both runs' metrics on the same resample,
and look at the spread of their difference. Only calibration-free metrics are used (AUC,
and detection at each fold's own real-0.90 threshold, from its validation real photos), so
nothing depends on how either run was calibrated. (The real-0.90 threshold is interpolated
between raw logits here, between calibrated probabilities in ``generalisation.py analyse``,
so detection there can differ by a picture or so.) The interval covers the pictures' noise,
not the training seed's: two seeds are two such comparisons.

For each regime (``validator``: what validators send; ``crops``: the crop pools) and each
generator fold the two runs share (``ARM.minus-FAMILY``; ``--real_folds`` for the unseen
camera folds instead, where AUC separates the trained fakes' test pictures from the held-out
photos and detection is replaced by the share of those photos kept real at the threshold):
the point values of both runs, their difference (B - A), its 95 % bootstrap interval and
the share of resamples where B is not better (a one-sided p-value). The same for the mean
over folds, which is what the docs compare.

    python benchmarks/logo_paired.py --a benchmarks/results/generalisation_longer_scores.npz \\
        --b benchmarks/results/generalisation_fixed_s0_78_scores.npz \\
        --spec benchmarks/results/generalisation_fixed_s0_78_spec.json --out benchmarks/results/logo_paired_fixes_s0.json

``--by_source`` splits every fold into one row per held-out source (the fold model is the
same; only that source's pictures are the positives, or for a camera fold the photos): a
fold's mean can hide the source that fails, or the one that moved.

``--noise benchmarks/results/logo_seed_noise.json`` adds each fold's seed band (twice the
root mean square of the differences between reseeds of one recipe, ``logo_seed_noise.py``;
for the mean, of each reseed's mean over the folds compared) beside its AUC difference
(generator folds only; not per source): runs on different data streams (another seed, an added family, a
changed share) differ by that much with no change at all, which the interval above does
not cover.

``--arm_b`` names run B's arm when it differs from A's, so two arms of one scores file can
be compared (a stack against the NPR folds it was stacked on: ``benchmarks/residual_logo.py``).

Writes the JSON (``--out``) and a markdown table beside it (``.md``).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from bitmind.metrics import bootstrap_resample, bootstrap_strata
from bitmind.report import report_path, write_report
from bitmind.training.logo import FOLD_SEP, REGIMES
from bitmind.training.logo_metrics import METRICS, by_source, fold_metrics, fold_sets, seed_bands, read_seed_noise, shared_pictures



def compare_regime(a, b, regime: str, folds: dict[str, list[str]], arm: str, n_boot: int, seed: int,
                   arm_b: str | None = None, per_source: bool = False) -> dict | None:
    """Point values, differences and paired bootstrap of one regime, per fold (or per
    held-out source of each fold: ``per_source``) and mean (``arm`` in ``a`` against
    ``arm_b``, default the same arm, in ``b``)."""
    shared = shared_pictures(a, b, regime)
    if shared is None:
        return None
    sources, splits, labels = shared
    rows = by_source(folds, sources) if per_source else {f: (f, held, None) for f, held in folds.items()}
    names = {r: (f"{regime}/{arm}{FOLD_SEP}{f}", f"{regime}/{arm_b or arm}{FOLD_SEP}{f}") for r, (f, *_) in rows.items()}
    names = {r: (na, nb) for r, (na, nb) in names.items() if na in a and nb in b}
    if not names:
        return None
    za = {f: a[na].astype(np.float64) for f, (na, _) in names.items()}
    zb = {f: b[nb].astype(np.float64) for f, (_, nb) in names.items()}

    def metrics(idx: np.ndarray | None) -> dict:
        s, sp, lb = (sources, splits, labels) if idx is None else (sources[idx], splits[idx], labels[idx])
        out = {}
        for f in names:
            ma = fold_metrics(za[f] if idx is None else za[f][idx], s, sp, lb, *rows[f][1:])
            mb = fold_metrics(zb[f] if idx is None else zb[f][idx], s, sp, lb, *rows[f][1:])
            out[f] = {m: (ma[m], mb[m]) for m in METRICS}
        return out

    point = metrics(None)
    groups, rng = bootstrap_strata(sources, splits, labels), np.random.default_rng(seed)
    diffs = {f: {m: [] for m in METRICS} for f in [*names, "mean"]}
    for _ in range(n_boot):
        r = metrics(bootstrap_resample(groups, rng))
        for m in METRICS:
            per = [r[f][m][1] - r[f][m][0] for f in names]
            for f, d in zip(names, per):
                diffs[f][m].append(d)
            diffs["mean"][m].append(float(np.nanmean(per)))

    def summary(a_val: float, b_val: float, boot: list[float]) -> dict:
        boot = np.asarray(boot, dtype=np.float64)
        boot = boot[~np.isnan(boot)]
        lo, hi = (np.quantile(boot, [0.025, 0.975]) if len(boot) else (np.nan, np.nan))
        return {"a": a_val, "b": b_val, "diff": b_val - a_val, "ci95": [float(lo), float(hi)],
                "p_b_not_better": float((boot <= 0).mean()) if len(boot) else None}

    res = {"folds": {}, "mean": {}}
    for f in names:
        res["folds"][f] = {m: summary(*point[f][m], diffs[f][m]) for m in METRICS}
    for m in METRICS:
        res["mean"][m] = summary(float(np.nanmean([point[f][m][0] for f in names])),
                                 float(np.nanmean([point[f][m][1] for f in names])), diffs["mean"][m])
    res["pictures"] = int(len(sources))
    return res


def markdown(result: dict) -> str:
    arms = f"arm `{result['arm']}`" if result.get("arm_b", result["arm"]) == result["arm"] else \
        f"arms `{result['arm']}` (A) and `{result['arm_b']}` (B)"
    lines = [f"A = `{result['a']}`, B = `{result['b']}`, {arms}, "
             f"{'camera' if result['real_folds'] else 'generator'} folds{', per held-out source' if result.get('by_source') else ''}, "
             f"{result['n_boot']} paired resamples", ""]
    bands = result.get("seed_band") or {}
    head = "| regime | fold | AUC A | AUC B | diff [95 % CI] | p(B not better) | at real 0.90 A | B | diff [95 % CI] | p |"
    if bands:
        head += " AUC seed band |"
        lines[1:1] = ["", f"Seed band: twice the RMS of the AUC differences between reseeds of one recipe ({result['noise']}); "
                      "a difference inside it is what training again with another seed gives (**beyond** marks one outside it)."]
    lines += [head, "|" + "---|" * (10 + bool(bands))]
    for regime, r in result["regimes"].items():
        for f, m in [*r["folds"].items(), ("**mean**", r["mean"])]:
            cells = []
            for k in METRICS:
                s = m[k]
                cells += [f"{s['a']:.3f}", f"{s['b']:.3f}", f"{s['diff']:+.3f} [{s['ci95'][0]:+.3f}, {s['ci95'][1]:+.3f}]",
                          f"{s['p_b_not_better']:.3f}" if s["p_b_not_better"] is not None else "-"]
            if bands:
                # a fold's band; none for one held-out source of a fold (--by_source), whose spread is larger
                # (and for their mean, over sources rather than folds); none for camera folds, which
                # the seed pairs do not hold
                band = None if result.get("by_source") or result.get("real_folds") else \
                    bands.get(regime, {}).get("mean" if f == "**mean**" else f)
                beyond = band is not None and abs(m["auc"]["diff"]) > band
                cells.append("-" if band is None else f"±{band:.3f}" + (" **beyond**" if beyond else ""))
            lines.append(f"| {regime} | {f} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--a", required=True, help="scores .npz of run A (the reference)")
    p.add_argument("--b", required=True, help="scores .npz of run B (the candidate), on the same pictures")
    p.add_argument("--spec", required=True, help="a LOGO spec JSON of the runs (its variants' exclude_sources): the folds "
                   "of --arm, else of --arm_b (B's spec, when B ran fewer folds than A)")
    p.add_argument("--arm", default="patch96nopool")
    p.add_argument("--arm_b", default=None, help="run B's arm, when it differs from A's (two arms of one scores file)")
    p.add_argument("--real_folds", action="store_true", help="the unseen camera folds instead of the generator folds")
    p.add_argument("--by_source", action="store_true", help="one row per held-out source of each fold")
    p.add_argument("--regimes", nargs="+", default=list(REGIMES), choices=REGIMES)
    p.add_argument("--n_boot", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--noise", default=None, help="a logo_seed_noise.py JSON (benchmarks/results/logo_seed_noise.json): "
                   "print each fold's seed band (twice the RMS of reseed differences) beside its AUC difference")
    p.add_argument("--out", type=report_path, required=True, help="JSON; the markdown table goes beside it (.md)")
    a = p.parse_args(argv)
    if a.n_boot < 1:
        p.error("--n_boot must be at least 1")
    try:
        noise = read_seed_noise(a.noise) if a.noise else None
    except ValueError as e:
        p.error(str(e))
    spec = json.loads(Path(a.spec).read_text())
    # the folds of A's arm, or of B's where the spec is B's run (a sketch on fewer folds than A's:
    # only the folds B has are compared)
    folds = fold_sets(spec, a.arm, a.real_folds) or (fold_sets(spec, a.arm_b, a.real_folds) if a.arm_b else {})
    if not folds:
        p.error(f"the spec has no {'camera' if a.real_folds else 'generator'} folds of arm {a.arm!r}"
                + (f" or {a.arm_b!r}" if a.arm_b else ""))
    da, db = np.load(a.a, allow_pickle=False), np.load(a.b, allow_pickle=False)
    result = {"a": a.a, "b": a.b, "spec": a.spec, "arm": a.arm, "arm_b": a.arm_b or a.arm, "real_folds": a.real_folds, "by_source": a.by_source,
              "n_boot": a.n_boot,
              "seed": a.seed, "regimes": {}}
    for regime in a.regimes:
        r = compare_regime(da, db, regime, folds, a.arm, a.n_boot, a.seed, a.arm_b, a.by_source)
        if r is not None:
            result["regimes"][regime] = r
    if not result["regimes"]:
        p.error("no fold model of the arm is scored in both files")
    if noise is not None:
        result["noise"] = a.noise
        result["seed_band"] = {regime: seed_bands(noise, regime, list(r["folds"])) for regime, r in result["regimes"].items()}
    write_report(a.out, result, markdown(result))
    print(markdown(result))
    return result


if __name__ == "__main__":
    main()
