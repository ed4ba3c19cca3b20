#!/usr/bin/env python3
"""Regenerate the shipped model's accuracy table from the committed model and the data.

Runs ``bitmind.eval`` on the held-out TEST split (by picture stem, split seed 0: never
trained, tuned or calibrated on) of the data folder, twice: as validator challenges
(random aug or plain, JPEG 75, seeded) and as clean images. Writes
``benchmarks/results/accuracy.json``, ROC/histogram/confusion plots under
``benchmarks/results/accuracy_plots/`` and prints the Markdown table used in
docs/Model.md.

    python benchmarks/accuracy.py --data ../shared/data/sn34-mini
    python benchmarks/accuracy.py --data ../shared/data/sn34-mini ../shared/data/sn34-wide --out OUT.json

``--data`` takes one or more roots, as ``bitmind.eval`` does (each split by picture
stem; per-source figures keyed ``ROOT:CLASS/SOURCE`` when there are several).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from bitmind.eval import add_data_argument, evaluate

HERE = Path(__file__).resolve().parent
ROWS = (("accuracy", "accuracy"), ("ap", "AP"), ("roc_auc", "ROC AUC"), ("real_accuracy", "real-photo accuracy"),
        ("fake_accuracy", "fake accuracy"), ("balanced_accuracy", "balanced accuracy"), ("brier", "Brier"),
        ("mcc", "MCC"), ("n", "images"))


def table(results: dict) -> str:
    cols = list(results)
    lines = ["| metric | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for key, name in ROWS:
        cells = []
        for c in cols:
            v = results[c].get(key)
            cells.append("-" if v is None else (str(v) if isinstance(v, int) else f"{v:.3f}"))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(HERE.parent / "mining_models" / "base.pth"))
    add_data_argument(ap)
    ap.add_argument("--split", default="test")
    ap.add_argument("--split_seed", type=int, default=0)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="challenge draws (mean and each reported)")
    ap.add_argument("--out", default=str(HERE / "results" / "accuracy.json"))
    ap.add_argument("--device", default="auto")
    a = ap.parse_args(argv)
    out = Path(a.out)
    plots = out.with_suffix("").parent / "accuracy_plots"
    kw = dict(split=a.split, split_seed=a.split_seed, device=a.device, progress=False)
    runs = {f"challenge seed {s}": evaluate(a.model, a.data, challenge=True, seed=s, **kw) for s in a.seeds}
    clean = evaluate(a.model, a.data, challenge=False, plots_dir=str(plots), **kw)
    # The same images scored with the raw sigmoid (no calibration): Brier before/after.
    raw = {f"challenge seed {a.seeds[0]}, uncalibrated": evaluate(a.model, a.data, challenge=True, seed=a.seeds[0], temperature=1.0, logit_bias=0.0, **kw),
           "clean, uncalibrated": evaluate(a.model, a.data, challenge=False, temperature=1.0, logit_bias=0.0, **kw)}
    first = next(iter(runs.values()))
    mean = {k: sum(r[k] for r in runs.values()) / len(runs) for k, _ in ROWS if all(isinstance(r.get(k), (int, float)) for r in runs.values())}
    mean["n"] = first["n"]
    results = {f"challenge (mean of {len(runs)})": mean, **runs, "clean": clean, **raw}
    summary = {"model": a.model, "sha256": first.get("model", {}).get("sha256"), "data": a.data, "split": a.split,
               "split_seed": a.split_seed, "results": results,
               "per_source_clean": clean.get("per_source"), "per_source_challenge_seed0": first.get("per_source")}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2, default=str))
    md = table(results)
    print(md)
    print(f"\nwritten {out}")
    return summary


if __name__ == "__main__":
    main()
