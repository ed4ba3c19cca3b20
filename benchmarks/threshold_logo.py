#!/usr/bin/env python3
"""Is the served threshold right for generators the model has never seen?

The shipped model's threshold comes from a class-balanced Platt fit on the validation
split (docs/Model.md). That split holds only known sources; a miner is paid on unknown
ones too. The leave-one-family-out folds answer the question without the hidden set:
each fold model gets the same calibration the protocol gives it (class-balanced Platt on
its validation pictures, the held-out family left out), then its decision boundary is
moved by ``delta`` logits (positive: more "AI-generated" answers), and the held-out
family's detection and the real test photos' accuracy are read at every shift. Their
mean over the folds, and their average (balanced accuracy on unseen generators), say
where the boundary should be. The model trained on everything gives the in-pool curve
beside it.

    python benchmarks/threshold_logo.py --scores benchmarks/results/generalisation_controls_scores.npz \\
        --logo_spec benchmarks/results/generalisation_controls_spec.json --arm patch96nopool rgbpatch96

Writes ``benchmarks/results/threshold_logo.json`` and ``docs/figures/threshold_logo.png``.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from bitmind.training.logo import (FOLD_SEP, REAL_FOLD_PREFIX, REGIMES, add_ensembles, fold_calibration, held_out_sources,
                                  parse_ensembles)

HERE = Path(__file__).resolve().parent


def calibrated_logits(data, name: str, excluded: list[str], regime: str, real_target: float | None = None) -> np.ndarray:
    """The protocol's calibration of one model (``logo.fold_calibration``, with its boundary
    at ``real_target`` of the validation real photos if given), applied to its raw logits in
    ``regime``; NaN where unscored."""
    t, b = fold_calibration(data, name, excluded, real_target=real_target)
    return data[f"{regime}/{name}"].astype(np.float64) / t + b


def shift_curves(z: np.ndarray, fake: np.ndarray, real: np.ndarray, deltas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Detection of the ``fake`` pictures and accuracy on the ``real`` ones when the
    boundary (calibrated logit 0) moves by each delta (answer AI when z + delta > 0)."""
    det = np.array([(z[fake] + d > 0).mean() if fake.any() else np.nan for d in deltas])
    real_acc = np.array([(z[real] + d <= 0).mean() if real.any() else np.nan for d in deltas])
    return det, real_acc


def fold_models(data, spec: dict, arm: str, regime: str, real_kinds: bool):
    """The arm's fold models scored in ``regime``, as (variant, fold, excluded sources): its
    generator folds, or with ``real_kinds`` its ``real-<kind>`` (unseen camera) folds."""
    prefix = arm + FOLD_SEP
    for name, v in spec["variants"].items():
        fold = name[len(prefix):]
        if name.startswith(prefix) and fold.startswith(REAL_FOLD_PREFIX) == real_kinds and f"{regime}/{name}" in data:
            yield name, fold, list(v.get("exclude_sources", []))


def arm_curves(data, spec: dict, arm: str, regime: str, deltas: np.ndarray, real_target: float | None = None) -> dict:
    """Held-out curves (mean over the arm's folds) and in-pool curves (its everything model)."""
    own = set(spec["variants"][arm].get("exclude_sources", []))
    source, split, label = data[f"{regime}/source"], data[f"{regime}/split"], data[f"{regime}/label"]
    all_sources = sorted(set(source))
    dets, reals, folds = [], [], []
    for name, fold, excluded in fold_models(data, spec, arm, regime, real_kinds=False):  # no fakes held out in a real-<kind> fold
        z = calibrated_logits(data, name, excluded, regime, real_target)
        ok = ~np.isnan(z)
        det, real_acc = shift_curves(z, ok & (label == 1) & np.isin(source, held_out_sources(fold, all_sources)),
                                     ok & (label == 0) & (split == "test") & ~np.isin(source, excluded), deltas)
        dets.append(det)
        reals.append(real_acc)
        folds.append(fold)
    if not folds:
        raise KeyError(f"{arm!r} has no folds scored in the {regime} regime")
    z = calibrated_logits(data, arm, sorted(own), regime, real_target)
    ok = ~np.isnan(z) & (split == "test") & ~np.isin(source, sorted(own))
    in_det, in_real = shift_curves(z, ok & (label == 1), ok & (label == 0), deltas)
    det, real_acc = np.nanmean(dets, axis=0), np.nanmean(reals, axis=0)
    bal, in_bal = (det + real_acc) / 2, (in_det + in_real) / 2
    best, in_best = int(np.nanargmax(bal)), int(np.nanargmax(in_bal))
    r3 = lambda a: [round(float(x), 4) for x in a]  # noqa: E731
    return {"folds": folds,
            "heldout": {"detection": r3(det), "real_accuracy": r3(real_acc), "balanced": r3(bal),
                        "best_delta": float(deltas[best]), "best_balanced": round(float(bal[best]), 4)},
            "in_pool": {"detection": r3(in_det), "real_accuracy": r3(in_real), "balanced": r3(in_bal),
                        "best_delta": float(deltas[in_best]), "best_balanced": round(float(in_bal[in_best]), 4)}}


def unseen_real_curve(data, spec: dict, arm: str, regime: str, deltas: np.ndarray, real_target: float | None = None) -> dict | None:
    """Accuracy on a kind of real photo the model never saw (the arm's ``real-<kind>`` folds,
    each calibrated as the protocol calibrates it), mean over those folds at every shift;
    None when the arm has no such folds in these scores."""
    source = data[f"{regime}/source"]
    all_sources = sorted(set(source))
    curves, folds = [], []
    for name, fold, excluded in fold_models(data, spec, arm, regime, real_kinds=True):
        z = calibrated_logits(data, name, excluded, regime, real_target)
        unseen = ~np.isnan(z) & np.isin(source, held_out_sources(fold, all_sources))
        curves.append(shift_curves(z, np.zeros_like(unseen), unseen, deltas)[1])
        folds.append(fold)
    if not folds:
        return None
    return {"folds": folds, "real_accuracy": [round(float(x), 4) for x in np.nanmean(curves, axis=0)]}


def both_unseen(curves: dict, cameras: dict, deltas: np.ndarray) -> dict:
    """The hidden set's situation, where the generators AND the cameras are new: held-out
    family detection (generator folds) and unseen-kind real accuracy (camera folds) at each
    shift, their average, and the shift that maximises it."""
    bal = (np.array(curves["heldout"]["detection"]) + np.array(cameras["real_accuracy"])) / 2
    best = int(np.nanargmax(bal))
    return {"balanced": [round(float(x), 4) for x in bal], "best_delta": float(deltas[best]),
            "best_balanced": round(float(bal[best]), 4)}


def boundary_rules(data, spec: dict, cam_data, cam_spec: dict, arm: str, regime: str, targets) -> dict:
    """Each fold's boundary put where ``target`` of ITS validation real photos pass (the rule
    ``bitmind.calibration.real_target_bias`` ships), instead of shifting the Platt boundary
    by one delta for all: held-out family detection, known and unseen real accuracy, and
    their both-unseen balance, per target (0 = the Platt boundary)."""
    zero = np.zeros(1)
    rows = {}
    for target in targets:
        c = arm_curves(data, spec, arm, regime, zero, target)
        cams = unseen_real_curve(cam_data, cam_spec, arm, regime, zero, target)
        det, real = c["heldout"]["detection"][0], c["heldout"]["real_accuracy"][0]
        unseen = cams["real_accuracy"][0] if cams else None
        rows[f"{target:g}"] = {"heldout_detection": det, "known_real_accuracy": real, "unseen_real_accuracy": unseen,
                               "both_unseen_balanced": None if unseen is None else round((det + unseen) / 2, 4),
                               "in_pool_balanced": c["in_pool"]["balanced"][0]}
    return rows


def figure(result: dict, path: Path) -> None:
    from bitmind.plots import new_figure

    deltas = np.array(result["deltas"])
    arms = list(result["arms"])
    fig, axes = new_figure(ncols=len(REGIMES), size=(5.2, 4.0))
    for ax, regime in zip(axes, REGIMES):
        for i, arm in enumerate(arms):
            r = result["arms"][arm].get(regime)
            if not r:
                continue
            c = f"C{i}"
            ax.plot(deltas, r["heldout"]["balanced"], color=c, lw=2, label=f"{arm}: held-out families")
            ax.plot(deltas, r["in_pool"]["balanced"], color=c, lw=1, ls="--", label=f"{arm}: in-pool test")
            if "both_unseen" in r:
                ax.plot(deltas, r["both_unseen"]["balanced"], color=c, lw=2, ls="-.",
                        label=f"{arm}: unseen families and unseen real kinds")
        ax.axvline(0, color="k", lw=0.8, ls=":")
        ax.set_title(f"{regime} regime")
        ax.set_xlabel("boundary shift (logits; > 0: more 'AI' answers)")
        ax.set_ylabel("balanced accuracy")
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=3, fontsize=7)
    fig.savefig(path, dpi=110)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scores", required=True, help="LOGO scores (.npz written by generalisation.py score)")
    p.add_argument("--logo_spec", required=True, help="the sweep spec of those scores (its variants' exclusions)")
    p.add_argument("--arm", nargs="+", required=True, help="recipes with folds, e.g. patch96nopool")
    p.add_argument("--ensemble", nargs="*", default=[], metavar="NAME=ARM+ARM",
                   help="mean-logit ensembles of arms, fold by fold (as generalisation.py analyse); name them in --arm too")
    p.add_argument("--cameras", nargs=2, metavar=("SCORES", "SPEC"), default=None,
                   help="scores and spec of a run with real-<kind> folds for the same arms (logo_cameras.json), "
                        "when they are not in --scores: adds unseen-real accuracy and the both-unseen curve")
    p.add_argument("--real_targets", type=float, nargs="*", default=[0, 0.85, 0.9, 0.95],
                   help="boundary rules to compare: each fold's boundary where this share of its validation real "
                        "photos pass (0: the Platt boundary)")
    p.add_argument("--delta_range", type=float, nargs=3, default=(-2.0, 1.5, 0.125), metavar=("FROM", "TO", "STEP"))
    p.add_argument("--out", default=str(HERE / "results" / "threshold_logo.json"))
    p.add_argument("--figure", default=str(HERE.parent / "docs" / "figures" / "threshold_logo.png"))
    a = p.parse_args(argv)
    lo, hi, step = a.delta_range
    deltas = np.round(np.arange(lo, hi + step / 2, step), 6)
    try:
        ensembles = parse_ensembles(a.ensemble)
    except ValueError as e:
        p.error(str(e))

    def load(scores, spec_path) -> tuple[dict, dict]:
        spec = json.loads(Path(spec_path).read_text())
        data, variants = add_ensembles(np.load(scores, allow_pickle=False), spec["variants"], ensembles)
        return data, {**spec, "variants": variants}

    data, spec = load(a.scores, a.logo_spec)
    variants = spec["variants"]
    unknown = [arm for arm in a.arm if not any(f"{r}/{arm}" in data for r in REGIMES)]
    if unknown:
        p.error(f"no scores for arm(s) {unknown}; the scores hold {sorted(v for v in variants if FOLD_SEP not in v)}")
    no_generator_folds = [arm for arm in a.arm
                          if not any(any(True for _ in fold_models(data, spec, arm, r, real_kinds=False)) for r in REGIMES)]
    if no_generator_folds:  # e.g. a camera-only run (logo_cameras_s1_135.json): it belongs in --cameras
        p.error(f"arm(s) {no_generator_folds} have no generator folds in {a.scores}; a run with only real-<kind> folds "
                "goes in --cameras SCORES SPEC beside the scores of a run with generator folds")
    result = {"scores": str(a.scores), "logo_spec": str(a.logo_spec), "deltas": deltas.tolist(),
              "arms": {arm: {r: arm_curves(data, spec, arm, r, deltas) for r in REGIMES if f"{r}/{arm}" in data}
                       for arm in a.arm}}
    cam_data, cam_spec = load(*a.cameras) if a.cameras else (data, spec)
    if a.cameras:
        result["cameras"] = {"scores": a.cameras[0], "logo_spec": a.cameras[1]}
    for arm, regimes in result["arms"].items():
        for r, c in regimes.items():
            cams = unseen_real_curve(cam_data, cam_spec, arm, r, deltas) if f"{r}/source" in cam_data else None
            if cams:
                c["unseen_real"] = cams
                c["both_unseen"] = both_unseen(c, cams, deltas)
            if a.real_targets:
                c["boundary_rules"] = boundary_rules(data, spec, cam_data, cam_spec, arm, r, a.real_targets)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=1))
    if a.figure:
        figure(result, Path(a.figure))
    i0 = int(np.argmin(np.abs(deltas)))
    for arm, regimes in result["arms"].items():
        for r, c in regimes.items():
            h, ip = c["heldout"], c["in_pool"]
            print(f"{arm:16s} {r:9s} held-out balanced {h['balanced'][i0]:.3f} at 0 (det {h['detection'][i0]:.3f}, "
                  f"real {h['real_accuracy'][i0]:.3f}); best {h['best_balanced']:.3f} at {h['best_delta']:+.3f} | "
                  f"in-pool {ip['balanced'][i0]:.3f} at 0, best {ip['best_balanced']:.3f} at {ip['best_delta']:+.3f}")
            if "both_unseen" in c:
                b = c["both_unseen"]
                print(f"{'':16s} {r:9s} unseen real kinds {c['unseen_real']['real_accuracy'][i0]:.3f} at 0; unseen families "
                      f"and kinds balanced {b['balanced'][i0]:.3f} at 0, best {b['best_balanced']:.3f} at {b['best_delta']:+.3f}")
            for t, row in c.get("boundary_rules", {}).items():
                f = lambda v: "  -  " if v is None else f"{v:.3f}"  # noqa: E731
                print(f"{'':16s} {r:9s} boundary at {t:>4} of validation real: det {f(row['heldout_detection'])}, known real "
                      f"{f(row['known_real_accuracy'])}, unseen real {f(row['unseen_real_accuracy'])}, both unseen "
                      f"{f(row['both_unseen_balanced'])}, in-pool {f(row['in_pool_balanced'])}")
    print(f"wrote {a.out}" + (f" and {a.figure}" if a.figure else ""))
    return result


if __name__ == "__main__":
    main()
