"""Did a model learn a synthetic trace itself? AUC of synthetic fakes against real photos, per root and resize.

Synthetic up-sampling fakes (``aligned_fakes --synthetic``) only teach something about unseen
generators if the detector learns their trace at all, through the validator pipeline that
every training crop goes through. This reads a scored sweep whose crop roots include one or
more synthetic roots (``base_miner/NPR/sweeps/probe_synth_strength.json``: a weak and a
strong root, arms trained on one, the other or neither) and reports, per arm, the AUC of each
synthetic root's test-split fakes against the test-split real photos, overall and by how much
the validator pipeline resized each crop (replayed as scored: ``scored_resize_factors``),
and the same for the generator fakes (the in-pool yardstick). Threshold-free.

    python benchmarks/synthetic_learnability.py --scores benchmarks/results/probe_synth_strength_scores.npz \\
        --data ../shared/data/sn34-mini ../shared/data/sn34-wide WORK/synth_weak WORK/synth_strong \\
        --out benchmarks/results/synthetic_learnability.json

``--data``: every crop root in the order it was scored (the synthetic roots need only their
test split: ``aligned_fakes --synthetic --split test`` with the run's ``--synthetic_rms``
rebuilds them with the same names and sizes, which is all the replay reads).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from bitmind.training.logo import pos_neg_auc, resize_bins, scored_items, scored_resize_factors
from bitmind.training.upsampling_traces import SYNTHETIC_SOURCE

HERE = Path(__file__).resolve().parent
SYNTHETIC = f"fake/{SYNTHETIC_SOURCE}"


def root_of_each(roots: list[str]) -> np.ndarray:
    """The index into ``roots`` of every scored picture, in scoring order."""
    return np.concatenate([np.full(len(scored_items([r])), k) for k, r in enumerate(roots)])


def learnability(z, roots: list[str], factors: np.ndarray, arms: list[str], edges: list[float]) -> dict:
    """``{arm: {group: {bin: {"auc", "n"}}}}``; groups: each synthetic root by folder name, and
    ``generators`` (every other fake); bins: ``all`` and the resize bins of ``edges``."""
    source, split, label = z["crops/source"], z["crops/split"], z["crops/label"]
    where = root_of_each(roots)
    test = split == "test"
    groups = {Path(r).name: test & (where == k) & (source == SYNTHETIC) for k, r in enumerate(roots)}
    groups = {g: m for g, m in groups.items() if m.any()}
    groups["generators"] = test & (label == 1) & (source != SYNTHETIC)
    real = test & (label == 0)
    bins = {"all": np.ones(len(source), bool), **resize_bins(factors, edges)}
    out: dict = {}
    for arm in arms:
        logit = z[f"crops/{arm}"]
        out[arm] = {g: {b: {"auc": pos_neg_auc(logit[m & sel], logit[real & sel]), "n": int((m & sel).sum())}
                        for b, sel in bins.items()} for g, m in groups.items()}
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scores", required=True, help="scores (.npz written by generalisation.py score)")
    p.add_argument("--data", nargs="+", required=True, help="every crop root, in the order they were scored")
    p.add_argument("--arm", nargs="*", default=None, help="arms to report (default: every arm in the scores)")
    p.add_argument("--edges", type=float, nargs="+", default=[1.0, 1.4], help="resize-factor bin edges (1.0 first: plain crops)")
    p.add_argument("--seed", type=int, default=0, help="the score run's seed (generalisation.py score --seed)")
    p.add_argument("--out", default=str(HERE / "results" / "synthetic_learnability.json"))
    a = p.parse_args(argv)
    factors, names = scored_resize_factors(a.data, a.seed)
    with np.load(a.scores, allow_pickle=False) as z:
        if list(z["crops/source"]) != names:
            raise SystemExit("--data does not list the scored crop roots in their order (the pictures differ)")
        arms = a.arm or sorted(k.split("/", 1)[1] for k in z.files if k.startswith("crops/")
                               and k.split("/", 1)[1] not in ("source", "split", "label"))
        result = {"scores": a.scores, "data": a.data, "edges": a.edges, "seed": a.seed,
                  "arms": learnability(z, a.data, factors, arms, a.edges)}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2))
    first = next(iter(result["arms"].values()))
    bins = list(next(iter(first.values())))
    print(f"{'arm':<16}{'fakes':<16}" + "".join(f"{b:>18}" for b in bins))
    for arm, groups in result["arms"].items():
        for g, per in groups.items():
            cells = "".join(f"{per[b]['auc']:>12.3f} ({per[b]['n']:>3})" if per[b]["auc"] is not None else f"{'-':>18}"
                            for b in bins)
            print(f"{arm:<16}{g:<16}{cells}")
    print(f"wrote {a.out}")
    return result


if __name__ == "__main__":
    main()
