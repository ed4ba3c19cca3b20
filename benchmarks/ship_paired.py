#!/usr/bin/env python3
"""Is a candidate checkpoint really better than the shipped one, or inside the noise of the pictures?

Why: before a candidate replaces ``mining_models/base.pth``, both are scored on the SAME
held-out pictures, e.g. the test split of ``../shared/data/sn34-validator``. Its files
already are validator challenges, so they are scored as they are (``--as_sent``: no
challenge pipeline a second time). A split holds a few hundred pictures, so a gain of 0.01
may be luck. Both models see the same pictures, so the comparison can be paired: resample
the pictures with replacement within each source (and class), so every source keeps its
size, recompute both models' metrics on the same resample, and look at the spread of the
difference B - A. The interval covers the pictures' noise, not the training seed's.

Each model is scored as the miner serves it (``bitmind.evaluation``: the checkpoint's
calibration applied, threshold 0.5), which is the "as sent" column of
``benchmarks/accuracy.py``. Without ``--as_sent`` the pictures go through the challenge
pipeline once per ``--seeds`` draw (both models get the same draw of each picture); the
draws are pooled and a resample takes every draw of a picture together.

Reported, for A (the reference), B (the candidate) and B - A with its 95 % paired bootstrap
interval and the share of resamples where B is not better (a one-sided p-value): balanced
accuracy, ROC AUC, real-photo accuracy, fake accuracy and Brier. Brier is lower-is-better,
so "B better" means B - A < 0 there. Then per source: n, accuracy of A and B, their
difference, and the pictures only B gets right (``b01``) and only A gets right (``b10``),
a McNemar-style view of where the change comes from.

    python benchmarks/ship_paired.py --a mining_models/base.pth --b CANDIDATE.pth \\
        --data ../shared/data/sn34-validator --as_sent --out benchmarks/results/ship_paired.json

Writes the JSON (``--out``) and a markdown table beside it (``.md``).
"""
from __future__ import annotations

import argparse
import logging

import numpy as np

from bitmind.cli.eval import add_data_argument, add_split_arguments
from bitmind.evaluation import evaluate_detailed
from bitmind.metrics import DEFAULT_THRESHOLD, bootstrap_resample, bootstrap_strata, compute_metrics
from bitmind.report import report_path, write_report

logger = logging.getLogger(__name__)
#: (key in compute_metrics, name, lower is better)
METRICS = (("balanced_accuracy", "balanced accuracy", False), ("roc_auc", "ROC AUC", False),
           ("real_accuracy", "real-photo accuracy", False), ("fake_accuracy", "fake accuracy", False),
           ("brier", "Brier (lower is better)", True))


def check_same_pictures(a, b, what: str = "A and B") -> None:
    """Refuse to pair predictions of different pictures: a paired comparison is only valid
    when picture k is the same picture for both (same label, source and file, same order)."""
    if len(a.labels) != len(b.labels):
        raise ValueError(f"{what} scored different pictures ({len(a.labels)} against {len(b.labels)}; "
                         "skipped files?); a paired comparison needs the same")
    for field in ("labels", "sources", "paths"):
        x, y = getattr(a, field, None), getattr(b, field, None)
        if x is None or y is None:
            continue
        diff = np.flatnonzero(np.asarray(x) != np.asarray(y))
        if diff.size:
            k = int(diff[0])
            raise ValueError(f"{what} scored different pictures: {field} differ at {diff.size} positions, first "
                             f"at {k} ({x[k]!r} against {y[k]!r}); a paired comparison needs the same in the same order")


def paired_bootstrap(labels, sources, pa, pb, n_boot: int = 1000, seed: int = 0) -> dict:
    """Both models' metrics, B - A, its 95 % interval and p(B not better), on the same resamples.

    ``pa``/``pb``: served probabilities, shape ``(n,)`` or ``(draws, n)`` (one row per challenge
    draw of the same ``n`` pictures; a resample takes all draws of a picture together)."""
    labels, sources = np.asarray(labels, dtype=int), np.asarray(sources).astype(str)
    pa, pb = np.atleast_2d(np.asarray(pa, dtype=np.float64)), np.atleast_2d(np.asarray(pb, dtype=np.float64))
    if pa.shape != pb.shape or pa.shape[1] != len(labels) or len(sources) != len(labels):
        raise ValueError(f"shapes differ: labels {labels.shape}, sources {sources.shape}, A {pa.shape}, B {pb.shape}")

    def both(idx: np.ndarray) -> dict:
        y = np.tile(labels[idx], pa.shape[0])  # rows are flattened draw after draw
        ma, mb = compute_metrics(y, pa[:, idx].ravel()), compute_metrics(y, pb[:, idx].ravel())
        return {k: (ma[k], mb[k]) for k, _, _ in METRICS}

    point = both(np.arange(len(labels)))
    groups, rng = bootstrap_strata(sources, labels), np.random.default_rng(seed)  # every source keeps its size
    diffs = {k: [] for k, _, _ in METRICS}
    for _ in range(n_boot):
        for k, (va, vb) in both(bootstrap_resample(groups, rng)).items():
            if va is not None and vb is not None:
                diffs[k].append(vb - va)
    out = {}
    for k, _, lower in METRICS:
        va, vb = point[k]
        boot = np.asarray(diffs[k], dtype=np.float64)
        if va is None or vb is None or not boot.size:
            out[k] = {"a": va, "b": vb, "diff": None, "ci95": None, "p_b_not_better": None, "lower_is_better": lower}
            continue
        lo, hi = np.quantile(boot, [0.025, 0.975])
        not_better = boot >= 0 if lower else boot <= 0
        out[k] = {"a": va, "b": vb, "diff": vb - va, "ci95": [float(lo), float(hi)],
                  "p_b_not_better": float(not_better.mean()), "lower_is_better": lower}
    return out


def per_source(labels, sources, pa, pb, threshold: float = DEFAULT_THRESHOLD) -> dict:
    """Per source (and ``all``): n pictures, accuracy of A and B (mean over draws), B - A, and
    the (picture, draw) pairs only B gets right (``b01``) or only A gets right (``b10``)."""
    labels, sources = np.asarray(labels, dtype=int), np.asarray(sources).astype(str)
    truth = labels == 1
    ok_a, ok_b = (np.atleast_2d(pa) > threshold) == truth, (np.atleast_2d(pb) > threshold) == truth
    rows = {}
    for name in [*sorted(set(sources.tolist())), "all"]:
        m = np.ones(len(labels), bool) if name == "all" else sources == name
        acc_a, acc_b = float(ok_a[:, m].mean()), float(ok_b[:, m].mean())
        rows[name] = {"n": int(m.sum()), "accuracy_a": acc_a, "accuracy_b": acc_b, "diff": acc_b - acc_a,
                      "b01": int((~ok_a[:, m] & ok_b[:, m]).sum()), "b10": int((ok_a[:, m] & ~ok_b[:, m]).sum())}
    return rows


def markdown(result: dict) -> str:
    """The tables of the docs: overall metrics with intervals, then per source."""
    f = lambda v, fmt=".3f": "-" if v is None else format(v, fmt)
    draws = "as sent" if result["mode"] == "as_sent" else f"challenge draws {result['seeds']}"
    lines = [f"A = `{result['a']}`, B = `{result['b']}`, {result['pictures']} pictures of {', '.join(result['data'])} "
             f"(split {result['split']}, {draws}), {result['resamples']} paired resamples", "",
             "| metric | A | B | B - A [95 % CI] | p(B not better) |", "|---|---:|---:|---|---:|"]
    for k, name, _ in METRICS:
        s = result["metrics"][k]
        ci = "" if s["ci95"] is None else f" [{s['ci95'][0]:+.3f}, {s['ci95'][1]:+.3f}]"
        lines.append(f"| {name} | {f(s['a'])} | {f(s['b'])} | {f(s['diff'], '+.3f')}{ci} | {f(s['p_b_not_better'])} |")
    lines += ["", "| source | n | accuracy A | accuracy B | B - A | only B right (b01) | only A right (b10) |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for name, r in result["per_source"].items():
        label = f"**{name}**" if name == "all" else name
        lines.append(f"| {label} | {r['n']} | {r['accuracy_a']:.3f} | {r['accuracy_b']:.3f} | {r['diff']:+.3f} | {r['b01']} | {r['b10']} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--a", required=True, help="the reference checkpoint (the shipped mining_models/base.pth)")
    p.add_argument("--b", required=True, help="the candidate checkpoint")
    add_data_argument(p)
    p.add_argument("--as_sent", action="store_true", help="the files already are validator challenges: score them as they are")
    p.add_argument("--split", default="test")
    add_split_arguments(p)  # default: the candidate's (its train_options; an ensemble's, its members')
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="challenge draws without --as_sent (default 0 1 2)")
    p.add_argument("--resamples", type=int, default=1000)
    p.add_argument("--boot_seed", type=int, default=0, help="seed of the bootstrap resamples")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", type=report_path, required=True, help="JSON; the markdown tables go beside it (.md)")
    a = p.parse_args(argv)
    if a.resamples < 1:
        p.error("--resamples must be at least 1")
    if a.as_sent and a.seeds is not None:
        p.error("--seeds are challenge draws; --as_sent scores the files as they are")
    seeds = None if a.as_sent else (a.seeds or [0, 1, 2])
    # One split for both files: the candidate's (the pictures it was not trained on), whatever
    # fractions the reference was trained with, so that the comparison is paired.
    from bitmind.checkpoint import read_checkpoint
    from bitmind.evaluation import trained_split

    try:
        split_seed, fractions = trained_split(read_checkpoint(a.b)[1], a.split_seed, a.val_fraction, a.test_fraction)
    except ValueError as e:  # an ensemble of members split differently: the caller chooses the split
        p.error(str(e))
    kw = dict(split=a.split, split_seed=split_seed, val_fraction=fractions[1], test_fraction=fractions[2], device=a.device,
              progress=False)
    reports, probs, first = {"a": [], "b": []}, {"a": [], "b": []}, None
    for s in seeds or [0]:
        for which in ("a", "b"):
            logger.info("scoring %s (%s) %s", which.upper(), getattr(a, which), "as sent" if a.as_sent else f"challenge seed {s}")
            report, preds, _ = evaluate_detailed(getattr(a, which), a.data, challenge=not a.as_sent, seed=s, **kw)
            first = preds if first is None else first
            check_same_pictures(first, preds, f"A and B ({'as sent' if a.as_sent else f'challenge seed {s}'})")
            reports[which].append(report)
            probs[which].append(preds.probs)
    pa, pb = np.stack(probs["a"]), np.stack(probs["b"])
    model = lambda r: {k: r["model"][k] for k in ("path", "sha256", "arch", "temperature", "logit_bias")}
    result = {"a": a.a, "b": a.b, "models": {w: model(reports[w][0]) for w in ("a", "b")}, "data": a.data,
              "split": a.split, "split_seed": split_seed, "split_fractions": list(fractions), "mode": "as_sent" if a.as_sent else "challenge", "seeds": seeds,
              "threshold": DEFAULT_THRESHOLD, "resamples": a.resamples, "boot_seed": a.boot_seed, "pictures": len(first.labels),
              "skipped": reports["a"][0]["skipped"],
              "metrics": paired_bootstrap(first.labels, first.sources, pa, pb, a.resamples, a.boot_seed),
              "per_source": per_source(first.labels, first.sources, pa, pb)}
    if result["models"]["a"]["sha256"] == result["models"]["b"]["sha256"]:
        logger.warning("A and B are the same checkpoint: every difference is 0")
    write_report(a.out, result, markdown(result))
    print(markdown(result))
    return result


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    main()
