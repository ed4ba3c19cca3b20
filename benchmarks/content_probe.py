#!/usr/bin/env python3
"""How much of what a picture shows do a detector's features carry? A linear probe, CPU.

Why: the detector learned what pictures show instead of how they were made ("faces look
real, art looks fake"), and near chance on sources absent from the pools. Real photo kinds
(faces, COCO, ImageNet, low light, cities, ...) were all made by cameras: what tells them
apart is content. So the share of real photos whose kind a linear read-out of the detector's
pooled features names right (5-fold cross-validated, balanced over kinds, against chance
1 / kinds) measures how much content the features hold beside the trace the detector needs.
A content adversary (``--adv_weight``) should lower it; a recipe that lowers it and keeps
held-out detection is reading less of the subject. The same read-out of the generated
pictures by family (``--families``) says how much the features tell generators apart.

For each ``--model`` (an npr checkpoint: its mean pool's input, as the served network
computes it on the picture as the miner sees it): up to ``--per_kind`` pictures of each
real kind of ``--data`` (drawn with ``--seed``, the same pictures for every model), features
standardised, a multinomial logistic regression; per model the balanced accuracy, chance,
and each kind's recall. A linear probe is a floor for what the features hold, not the
whole of it; ``untrained:PATH`` reads the same architecture with fresh weights (random
convolutions already separate some scenes), the level a trained model is read against.

    python benchmarks/content_probe.py --model v13=mining_models/base.pth untrained=untrained:mining_models/base.pth \\
        --data ../shared/data/sn34-validator --per_kind 60 --out benchmarks/results/content_probe_kinds.json

Writes the JSON (``--out``) and a markdown table beside it (``.md``).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from bitmind.data.families import family_of
from bitmind.report import report_path, write_report

#: Pictures a kind needs to be probed: one per fold of the cross-validation at least.
FOLDS = 5


def pick(sources: list[str], per_kind: int, seed: int, families: bool) -> dict[str, list[int]]:
    """Positions of up to ``per_kind`` pictures of each class (real kind, or with ``families``
    generated family), drawn with ``seed``; classes with fewer than ``FOLDS`` are left out."""
    rng = np.random.default_rng(seed)
    by: dict[str, list[int]] = {}
    for i, s in enumerate(sources):
        fake = s.startswith("fake/")
        if fake != families:
            continue
        by.setdefault(family_of(s) if fake else s, []).append(i)
    out = {}
    for name, idx in sorted(by.items()):
        if len(idx) < FOLDS:
            continue
        out[name] = sorted(rng.choice(idx, size=min(per_kind, len(idx)), replace=False).tolist())
    return out


#: ``NAME=untrained:PATH``: the network of ``PATH`` with fresh weights (seeded), the control.
UNTRAINED = "untrained:"


def load_network(path: str, seed: int = 0) -> torch.nn.Module:
    """The network of the checkpoint ``path`` (the detector alone), or with ``untrained:PATH`` the
    same architecture with every layer's weights drawn afresh from ``seed`` (and batch-norm
    statistics reset): what the architecture's features hold before any training, against which
    a trained model's read-out means something."""
    from bitmind.checkpoint import load_model

    fresh = path.startswith(UNTRAINED)
    net = load_model(path[len(UNTRAINED):] if fresh else path, detector_only=True).model
    if fresh:
        torch.manual_seed(seed)
        for m in net.modules():
            if m is not net and hasattr(m, "reset_parameters"):
                m.reset_parameters()
    return net.eval()


@torch.inference_mode()
def pooled_features(path: str, dataset, positions: list[int], batch_size: int = 16, seed: int = 0) -> np.ndarray:
    """The mean pool's input of the network in ``path`` (``load_network``), one row per picture of
    ``positions`` (as the miner sees the picture: the dataset's base transforms; fp32)."""
    from bitmind.inference import forward_logits

    net = load_network(path, seed)
    pool = getattr(net, "avgpool", None)
    if pool is None:
        raise SystemExit(f"{path}: a {type(net).__name__} network has no mean pool to read (the probe reads npr checkpoints)")
    caught: list[torch.Tensor] = []
    hook = pool.register_forward_hook(lambda _m, _i, out: caught.append(out.flatten(1).float().cpu()))
    try:
        for start in range(0, len(positions), batch_size):
            items = [dataset[k] for k in positions[start:start + batch_size]]
            if any(it is None for it in items):
                raise SystemExit(f"{path}: a picture could not be read: "
                                 + ", ".join(dataset.describe(k) for k, it in zip(positions[start:], items) if it is None))
            x = torch.stack([it[0] for it in items])
            forward_logits(net, x, torch.device("cpu"), None, channels_last=False)
    finally:
        hook.remove()
    return torch.cat(caught).numpy()


#: Resamples of the pictures for the balanced accuracy's interval.
N_BOOT = 1000


def balanced_interval(labels: np.ndarray, pred: np.ndarray, seed: int, base: np.ndarray | None = None,
                      n_boot: int = N_BOOT) -> list[float]:
    """The 95 % interval of the balanced accuracy over pictures resampled within each class (the
    cross-validated predictions kept): how far another draw of as many pictures could move it.
    With ``base`` (another model's predictions of the same pictures), the interval of the
    difference, both read on the same resamples (paired)."""
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(labels == c) for c in sorted(set(labels.tolist()))]
    right = pred == labels
    other = None if base is None else base == labels
    stats = []
    for _ in range(n_boot):
        picks = [g[rng.integers(0, len(g), len(g))] for g in groups]
        value = np.mean([right[p].mean() for p in picks])
        stats.append(value - (np.mean([other[p].mean() for p in picks]) if other is not None else 0.0))
    lo, hi = np.percentile(stats, [2.5, 97.5])
    return [float(lo), float(hi)]


def probe(features: np.ndarray, labels: np.ndarray, seed: int) -> dict:
    """5-fold cross-validated multinomial logistic regression on standardised features: balanced
    accuracy (with its 95 % interval over pictures), chance and each class's recall."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score, recall_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    names = sorted(set(labels.tolist()))
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000, C=0.1))
    pred = cross_val_predict(clf, features, labels, cv=StratifiedKFold(FOLDS, shuffle=True, random_state=seed))
    recall = recall_score(labels, pred, labels=names, average=None, zero_division=0)
    return {"balanced_accuracy": float(balanced_accuracy_score(labels, pred)),
            "balanced_accuracy_ci95": balanced_interval(labels, pred, seed), "chance": 1.0 / len(names),
            "n": int(len(labels)), "classes": names, "recall": {n: float(r) for n, r in zip(names, recall)},
            "predictions": pred}


def markdown(result: dict) -> str:
    lines = [f"# Content probe: {result['what']}", "",
             f"Linear read-out of each model's pooled features ({FOLDS}-fold cross-validated, balanced over classes); "
             f"data {', '.join(result['data'])}, up to {result['per_kind']} pictures per class, seed {result['seed']}.", ""]
    models = list(result["models"])
    first = result["models"][models[0]]
    lines += ["| class | n | " + " | ".join(models) + " |", "|---|---|" + "---|" * len(models)]
    for c in first["classes"]:
        lines.append(f"| {c} | {result['counts'][c]} | "
                     + " | ".join(f"{result['models'][m]['recall'][c]:.2f}" for m in models) + " |")
    lines.append("| **balanced accuracy** | " + str(first["n"]) + " | "
                 + " | ".join(f"**{result['models'][m]['balanced_accuracy']:.3f}**" for m in models) + " |")
    lines.append("| 95 % interval (pictures resampled) | | "
                 + " | ".join("[{:.3f}, {:.3f}]".format(*result["models"][m]["balanced_accuracy_ci95"]) for m in models) + " |")
    lines.append("| minus the first, paired [95 %] | | " + " | ".join(
        "{:+.3f} [{:+.3f}, {:+.3f}]".format(d["difference"], *d["ci95"]) if (d := result["models"][m].get("minus_first"))
        else "" for m in models) + " |")
    lines.append("| chance | | " + " | ".join(f"{result['models'][m]['chance']:.3f}" for m in models) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", nargs="+", required=True,
                    help="npr checkpoints (NAME=PATH names a column; NAME=untrained:PATH the same network with fresh "
                         "weights, the control)")
    ap.add_argument("--data", nargs="+", required=True, help="data roots (real/<kind>/..., fake/<source>/...)")
    ap.add_argument("--per_kind", type=int, default=100, help="pictures per class at most")
    ap.add_argument("--families", action="store_true", help="probe the generated pictures by family instead")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=report_path, required=True, help="JSON; the markdown table goes beside it (.md)")
    args = ap.parse_args(argv)
    if args.per_kind < FOLDS:
        ap.error(f"--per_kind must be at least {FOLDS} (one picture per fold)")
    from bitmind.evaluation import build_dataset

    dataset = build_dataset(args.data)
    sources = [src.source_name(i) for src, i in dataset.items]
    chosen = pick(sources, args.per_kind, args.seed, args.families)
    if len(chosen) < 2:
        raise SystemExit(f"{len(chosen)} class(es) with {FOLDS} pictures or more in {args.data}: nothing to tell apart")
    positions = [k for idx in chosen.values() for k in idx]
    labels = np.array([name for name, idx in chosen.items() for _ in idx])
    result = {"what": "generated families" if args.families else "real photo kinds", "data": [str(d) for d in args.data],
              "per_kind": args.per_kind, "seed": args.seed, "counts": {n: len(i) for n, i in chosen.items()}, "models": {}}
    first, first_pred = None, None
    for spec in args.model:
        name, _, path = spec.partition("=") if "=" in spec else (Path(spec).name, "", spec)  # a path may hold "="
        print(f"{name}: features of {len(positions)} pictures ...", file=sys.stderr, flush=True)
        feats = pooled_features(path, dataset, positions, seed=args.seed)
        r = probe(feats, labels, args.seed)
        pred = r.pop("predictions")
        if first_pred is None:
            first, first_pred = name, pred
        else:  # paired against the first model: the same pictures, folds and resamples
            r["minus_first"] = {"model": first, "difference": float(r["balanced_accuracy"]
                                                                   - result["models"][first]["balanced_accuracy"]),
                                "ci95": balanced_interval(labels, pred, args.seed, base=first_pred)}
        result["models"][name] = {"path": path, **r}
        print(f"{name}: balanced accuracy {r['balanced_accuracy']:.3f} (chance {r['chance']:.3f})", flush=True)
    write_report(args.out, result, markdown(result))
    return result


if __name__ == "__main__":
    main()
