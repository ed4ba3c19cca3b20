#!/usr/bin/env python3
"""What does an auxiliary family head take an unseen generator for?

Why: a LOGO arm trained with ``aux_weight`` (``bitmind.data.families.aux_classes``) has a
second head that tells real photos and each known fake family apart. Its held-out AUC says
whether the head helped the detector; this read-out says what the head learned. For each
fold it shows how the fold model's head classes the pictures of the family it never saw
(the share of them whose most likely class is each known class, and the mean probability
of "real"), beside the same for the real test photos; for the everything model, how often
the head names the right class of each known class's test pictures (the classes of the arm's
``aux_by`` grouping: families, or finer). A head that reads
decoder traces should send unseen FLUX.1 pictures to its siblings (SD 3.5 shares its kind of
VAE) rather than to "real", and know the families it trained on; one that reads content
sends them wherever the subject matter fits.

Could the head itself detect the unseen family? Beside the read-out, each fold's
held-out AUC and detection at real 0.90 (``bitmind.training.logo.score_fold``'s
definitions, threshold-free) of its detector output and of the head's "not real" log-odds,
log((1 - P(real)) / P(real)): a head whose "real" class were a better boundary than the
detector's would show it here.

    python benchmarks/aux_attribution.py --scores benchmarks/results/generalisation_aux_s1_scores.npz \\
        --spec benchmarks/results/generalisation_aux_s1_spec.json --arm patch96aux \\
        --out benchmarks/results/aux_attribution_s1.json

Reads the ``aux/<regime>/<variant>`` and ``aux_classes/<variant>`` arrays that
``generalisation.py score`` writes for models with the head. Writes the JSON (``--out``)
and a markdown table beside it (``.md``).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from bitmind.data.families import AUX_REAL, aux_class_of
from bitmind.report import report_path, write_report
from bitmind.training.logo import FOLD_SEP, REAL_FOLD_PREFIX, held_out_sources, score_fold


def attribution(probs: np.ndarray, classes: list[str], rows: np.ndarray) -> dict:
    """Of the pictures ``rows``: the share whose most likely class is each class, and the
    mean probability of "real". Pictures the scoring could not read (NaN rows) are left out
    and counted as ``unscored``: an argmax over NaN would call them "real"."""
    p = probs[rows].astype(np.float64)
    scored = ~np.isnan(p).any(axis=1)
    unscored, p = int((~scored).sum()), p[scored]
    if not len(p):
        return {"n": 0, "unscored": unscored, "argmax": {}, "p_real": None}
    top = np.bincount(p.argmax(axis=1), minlength=len(classes)) / len(p)
    return {"n": int(len(p)), "unscored": unscored, "argmax": {c: round(float(s), 4) for c, s in zip(classes, top)},
            "p_real": round(float(p[:, classes.index(AUX_REAL)].mean()), 4)}


def as_detector(scores: np.ndarray, sources, splits, labels, held_out: list[str], excluded: list[str]) -> dict:
    """Held-out AUC and detection at real 0.90 of one score per picture (higher = AI), as
    ``generalisation.py analyse`` scores a fold: the fold's family ``held_out``, everything
    the fold never trained on (``excluded``) kept out of the threshold and the negatives;
    None where the regime has no held-out fakes or no real test photos."""
    r = score_fold(scores.astype(np.float64), sources, splits, labels, held_out, excluded)
    return {"auc": r["heldout_auc"], "at_real90": r["heldout_detection_at_real90"]}


def mean_of(values) -> float | None:
    """The mean of the values that exist (None when none does)."""
    have = [v for v in values if v is not None]
    return round(float(np.mean(have)), 4) if have else None


def head_not_real(probs: np.ndarray, classes: list[str]) -> np.ndarray:
    """The head's log-odds of "not real" (NaN where the picture was not scored)."""
    p = np.clip(probs[:, classes.index(AUX_REAL)].astype(np.float64), 1e-6, 1 - 1e-6)
    return np.log1p(-p) - np.log(p)


def analyse(z, spec: dict, arm: str, regime: str) -> dict:
    key = f"aux/{regime}/{arm}"
    if key not in z.files:
        raise SystemExit(f"no auxiliary head scores for {arm!r} in the {regime} regime (keys like {key}); "
                         "was the arm trained with aux_weight and scored by generalisation.py score?")
    classes = [str(c) for c in z[f"aux_classes/{arm}"]]
    sources, splits, labels = z[f"{regime}/source"], z[f"{regime}/split"], z[f"{regime}/label"]
    real_test = (labels == 0) & (splits == "test")
    present = sorted(set(sources.tolist()))
    out = {"arm": arm, "regime": regime, "classes": classes, "folds": {}, "everything": {}}
    prefix = arm + FOLD_SEP
    for name, v in sorted(spec["variants"].items()):
        fold = name[len(prefix):]
        if not name.startswith(prefix) or fold.startswith(REAL_FOLD_PREFIX) or f"aux/{regime}/{name}" not in z.files:
            continue
        probs = z[f"aux/{regime}/{name}"]
        # the fold's own family (as analyse holds it out), not every source the variant
        # excludes: a control's or recipe's own exclusions are not the unseen family
        held_out, excluded = held_out_sources(fold, present), list(v.get("exclude_sources", []))
        held = np.isin(sources, held_out) & (labels == 1)
        # both scores on the same pictures: a row either could not score is left out of both
        detector, head = z[f"{regime}/{name}"].astype(np.float64), head_not_real(probs, classes)
        unscored = np.isnan(detector) | np.isnan(head)
        detector[unscored], head[unscored] = np.nan, np.nan
        out["folds"][fold] = {"held_out": attribution(probs, classes, held),
                              "real_test": attribution(probs, classes, real_test),
                              "as_detector": {"detector": as_detector(detector, sources, splits, labels, held_out, excluded),
                                              "head_not_real": as_detector(head, sources, splits, labels, held_out, excluded)}}
    if out["folds"]:
        out["as_detector_mean"] = {k: {m: mean_of(f["as_detector"][k][m] for f in out["folds"].values())
                                       for m in ("auc", "at_real90")} for k in ("detector", "head_not_real")}
    probs = z[key]
    # each test picture's class as the arm's head was told it (its ``aux_by`` grouping)
    by = (spec.get("variants", {}).get(arm) or {}).get("aux_by", (spec.get("base") or {}).get("aux_by", "family"))
    fam = np.asarray([AUX_REAL if y == 0 else aux_class_of(str(s), by) for s, y in zip(sources, labels)])
    for c in classes:
        rows = (fam == c) & (splits == "test")
        if rows.any():
            a = attribution(probs, classes, rows)
            out["everything"][c] = {**a, "right": a["argmax"].get(c)}
    return out


def markdown(res: dict) -> str:
    classes = res["classes"]
    head = "| | n | " + " | ".join(classes) + " | mean P(real) |"
    rule = "|---" * (len(classes) + 3) + "|"
    lines = [f"# Auxiliary head of `{res['arm']}` ({res['regime']} regime)", "",
             "Share of the pictures whose most likely class is each class.", "",
             "## Folds: the held-out family's pictures (all splits), and the real test photos", "", head, rule]
    for fold, r in res["folds"].items():
        for what, a in (("held out", r["held_out"]), ("real test", r["real_test"])):
            cells = " | ".join(f"{a['argmax'].get(c, 0):.2f}" for c in classes)
            p_real = f"{a['p_real']:.2f}" if a["p_real"] is not None else "-"
            lines.append(f"| {fold}: {what} | {a['n']} | {cells} | {p_real} |")
    if res.get("as_detector_mean"):
        lines += ["", "## Folds as detectors of their held-out family: the detector output and the head's \"not real\"",
                  "", "| fold | detector AUC | head AUC | detector at real 0.90 | head at real 0.90 |", "|---|---|---|---|---|"]
        rows = [(f, r["as_detector"]) for f, r in res["folds"].items()] + [("mean", res["as_detector_mean"])]
        cell = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731 - no held-out fakes in this regime
        for f, d in rows:
            lines.append(f"| {f} | {cell(d['detector']['auc'])} | {cell(d['head_not_real']['auc'])} | "
                         f"{cell(d['detector']['at_real90'])} | {cell(d['head_not_real']['at_real90'])} |")
    lines += ["", "## Everything model: each known family's test pictures", "", head, rule]
    for c, a in res["everything"].items():
        cells = " | ".join(f"**{a['argmax'].get(k, 0):.2f}**" if k == c else f"{a['argmax'].get(k, 0):.2f}" for k in classes)
        lines.append(f"| {c} | {a['n']} | {cells} | {a['p_real']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scores", required=True, help="a LOGO scores .npz (generalisation.py score)")
    p.add_argument("--spec", required=True, help="its logo_spec.json")
    p.add_argument("--arm", required=True, help="the recipe trained with aux_weight")
    p.add_argument("--regime", default="validator", choices=("validator", "crops"))
    p.add_argument("--out", type=report_path, required=True, help="JSON to write (a .md beside it)")
    a = p.parse_args(argv)
    with np.load(a.scores, allow_pickle=False) as z:
        res = analyse(z, json.loads(Path(a.spec).read_text()), a.arm, a.regime)
    md = markdown(res)
    write_report(a.out, res, md)
    print(md)
    return res


if __name__ == "__main__":
    main()
