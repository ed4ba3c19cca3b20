#!/usr/bin/env python3
"""Is the detector limited by its training data? Validation accuracy against the number
of training pictures, from a learning-curve sweep.

The sweep (``base_miner/NPR/sweeps/learning_curve.json``, one GPU run) trains each input
family (raw pixels, NPR + high-pass residual) on nested 1/4, 1/2 and all of the training
pictures (``train_fraction``), on one data stream, and validates every variant on the same
pooled validator-challenge draws of the validation split. This script reads that folder
and reports, per data size, each family's best-epoch accuracy and that of their pair
(mean logit, the shape of the shipped model):

    python -m bitmind.training.sweep --spec base_miner/NPR/sweeps/learning_curve.json --data ../shared/data/sn34-mini
    python benchmarks/learning_curve.py --sweep base_miner/checkpoints/sweep_learning_curve --data ../shared/data/sn34-mini

Writes ``benchmarks/results/learning_curve.json`` and ``docs/figures/learning_curve.png``.
The "doublings to target" line is a log-linear extrapolation of the last doubling's gain:
a rough guide to how much more data a target needs, not a promise (gains usually shrink).
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from bitmind.calibration import apply_calibration
from bitmind.metrics import compute_metrics

HERE = Path(__file__).resolve().parent


def load_sweep(sweep_dir: Path) -> tuple[dict, dict[str, np.ndarray], np.ndarray]:
    """(spec, best-epoch validation logits per variant, labels) of a sweep folder."""
    spec = json.loads((sweep_dir / "spec.json").read_text())
    logits, labels = {}, None
    for name in spec["variants"]:
        f = sweep_dir / name / "val_logits_best.npy"
        if f.is_file():
            arr = np.load(f)
            logits[name], labels = arr[0], arr[1]
    if not logits:
        raise FileNotFoundError(f"no */val_logits_best.npy under {sweep_dir}")
    return spec, logits, labels


def count_subset(data: list[str], fraction: float, split_seed: int = 0) -> int:
    """Training images in the ``fraction`` subset, counted as the sweep selects them."""
    from bitmind.data import in_subset, open_source, split_indices

    n = 0
    for d in data:
        src = open_source(d)
        n += sum(in_subset(src.stem(i), fraction, split_seed) for i in split_indices(src, split_seed)["train"])
    return n


def training_images(sweep_dir: Path, name: str, fraction: float, data: list[str] | None, split_seed: int) -> int | None:
    """Images a variant trained on: from the sweep summary if the sweep finished, else
    counted from ``data`` (a sweep stopped by a time limit writes no summary)."""
    summary = sweep_dir / "sweep.json"
    if summary.is_file():
        v = json.loads(summary.read_text())["variants"].get(name, {})
        if "training_images" in v:
            return int(v["training_images"])
    return count_subset(data, fraction, split_seed) if data else None


def curve(sweep_dir: Path, data: list[str] | None = None) -> dict:
    spec, logits, y = load_sweep(sweep_dir)
    rows: dict[float, dict] = {}
    for name, opts in spec["variants"].items():
        if name not in logits:
            continue
        fam = opts.get("input", spec["base"].get("input", "npr"))
        frac = float(opts.get("train_fraction", 1.0))
        m = compute_metrics(y, apply_calibration(logits[name]))
        if frac not in rows:
            n = training_images(sweep_dir, name, frac, data, int(spec["base"].get("split_seed", 0)))
            rows[frac] = {"fraction": frac, "members": {}, "training_images": n}
        row = rows[frac]
        row["members"][fam] = {"variant": name, "accuracy": m["accuracy"], "ap": m["ap"], "real_accuracy": m["real_accuracy"]}
    for row in rows.values():
        names = [v["variant"] for v in row["members"].values()]
        if len(names) > 1:
            m = compute_metrics(y, apply_calibration(np.mean([logits[n] for n in names], axis=0)))
            row["ensemble"] = {"members": names, "accuracy": m["accuracy"], "ap": m["ap"], "real_accuracy": m["real_accuracy"]}
    ordered = [rows[f] for f in sorted(rows)]
    return {"sweep": str(sweep_dir), "val_challenges": int(len(y)), "val_seeds": spec.get("val_seeds"),
            "epochs": spec["base"].get("epochs"), "rows": ordered}


def doublings_to(target: float, rows: list[dict], key=lambda r: r.get("ensemble", {}).get("accuracy")) -> dict | None:
    """Extrapolate the last doubling's gain (log-linear) to ``target``."""
    pts = [(r["fraction"], key(r)) for r in rows if key(r) is not None]
    if len(pts) < 2:
        return None
    (f0, a0), (f1, a1) = pts[-2], pts[-1]
    gain = (a1 - a0) / math.log2(f1 / f0)
    if gain <= 0:
        return {"gain_per_doubling": gain, "doublings": None}
    d = max(0.0, (target - a1) / gain)
    return {"gain_per_doubling": gain, "target": target, "doublings": d, "data_multiple": 2 ** d}


def plot(result: dict, path: Path) -> None:
    from bitmind.plots import new_figure

    rows = result["rows"]
    x = [r["training_images"] or r["fraction"] for r in rows]
    fig, (ax,) = new_figure(size=(6.4, 4.2))
    fams = sorted({f for r in rows for f in r["members"]})
    for fam in fams:
        ax.plot(x, [r["members"].get(fam, {}).get("accuracy", np.nan) for r in rows], "o--", label=f"{fam} (one network)")
    if any("ensemble" in r for r in rows):
        ax.plot(x, [r.get("ensemble", {}).get("accuracy", np.nan) for r in rows], "s-", lw=2, label="pair (mean logit)")
    ax.set_xscale("log", base=2)
    ax.set_xticks(x)
    ax.set_xticklabels([str(v) for v in x])
    ax.set_xlabel("training pictures (nested subsets of the train split)")
    ax.set_ylabel("validation accuracy on challenges")
    ax.set_title(f"Learning curve ({result['val_challenges']} validation challenges)")
    ax.grid(alpha=0.3)
    ax.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sweep", default="base_miner/checkpoints/sweep_learning_curve", help="learning-curve sweep folder")
    ap.add_argument("--data", nargs="+", default=None, help="the sweep's data, to count subset sizes if the sweep did not finish")
    ap.add_argument("--target", type=float, default=0.95, help="validation accuracy to extrapolate to")
    ap.add_argument("--out", default=str(HERE / "results" / "learning_curve.json"))
    ap.add_argument("--figure", default=str(HERE.parent / "docs" / "figures" / "learning_curve.png"))
    a = ap.parse_args(argv)
    result = curve(Path(a.sweep), a.data)
    result["extrapolation"] = doublings_to(a.target, result["rows"])
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2))
    plot(result, Path(a.figure))
    print(f"{'fraction':>8} {'images':>7}  " + "  ".join(f"{f:>10}" for f in sorted({f for r in result['rows'] for f in r['members']})) + "        pair")
    for r in result["rows"]:
        fams = sorted(r["members"])
        print(f"{r['fraction']:>8.3f} {r['training_images'] or '-':>7}  " + "  ".join(f"{r['members'][f]['accuracy']:>10.4f}" for f in fams)
              + (f"  {r['ensemble']['accuracy']:>10.4f}" if "ensemble" in r else ""))
    ex = result["extrapolation"]
    if ex and ex.get("doublings") is not None:
        print(f"last doubling: +{ex['gain_per_doubling']:.3f} accuracy; at that rate {ex['target']} needs "
              f"{ex['doublings']:.1f} more doublings (~{ex['data_multiple']:.0f}x the data)")
    print(f"wrote {a.out} and {a.figure}")
    return result


if __name__ == "__main__":
    main()
