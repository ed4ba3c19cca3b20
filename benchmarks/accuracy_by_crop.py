#!/usr/bin/env python3
"""Where detectors lose accuracy on validator challenges: accuracy by how much the
challenge's random resized crop up-sampled the picture.

A validator sends a share of challenges as plain base transforms and the rest through
random aug, whose random resized crop takes 20-100 % of the picture's area and scales
it back to 256 px with bilinear interpolation (up to 2.24x). That re-grids the pixels
whose local correlations NPR-style detectors read. This script replays each challenge's
random draws (the same seeded draws as ``bitmind.eval --challenge``), records the
branch and the up-sampling factor, and reports each model's accuracy per bin.

    python benchmarks/accuracy_by_crop.py --data ../shared/data/sn34-mini \\
        --models mining_models/base.pth mining_models/npr_f2.pth

Also reports the same images clean (no challenge processing at all), which separates
the cost of the JPEG 75 round trip (the "plain" branch) from that of the geometry.

Writes ``benchmarks/results/accuracy_by_crop.json`` and ``docs/figures/accuracy_by_crop.png``.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from bitmind.checkpoint import load_model
from bitmind.evaluation import build_dataset, collect_predictions
from bitmind.image_transforms import CenterCropShortSide, RandomAugment, ValidatorPipeline

HERE = Path(__file__).resolve().parent
#: Up-sampling factor bins: 1.0 is plain or a full-area crop; 2.24 is the 20 %-area extreme.
EDGES = (1.0, 1.15, 1.4, 1.7, 2.0, 2.3)


def challenge_params(dataset, k: int, pipeline: ValidatorPipeline) -> dict:
    """Replay challenge ``k``'s draws: its branch and, for random aug, the crop's up-sampling factor."""
    rng = dataset.rng_for(k)
    if rng.random() < pipeline.plain_share:
        return {"branch": "plain", "upsample": 1.0}
    src, i = dataset.items[k]
    img = CenterCropShortSide()(src.load(i))
    _, _, ch, cw = RandomAugment(pipeline.size).sample(img.width, img.height, rng)["crop"]
    return {"branch": "random_aug", "upsample": pipeline.size / max(ch, cw)}


def bin_label(lo: float, hi: float) -> str:
    return f"{lo:.2f}-{hi:.2f}x"


def plot(report: dict, path: str | Path) -> None:
    """The report's accuracy per challenge bin, one bar per model."""
    from bitmind.plots import new_figure

    bins, models = report["bins"], list(report["models"])
    fig, (ax,) = new_figure(1, 1, size=(7.0, 4.0))
    xs = np.arange(len(bins))
    width = 0.8 / len(models)
    for j, n in enumerate(models):
        ax.bar(xs + j * width - 0.4 + width / 2, [b[n] for b in bins], width, label=n)
    ax.set_xticks(xs, [f"{b['bin']}\n(n={b['n']})".replace(" (", "\n(", 1) for b in bins], fontsize=7)
    ax.set(ylim=(0.5, 1.0), ylabel="accuracy", xlabel="random aug bins: the crop's up-sampling factor (all challenges then JPEG 75)",
           title=f"Accuracy by challenge up-sampling ({report['split']} split, seeds {report['seeds']})")
    ax.legend(fontsize=8, loc="lower left")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=[str(HERE.parent / "mining_models" / "base.pth")])
    ap.add_argument("--data", required=True)
    ap.add_argument("--split", default="test")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=str(HERE / "results" / "accuracy_by_crop.json"))
    ap.add_argument("--figure", default=str(HERE.parent / "docs" / "figures" / "accuracy_by_crop.png"))
    args = ap.parse_args(argv)

    pipeline = ValidatorPipeline()
    rows = []  # one per (seed, image): branch, upsample factor, label, and each model's probability
    models = {Path(m).name: load_model(m, device=args.device) for m in args.models}
    # Reference: the same images without any challenge processing (no geometry, no JPEG 75).
    clean_ds = build_dataset([args.data], split=args.split, challenge=False)
    clean = {}
    for name, lm in models.items():
        pr = collect_predictions(lm, clean_ds, device=args.device, progress=False)
        clean[name] = float(np.mean((pr.probs > 0.5) == (pr.labels == 1)))
    for seed in args.seeds:
        ds = build_dataset([args.data], split=args.split, challenge=True, seed=seed, pipeline=pipeline)
        params = [challenge_params(ds, k, pipeline) for k in range(len(ds))]
        probs = {}
        for name, lm in models.items():
            pr = collect_predictions(lm, ds, device=args.device, progress=False)
            probs[name] = dict(zip(pr.index.tolist(), pr.probs.tolist()))
            labels = dict(zip(pr.index.tolist(), pr.labels.tolist()))
        for k, p in enumerate(params):
            if all(k in probs[n] for n in models):
                rows.append({"seed": seed, "k": k, "label": int(labels[k]), **p, **{n: probs[n][k] for n in models}})

    def acc(sel, name):
        return float(np.mean([(r[name] > 0.5) == (r["label"] == 1) for r in sel])) if sel else math.nan

    bins = [{"bin": "clean (no challenge)", "n": len(clean_ds), **clean}]
    plain = [r for r in rows if r["branch"] == "plain"]
    bins.append({"bin": "plain (JPEG 75 only)", "n": len(plain), **{n: acc(plain, n) for n in models}})
    aug = [r for r in rows if r["branch"] == "random_aug"]
    for lo, hi in zip(EDGES[:-1], EDGES[1:]):
        sel = [r for r in aug if lo <= r["upsample"] < hi]
        bins.append({"bin": bin_label(lo, hi), "n": len(sel), **{n: acc(sel, n) for n in models}})
    overall = {"bin": "all", "n": len(rows), **{n: acc(rows, n) for n in models}}
    report = {"split": args.split, "seeds": args.seeds, "models": {n: str(m) for n, m in zip(models, args.models)},
              "bins": bins, "overall": overall}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))

    print("| challenge | n | " + " | ".join(models) + " |")
    print("|---|---|" + "---|" * len(models))
    for b in bins + [overall]:
        print(f"| {b['bin']} | {b['n']} | " + " | ".join(f"{b[n]:.3f}" for n in models) + " |")

    plot(report, args.figure)
    print(f"wrote {args.out} and {args.figure}")
    return report


if __name__ == "__main__":
    main()
