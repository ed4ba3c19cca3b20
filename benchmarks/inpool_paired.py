#!/usr/bin/env python3
"""Do two recipes' everything models differ on the in-pool test split, at the shipped boundary?

Why: the shipped file (recipe ``patch96aux01``, an auxiliary family head) keeps fewer of the
test split's real photos real than the plain recipe's file (``patch96nopool``). One pair of
files is one training run each, so that loss may belong to the recipe or to the run. Several
LOGO runs hold both recipes' models trained on everything (the sweep's variant named exactly
by the arm, no ``.minus-`` suffix) scored on the same pictures: pairing them run by run, and
pooling the runs, says which.

Each arm gets the calibration the protocol gives a sweep model (``logo.fold_calibration``: a
class-balanced Platt fit on its validation pictures of every regime, its own
``exclude_sources`` left out; with a real target the boundary instead keeps that share of
those validation real photos real, ``--real_targets``; 0 = the Platt boundary), and answers
AI when the calibrated logit ``raw / T + b`` is above 0. On the test pictures of the sources
both arms train on (the TAEF2 round trips left out: training material, never a challenge):
real accuracy, fake accuracy, their mean (balanced accuracy) and ROC AUC
of A (the reference) and B, B - A with a 95 % paired bootstrap interval (the pictures
resampled with replacement within each class, both arms read on the same resample) and the
share of resamples where B is not better; the same per real source. Then the pairs pooled:
the mean of their differences, its interval from the same draws (each draw: the mean of the
pairs' differences; pairs scored on the same test pictures, as LOGO runs of one data set are,
share each draw's resample, since their pictures' noise is one), and how many pairs have B
below A. The interval covers the pictures' noise; the spread between the pairs is the runs'
(seeds', lengths') noise.

    R=benchmarks/results/generalisation
    python benchmarks/inpool_paired.py \\
        --pair s1_53 ${R}_cameras_aux01_s1_53_{scores.npz,spec.json} patch96nopool \\
                     ${R}_cameras_aux01_s1_53_{scores.npz,spec.json} patch96aux01 \\
        --pair s0_52 ${R}_aux01_s0_52_{scores.npz,spec.json} patch96nopool ${R}_aux01_s0_52_{scores.npz,spec.json} patch96aux01 \\
        --pair s2_34 ${R}_aux01_s2_34_{scores.npz,spec.json} patch96nopool ${R}_aux01_s2_34_{scores.npz,spec.json} patch96aux01 \\
        --pair s1_52 ${R}_aux_s1_{scores.npz,spec.json} patch96nopool ${R}_aux01_s1_{scores.npz,spec.json} patch96aux01 \\
        --out benchmarks/results/inpool_paired_aux01.json

(``--pair LABEL A_SCORES A_SPEC A_ARM B_SCORES B_SPEC B_ARM``: the two scores files may be one
file holding both arms, or two files scored on the same pictures.) Writes the JSON (``--out``)
and the markdown tables beside it (``.md``).
"""
from __future__ import annotations

import argparse
import json
import warnings
import zipfile
from pathlib import Path

import numpy as np
from bitmind.data.families import is_aligned
from bitmind.metrics import bootstrap_resample, bootstrap_strata
from bitmind.report import report_path, write_report
from bitmind.training.logo import FOLD_SEP, REGIMES, fold_calibration, validation_logits
from scipy.stats import rankdata

METRICS = ("real_accuracy", "fake_accuracy", "balanced_accuracy", "auc")
PAIR_FIELDS = ("label", "a_scores", "a_spec", "a_arm", "b_scores", "b_spec", "b_arm")


def rank_auc(z: np.ndarray, y: np.ndarray) -> float:
    """ROC AUC of scores ``z`` for labels ``y`` (1 fake: should score higher), ties counted
    half (the Mann-Whitney statistic, as ``roc_auc_score``); NaN without both classes."""
    pos = y == 1
    npos, nneg = int(pos.sum()), int((~pos).sum())
    if not npos or not nneg:
        return float("nan")
    return float((rankdata(z)[pos].sum() - npos * (npos + 1) / 2) / (npos * nneg))


def _mean(x: np.ndarray) -> float:
    return float(x.mean()) if len(x) else float("nan")


def calibrate(data, arm: str, excluded: list[str], target: float) -> dict:
    """The arm's ``(temperature, bias)`` (``fold_calibration``; ``target`` 0: the class-balanced
    Platt boundary) and what that boundary does to the validation pictures it was fitted on."""
    t, b = fold_calibration(data, arm, excluded, real_target=target or None)
    zv, yv, used = validation_logits(data, arm, excluded)
    called = zv / t + b > 0
    return {"temperature": float(t), "bias": float(b), "val_regimes": used, "val_real_n": int((yv == 0).sum()),
            "val_real_kept": _mean(~called[yv == 0]), "val_fake_caught": _mean(called[yv == 1])}


class Pictures:
    """One pair's test pictures in one regime (sources both arms train on, scored by both),
    with each arm's raw logits and, per boundary, its calibrated AI answers."""

    def __init__(self, source, label, raw_a, raw_b, called: dict[str, tuple[np.ndarray, np.ndarray]]):
        self.label, self.raw = label, (raw_a, raw_b)
        self.called = called
        self.real_sources = sorted(set(source[label == 0]))
        self.code = np.searchsorted(self.real_sources, source)  # only read where label == 0
        self.groups = bootstrap_strata(label)  # resample within each class: both stay present

    def metrics(self, idx: np.ndarray) -> dict:
        """Every metric of A and B on the pictures ``idx`` (with repeats): {target: {metric:
        (a, b)}, "per_source": {target: (n, acc_a, acc_b) arrays over real_sources}}."""
        y = self.label[idx]
        real, fake = y == 0, y == 1
        auc = tuple(rank_auc(r[idx], y) for r in self.raw)
        code = self.code[idx][real]
        n = np.bincount(code, minlength=len(self.real_sources)).astype(np.float64)
        out: dict = {"per_source": {}}
        for t, arms in self.called.items():
            m = {k: [] for k in METRICS}
            per = []
            for called, a in zip(arms, auc):
                c = called[idx]
                ra, fa = _mean(~c[real]), _mean(c[fake])
                m["real_accuracy"].append(ra)
                m["fake_accuracy"].append(fa)
                m["balanced_accuracy"].append((ra + fa) / 2)
                m["auc"].append(a)
                with np.errstate(invalid="ignore", divide="ignore"):
                    per.append(np.bincount(code, weights=~c[real], minlength=len(self.real_sources)) / n)
            out[t] = {k: tuple(v) for k, v in m.items()}
            out["per_source"][t] = (n, *per)
        return out


def summary(a_val: float, b_val: float, boot: np.ndarray) -> dict:
    """Point values, B - A, its 95 % interval over the draws and p(B not better), as logo_paired."""
    boot = np.asarray(boot, dtype=np.float64)
    boot = boot[~np.isnan(boot)]
    lo, hi = np.quantile(boot, [0.025, 0.975]) if len(boot) else (np.nan, np.nan)
    f = lambda v: None if v is None or np.isnan(v) else float(v)  # noqa: E731
    return {"a": f(a_val), "b": f(b_val), "diff": f(b_val - a_val), "ci95": [f(lo), f(hi)],
            "p_b_not_better": float((boot <= 0).mean()) if len(boot) else None}


def compare(pics: Pictures, n_boot: int, rng: np.random.Generator) -> tuple[dict, dict]:
    """Point values and paired bootstrap of one pair in one regime, every boundary read on the
    same draws: (the JSON result, the draws' differences for pooling)."""
    point = pics.metrics(np.arange(len(pics.label)))
    targets = list(pics.called)
    diffs = {t: {m: np.empty(n_boot) for m in METRICS} for t in targets}
    src_diffs = {t: np.empty((n_boot, len(pics.real_sources))) for t in targets}
    for i in range(n_boot):
        r = pics.metrics(bootstrap_resample(pics.groups, rng))
        for t in targets:
            for m in METRICS:
                diffs[t][m][i] = r[t][m][1] - r[t][m][0]
            _, sa, sb = r["per_source"][t]
            src_diffs[t][i] = sb - sa
    res, draws = {}, {}
    for t in targets:
        n, sa, sb = point["per_source"][t]
        res[t] = {"metrics": {m: summary(*point[t][m], diffs[t][m]) for m in METRICS},
                  "per_real_source": {s: {"n": int(n[j]), **summary(sa[j], sb[j], src_diffs[t][:, j])}
                                      for j, s in enumerate(pics.real_sources)}}
        draws[t] = {"metrics": diffs[t], "per_real_source": {s: src_diffs[t][:, j] for j, s in enumerate(pics.real_sources)}}
    return res, draws


def pooled(rows: dict[str, dict], draws: dict[str, dict]) -> dict:
    """The pairs' mean difference per metric (and per real source, over the pairs holding it),
    its interval from the mean of the pairs' differences draw by draw (pairs on the same test
    pictures share each draw's resample), and how many pairs have B below A."""
    out: dict = {"pairs": list(rows), "metrics": {}, "per_real_source": {}}
    for m in METRICS:
        pts = [rows[p]["metrics"][m] for p in rows]
        boot = np.nanmean(np.stack([draws[p]["metrics"][m] for p in rows]), axis=0)
        diffs = np.array([np.nan if s["diff"] is None else s["diff"] for s in pts])
        s = summary(np.nanmean([np.nan if s["a"] is None else s["a"] for s in pts]),
                    np.nanmean([np.nan if s["b"] is None else s["b"] for s in pts]), boot)
        s["diff"] = float(np.nanmean(diffs))  # the mean of the pairs' differences
        s["pairs_b_below_a"] = int((diffs < 0).sum())
        s["pairs_b_above_a"] = int((diffs > 0).sum())
        out["metrics"][m] = s
    sources = sorted({s for p in rows for s in rows[p]["per_real_source"]})
    for src in sources:
        have = [p for p in rows if rows[p]["per_real_source"].get(src, {}).get("n")]
        if not have:
            continue
        pts = [rows[p]["per_real_source"][src] for p in have]
        with warnings.catch_warnings():  # a resample may hold none of a small source in any pair: NaN, left out of the interval
            warnings.simplefilter("ignore", RuntimeWarning)
            boot = np.nanmean(np.stack([draws[p]["per_real_source"][src] for p in have]), axis=0)
        diffs = np.array([s["diff"] for s in pts])
        s = summary(float(np.mean([s["a"] for s in pts])), float(np.mean([s["b"] for s in pts])), boot)
        s.update(diff=float(diffs.mean()), pairs=len(have), pairs_b_below_a=int((diffs < 0).sum()),
                 n=[int(s["n"]) for s in pts])
        out["per_real_source"][src] = s
    return out


def _ci(s: dict, digits: int = 3) -> str:
    if s["diff"] is None:
        return "-"
    f = lambda v: f"{round(v, digits) + 0.0:+.{digits}f}"  # noqa: E731  (no "-0.000")
    lo, hi = s["ci95"]
    return f(s["diff"]) + ("" if lo is None else f" [{f(lo)}, {f(hi)}]")


def _v(x) -> str:
    return "-" if x is None else f"{x:.3f}"


def markdown(result: dict) -> str:
    pairs = result["pairs"]
    lines = [f"In-pool test split, everything models, A (reference) against B; {result['n_boot']} paired resamples of "
             f"the pictures (within each class), seed {result['seed']}; diff = B - A, [95 % CI].", ""]
    lines += ["| pair | A | B |", "|---|---|---|"]
    for label, p in pairs.items():
        lines.append(f"| {label} | `{p['a_arm']}` in `{p['a_scores']}` | `{p['b_arm']}` in `{p['b_scores']}` |")
    for t in result["real_targets"]:
        tk = f"{t:g}"
        rule = "class-balanced Platt boundary" if not t else f"boundary keeping {t:g} of the validation real photos real"
        lines += ["", f"## {rule} (real target {tk})", "",
                  "| pair | A: T, b, val real kept | B: T, b, val real kept |", "|---|---|---|"]
        for label, p in pairs.items():
            cal = p["calibration"][tk]
            cells = [f"{c['temperature']:.3f}, {c['bias']:+.3f}, {c['val_real_kept']:.3f}" for c in (cal["a"], cal["b"])]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        for regime in result["regimes"]:
            held = [lb for lb, p in pairs.items() if regime in p["regimes"]]
            if not held:
                continue
            lines += ["", f"### {regime} regime, {rule}", "",
                      "| pair | test real / fake n | real A | real B | real diff [95 % CI] | p(B not better) | fakes A | fakes B "
                      "| fakes diff | balanced diff | AUC A | AUC B | AUC diff |", "|" + "---|" * 13]
            for label in held:
                r = pairs[label]["regimes"][regime]
                m = r["targets"][tk]["metrics"]
                lines.append(f"| {label} | {r['real_n']} / {r['fake_n']} | {_v(m['real_accuracy']['a'])} | "
                             f"{_v(m['real_accuracy']['b'])} | {_ci(m['real_accuracy'])} | {_v(m['real_accuracy']['p_b_not_better'])} | "
                             f"{_v(m['fake_accuracy']['a'])} | {_v(m['fake_accuracy']['b'])} | {_ci(m['fake_accuracy'])} | "
                             f"{_ci(m['balanced_accuracy'])} | {_v(m['auc']['a'])} | {_v(m['auc']['b'])} | {_ci(m['auc'])} |")
            pool = result["pooled"][regime][tk]
            m = pool["metrics"]
            below = lambda k: f" ({m[k]['pairs_b_below_a']}/{len(held)} B<A)"  # noqa: E731
            lines.append(f"| **pooled, {len(held)} pairs** | | {_v(m['real_accuracy']['a'])} | {_v(m['real_accuracy']['b'])} | "
                         f"**{_ci(m['real_accuracy'])}**{below('real_accuracy')} | {_v(m['real_accuracy']['p_b_not_better'])} | "
                         f"{_v(m['fake_accuracy']['a'])} | {_v(m['fake_accuracy']['b'])} | {_ci(m['fake_accuracy'])}{below('fake_accuracy')} | "
                         f"{_ci(m['balanced_accuracy'])}{below('balanced_accuracy')} | {_v(m['auc']['a'])} | {_v(m['auc']['b'])} | "
                         f"{_ci(m['auc'])}{below('auc')} |")
            lines += ["", f"Per real source ({regime}, {rule}): real accuracy A → B (diff) per pair; pooled: mean diff [95 % CI].", "",
                      "| real source | n | " + " | ".join(held) + " | pooled diff | B<A |", "|" + "---|" * (len(held) + 4)]
            for src, s in pool["per_real_source"].items():
                cells = []
                for label in held:
                    row = pairs[label]["regimes"][regime]["targets"][tk]["per_real_source"].get(src)
                    cells.append("-" if not row or not row["n"] else f"{row['a']:.3f} → {row['b']:.3f} ({row['diff']:+.3f})")
                ns = sorted(set(s["n"]))
                lines.append(f"| {src} | {'/'.join(map(str, ns))} | " + " | ".join(cells) +
                             f" | {_ci(s)} | {s['pairs_b_below_a']}/{s['pairs']} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pair", nargs=7, action="append", required=True, metavar=tuple(f.upper() for f in PAIR_FIELDS),
                   help="a label, then run A's scores .npz, spec JSON and arm (the reference), then B's; repeat per pair")
    p.add_argument("--real_targets", type=float, nargs="+", default=[0, 0.85],
                   help="boundaries: 0 = the class-balanced Platt one, else the one keeping that share of the model's "
                        "validation real photos real")
    p.add_argument("--regimes", nargs="+", default=list(REGIMES), choices=REGIMES)
    p.add_argument("--n_boot", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=report_path, required=True, help="JSON; the markdown tables go beside it (.md)")
    a = p.parse_args(argv)
    if a.n_boot < 1:
        p.error("--n_boot must be at least 1")
    bad = [t for t in a.real_targets if not 0 <= t < 1]
    if bad:
        p.error(f"--real_targets must lie in [0, 1) (0: the Platt boundary), got {bad}")
    targets = list(dict.fromkeys(a.real_targets))
    a.regimes = list(dict.fromkeys(a.regimes))
    if not a.out:
        p.error("--out names the JSON to write (the markdown table goes beside it)")

    pairs = [dict(zip(PAIR_FIELDS, v)) for v in a.pair]
    labels = [q["label"] for q in pairs]
    if len(set(labels)) != len(labels):
        p.error(f"--pair labels must differ, got {labels}")
    cache: dict[str, tuple] = {}

    def load(scores: str, spec_path: str, arm: str, label: str) -> tuple[dict, dict]:
        for path in (scores, spec_path):
            if not Path(path).is_file():
                p.error(f"pair {label}: no such file {path}")
        if FOLD_SEP in arm:
            p.error(f"pair {label}: {arm!r} is a fold model; name the arm (its model trained on everything)")
        try:
            if scores not in cache:
                with np.load(scores, allow_pickle=False) as z:
                    cache[scores] = {k: z[k] for k in z.files}
            spec = json.loads(Path(spec_path).read_text())
            variants = spec["variants"]
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
            p.error(f"pair {label}: cannot read {scores} / {spec_path}: {e}")
        data = cache[scores]
        arms = sorted({k.split("/", 1)[1] for k in data if k.startswith(tuple(f"{r}/" for r in REGIMES))} - {"source", "split", "label"})
        if not any(f"{r}/{arm}" in data for r in a.regimes):
            p.error(f"pair {label}: arm {arm!r} has no scores in {scores} (regimes {a.regimes}); it holds "
                    f"{[x for x in arms if FOLD_SEP not in x]}")
        if arm not in variants:
            p.error(f"pair {label}: arm {arm!r} is not a variant of {spec_path}")
        return data, variants[arm]

    jobs, notes = [], []
    for q in pairs:
        da, va = load(q["a_scores"], q["a_spec"], q["a_arm"], q["label"])
        db, vb = load(q["b_scores"], q["b_spec"], q["b_arm"], q["label"])
        ex_a, ex_b = list(va.get("exclude_sources", [])), list(vb.get("exclude_sources", []))
        regimes = []
        for r in a.regimes:
            missing = [f for f, d, arm in ((q["a_scores"], da, q["a_arm"]), (q["b_scores"], db, q["b_arm"]))
                       if f"{r}/source" not in d or f"{r}/{arm}" not in d]
            if missing:
                notes.append(f"pair {q['label']}: {r} regime skipped (not scored in {', '.join(missing)})")
                continue
            same = all(np.array_equal(da[f"{r}/{k}"], db[f"{r}/{k}"]) for k in ("source", "split", "label"))
            if not same:
                p.error(f"pair {q['label']}: {q['a_scores']} and {q['b_scores']} hold different {r} pictures "
                        "(source/split/label); a paired comparison needs the same")
            regimes.append(r)
        if not regimes:
            p.error(f"pair {q['label']}: no regime of {a.regimes} is scored for both arms")
        jobs.append((q, da, db, ex_a, ex_b, regimes))
    for n in notes:
        print(n)

    result: dict = {"real_targets": targets, "regimes": list(a.regimes), "n_boot": a.n_boot, "seed": a.seed, "pairs": {}}
    all_draws: dict = {r: {f"{t:g}": {} for t in targets} for r in a.regimes}
    for q, da, db, ex_a, ex_b, regimes in jobs:
        try:
            cal = {f"{t:g}": {"a": calibrate(da, q["a_arm"], ex_a, t), "b": calibrate(db, q["b_arm"], ex_b, t)}
                   for t in targets}
        except (ValueError, KeyError) as e:  # no validation pictures of a class to fit a boundary on
            p.error(f"pair {q['label']}: cannot calibrate its arms on their validation pictures: {e}")
        excluded = sorted(set(ex_a) | set(ex_b))
        entry = {**q, "a_excluded": ex_a, "b_excluded": ex_b, "calibration": cal, "regimes": {}}
        for j, r in enumerate(a.regimes):
            if r not in regimes:
                continue
            source, split, label = da[f"{r}/source"], da[f"{r}/split"], da[f"{r}/label"]
            raw_a, raw_b = da[f"{r}/{q['a_arm']}"].astype(np.float64), db[f"{r}/{q['b_arm']}"].astype(np.float64)
            round_trip = np.array([is_aligned(s) for s in source], dtype=bool)  # training material, never a challenge
            keep = (split == "test") & ~np.isin(source, excluded) & ~round_trip & ~np.isnan(raw_a) & ~np.isnan(raw_b)
            called = {tk: tuple(z[keep] / c["temperature"] + c["bias"] > 0 for z, c in ((raw_a, ab["a"]), (raw_b, ab["b"])))
                      for tk, ab in cal.items()}
            pics = Pictures(source[keep], label[keep].astype(np.int64), raw_a[keep], raw_b[keep], called)
            # the same resamples for every boundary and, where the pairs hold the same test pictures
            # (runs scored on one set), for every pair: the pictures' noise is shared, not four test sets
            res, draws = compare(pics, a.n_boot, np.random.default_rng([a.seed, j]))
            entry["regimes"][r] = {"real_n": int((pics.label == 0).sum()), "fake_n": int((pics.label == 1).sum()),
                                   "excluded_sources": excluded, "targets": res}
            for tk in res:
                all_draws[r][tk][q["label"]] = draws[tk]
        result["pairs"][q["label"]] = entry
    result["pooled"] = {r: {tk: pooled({lb: result["pairs"][lb]["regimes"][r]["targets"][tk] for lb in d}, d)
                            for tk, d in by_t.items() if d}
                        for r, by_t in all_draws.items() if any(by_t.values())}
    result["regimes"] = [r for r in a.regimes if r in result["pooled"]]
    md = markdown(result)
    write_report(a.out, result, md)
    print(md)
    print(f"wrote {a.out} and {Path(a.out).with_suffix('.md')}")
    return result


if __name__ == "__main__":
    main()
