#!/usr/bin/env python3
"""Held-out detection by how much the validator pipeline resized each crop.

LOGO's crops regime sends every crop through the seeded validator pipeline: 20 % plain
(the native 256 px crop, JPEG 75), the rest rotated and random-resized-cropped, which
up-scales by 1-2.2x. One mean per arm hides where an arm wins or loses. This replays each
picture's draws (``ValidatorPipeline.resize_factor`` with the dataset's per-picture RNG,
as ``generalisation.py score`` drew them; no pixels, no model) and reports, per arm and
resize bin, the held-out AUC of each generator fold (its held-out family against the
test-split real photos) and their mean. Threshold-free, so arms on other logit scales
(pooled arms) compare directly.

    python benchmarks/logo_by_resize.py --scores benchmarks/results/generalisation_topk_scores.npz \\
        --logo_spec benchmarks/results/generalisation_topk_spec.json \\
        --data ../shared/data/sn34-mini ../shared/data/sn34-wide --arm mean_s0 top5_s0 \\
        --out benchmarks/results/logo_by_resize_topk.json

``--data``: the crop roots in the order they were scored (a scored aligned root after them
may be left out: only a prefix of the scored pictures is needed; the sources must match).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from bitmind.training.logo import resize_bins
from bitmind.training.logo import scored_resize_factors as resize_factors  # the name its tests and callers use

HERE = Path(__file__).resolve().parent


def by_resize(z, spec: dict, factors: np.ndarray, arms: list[str], edges: list[float], regime: str = "crops") -> dict:
    """``{arm: {bin: {"mean_heldout_auc", "per_family", "n"}}}`` over the generator folds
    (``<arm>.minus-<family>``, real-kind folds left out) of ``arms``."""
    n = len(factors)
    source, split, label = z[f"{regime}/source"][:n], z[f"{regime}/split"][:n], z[f"{regime}/label"][:n]
    bins = resize_bins(factors, edges)
    from bitmind.training.logo import pos_neg_auc

    out: dict = {}
    for arm in arms:
        folds = [v for v in spec["variants"] if v.startswith(f"{arm}.minus-") and ".minus-real-" not in v
                 and f"{regime}/{v}" in z.files]
        if not folds:
            raise SystemExit(f"{arm!r} has no generator folds in the scores (arms: names before '.minus-')")
        out[arm] = {}
        for name, sel in bins.items():
            fams = {}
            for v in folds:
                logit = z[f"{regime}/{v}"][:n]
                held = np.isin(source, spec["variants"][v]["exclude_sources"])
                fams[v.split(".minus-", 1)[1]] = pos_neg_auc(logit[sel & held], logit[sel & (label == 0) & (split == "test")])
            got = [a for a in fams.values() if a is not None]
            out[arm][name] = {"mean_heldout_auc": float(np.mean(got)) if got else None, "per_family": fams,
                              "n": int(sel.sum())}
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scores", required=True, help="LOGO scores (.npz written by generalisation.py score or merge)")
    p.add_argument("--logo_spec", required=True, help="the spec of those scores (each variant's exclude_sources)")
    p.add_argument("--data", nargs="+", required=True, help="the crop roots, in the order they were scored")
    p.add_argument("--arm", nargs="+", required=True, help="arms with generator folds, e.g. mean_s0 top5_s0")
    p.add_argument("--edges", type=float, nargs="+", default=[1.0, 1.4],
                   help="bin edges of the resize factor (1.0 first: the plain crops form their own bin)")
    p.add_argument("--seed", type=int, default=0, help="the score run's seed (generalisation.py score --seed)")
    p.add_argument("--out", default=str(HERE / "results" / "logo_by_resize.json"))
    a = p.parse_args(argv)
    factors, names = resize_factors(a.data, a.seed)
    spec = json.loads(Path(a.logo_spec).read_text())
    with np.load(a.scores, allow_pickle=False) as z:
        scored = z["crops/source"]
        if len(scored) < len(names) or list(scored[:len(names)]) != names:
            raise SystemExit("--data does not list the scored crop roots in their order (the sources differ)")
        result = {"scores": a.scores, "data": a.data, "edges": a.edges, "seed": a.seed,
                  "arms": by_resize(z, spec, factors, a.arm, a.edges)}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2))
    bins = list(next(iter(result["arms"].values())))
    print(f"{'arm':<14}" + "".join(f"{b:>16}" for b in bins))
    print(f"{'(pictures)':<14}" + "".join(f"{result['arms'][a.arm[0]][b]['n']:>16}" for b in bins))
    for arm, per in result["arms"].items():
        print(f"{arm:<14}" + "".join(f"{per[b]['mean_heldout_auc']:>16.3f}" if per[b]["mean_heldout_auc"] is not None
                                      else f"{'-':>16}" for b in bins))
    print(f"wrote {a.out}")
    return result


if __name__ == "__main__":
    main()
