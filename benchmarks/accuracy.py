#!/usr/bin/env python3
"""Regenerate the shipped model's accuracy table from the committed model and the data.

Runs ``bitmind.eval`` on the held-out TEST split (by picture stem, split seed 0: never
trained, tuned or calibrated on) of the data folder, twice: as validator challenges
(random aug or plain, JPEG 75, seeded) and as clean images. Writes
``benchmarks/results/accuracy.json``, ROC/histogram/confusion plots under
``benchmarks/results/accuracy_plots/`` (``--plots DIR``; ``--plots none``: no plots) and
prints the Markdown table used in docs/Model.md, then a per-source table of the headline
regime and its worst real and worst fake source.

    python benchmarks/accuracy.py --data ../shared/data/sn34-mini
    python benchmarks/accuracy.py --data ../shared/data/sn34-mini ../shared/data/sn34-wide --out OUT.json

``--as_sent`` is for data whose files already are validator challenges (e.g.
``../shared/data/sn34-validator``): the files are scored as they are, with and without the
checkpoint's calibration, and never sent through the challenge pipeline a second time.
Every root of one command gets the same treatment, so a challenge pool and an as-sent
pool take two commands:

    python benchmarks/accuracy.py --data ../shared/data/sn34-validator --as_sent --out A.json
    python benchmarks/accuracy.py --data ../shared/data/sn34-mini ../shared/data/sn34-wide --out B.json

``--data`` takes one or more roots, as ``bitmind.eval`` does (each split by picture
stem; per-source figures keyed ``ROOT:CLASS/SOURCE`` when there are several).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from bitmind.checkpoint import CheckpointError
from bitmind.common import atomic_write_text
from bitmind.cli.eval import add_amp_argument, add_data_argument, report_path_problem
from bitmind.data.splits import SPLITS
from bitmind.evaluation import evaluate

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
    ap.add_argument("--split", default="test", choices=SPLITS)
    ap.add_argument("--split_seed", type=int, default=None, help="default: the model's own (its train_options)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="challenge draws (mean and each reported)")
    ap.add_argument("--out", default=str(HERE / "results" / "accuracy.json"))
    ap.add_argument("--device", default="auto")
    add_amp_argument(ap)
    ap.add_argument("--as_sent", action="store_true", help="the files already are validator challenges: score "
                    "them as they are (with and without calibration), no challenge pipeline, no --seeds")
    ap.add_argument("--worst_min_n", type=int, default=10, help="also report the worst real and fake source "
                    "among those with at least this many images (tiny sources are noisy)")
    ap.add_argument("--plots", default=None, help="folder for the ROC/histogram/confusion plots (default: "
                    "accuracy_plots beside --out; 'none': no plots)")
    a = ap.parse_args(argv)
    out = Path(a.out)
    plots = None if (a.plots or "").lower() == "none" else str(Path(a.plots) if a.plots else out.parent / "accuracy_plots")
    # the checks bitmind.eval makes of its --json / --plots (writable, not the model, not a
    # picture or model file, not inside a folder the pictures are read from), before minutes of evaluations
    problem = report_path_problem(argparse.Namespace(json=a.out, plots=plots, model=a.model, data=a.data))
    if problem:
        ap.error(problem.replace("--json", "--out"))
    try:
        return run(a, out, plots)
    except (CheckpointError, OSError, ValueError) as e:  # a missing model or data folder: one line, exit 2
        ap.error(str(e))


def run(a: argparse.Namespace, out: Path, plots: str | None) -> dict:
    """The evaluations ``main`` asked for, their report written to ``out``."""
    kw = dict(split=a.split, split_seed=a.split_seed, device=a.device, progress=False, amp=a.amp)
    if a.as_sent:
        clean = evaluate(a.model, a.data, challenge=False, plots_dir=plots, **kw)
        raw = evaluate(a.model, a.data, challenge=False, temperature=1.0, logit_bias=0.0, **kw)
        first, headline = clean, "as sent"
        results = {"as sent": clean, "as sent, uncalibrated": raw}
        per_source = {"per_source_clean": clean.get("per_source")}
        seeds_used = None
    else:
        runs = {f"challenge seed {s}": evaluate(a.model, a.data, challenge=True, seed=s, **kw) for s in a.seeds}
        clean = evaluate(a.model, a.data, challenge=False, plots_dir=plots, **kw)
        # The same images scored with the raw sigmoid (no calibration): Brier before/after.
        raw = {f"challenge seed {a.seeds[0]}, uncalibrated": evaluate(a.model, a.data, challenge=True, seed=a.seeds[0], temperature=1.0, logit_bias=0.0, **kw),
               "clean, uncalibrated": evaluate(a.model, a.data, challenge=False, temperature=1.0, logit_bias=0.0, **kw)}
        first = next(iter(runs.values()))
        mean = {k: sum(r[k] for r in runs.values()) / len(runs) for k, _ in ROWS if all(isinstance(r.get(k), (int, float)) for r in runs.values())}
        mean["n"] = first["n"]
        headline = f"challenge (mean of {len(runs)})"
        results = {headline: mean, **runs, "clean": clean, **raw}
        per_source = {"per_source_clean": clean.get("per_source"), "per_source_challenge_seed0": first.get("per_source"),
                      "per_source_challenge_mean": mean_per_source([r.get("per_source") or {} for r in runs.values()])}
        seeds_used = a.seeds
    head_sources = per_source.get("per_source_challenge_mean") or per_source["per_source_clean"] or {}
    summary = {"model": a.model, "sha256": first.get("model", {}).get("sha256"), "data": a.data, "split": a.split,
               "split_seed": (first.get("options") or {}).get("split_seed", a.split_seed),  # the one used
               "mode": "as_sent" if a.as_sent else "challenge", "seeds": seeds_used,
               "headline": headline, "results": results, **per_source, "worst": worst_sources(head_sources),
               "worst_min_n": a.worst_min_n, "worst_of_min_n": worst_sources(head_sources, a.worst_min_n)}
    print(table(results))
    print(f"\nper source, {headline}:\n" + source_table(head_sources))
    for label, w in (("", summary["worst"]), (f" of >= {a.worst_min_n} images", summary["worst_of_min_n"])):
        for cls in ("real", "fake"):
            if w.get(cls):
                print(f"worst {cls}{label}: {w[cls]['source']} {w[cls]['accuracy']:.3f} (n={w[cls]['n']})")
    # after the tables: a failed write (a full disk) loses no result; at once: it keeps the old file whole
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(summary, indent=2, default=str))
    print(f"\nwritten {out}")
    return summary


def mean_per_source(per_seed: list[dict]) -> dict:
    """Per-source accuracy averaged over challenge draws (each source's ``n``, class counts,
    the mean accuracy and each draw's): the images are the same, the transformations differ."""
    out = {}
    for name in sorted(set().union(*per_seed)) if per_seed else []:
        rows = [d[name] for d in per_seed if name in d]
        accs = [r["accuracy"] for r in rows]
        out[name] = {"n": rows[0]["n"], "n_real": rows[0]["n_real"], "n_fake": rows[0]["n_fake"],
                     "accuracy": sum(accs) / len(accs), "accuracy_per_seed": accs}
    return out


def source_class(row: dict) -> str:
    return "real" if row.get("n_real") and not row.get("n_fake") else "fake" if row.get("n_fake") and not row.get("n_real") else "mixed"


def worst_sources(per_source: dict, min_n: int = 0) -> dict:
    """The real source and the fake source with the lowest accuracy among those with at
    least ``min_n`` images (ties: the larger one)."""
    out = {}
    for cls in ("real", "fake"):
        rows = [(r["accuracy"], -r["n"], name) for name, r in per_source.items()
                if source_class(r) == cls and r["n"] >= min_n]
        if rows:
            acc, neg_n, name = min(rows)
            out[cls] = {"source": name, "accuracy": acc, "n": -neg_n}
    return out


def source_table(per_source: dict) -> str:
    lines = ["| class | source | images | accuracy |", "|---|---|---:|---:|"]
    for cls in ("real", "fake", "mixed"):
        for name, r in sorted(per_source.items(), key=lambda kv: kv[1]["accuracy"]):
            if source_class(r) == cls:
                lines.append(f"| {cls} | {name} | {r['n']} | {r['accuracy']:.3f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
