#!/usr/bin/env python3
"""Residual statistics by leave-one-family-out, on CPU: alone, and stacked on the NPR folds.

Every recipe measured so far learned its filters from the pools, and by LOGO it reads
unseen families at AUC ~0.76 and unseen GANs at chance. ``bitmind.residual_features``
computes fixed, content-blind statistics (co-occurrences of quantised residuals, the
residual's radial spectrum); a linear model over them fits in seconds, so its LOGO needs no
GPU. Two steps:

    # 1. features of every picture a LOGO run scores, in ``score_models``' order (same
    #    seeded challenges for the crops); ~10 minutes on 2 cores
    python benchmarks/residual_logo.py extract --challenge_data ../shared/data/sn34-validator \\
        --data ../shared/data/sn34-mini ../shared/data/sn34-wide --features /tmp/residual_features.npz

    # 2. per fold of a committed LOGO run: fit on the fold's training pictures (train split,
    #    both regimes, its held-out and excluded sources left out), then stack with that
    #    fold's NPR (a 2-weight logistic fit on the fold's validation pictures); write a scores
    #    file + spec that ``generalisation.py analyse`` reads like any run's
    python benchmarks/residual_logo.py logo --features /tmp/residual_features.npz \\
        --scores benchmarks/results/generalisation_fixed_s1_scores.npz \\
        --spec benchmarks/results/generalisation_fixed_s1_spec.json --recipe patch96nopool \\
        --out_scores /tmp/residual_s1_scores.npz --out_spec /tmp/residual_s1_spec.json

Training-only pictures (``extract --train_data ROOT``: e.g. ``bitmind.training.mini_gan``'s
small GAN fakes, their train split through the validator pipeline) join every fold's
training set with ``logo --use_train_data``; they are never scored, so the scores file
holds the same pictures with and without them and ``logo_paired.py`` compares the two.

Arms written: ``residual.<fold>`` (the linear model alone), ``stack.<fold>`` (NPR + residual,
or with ``--stack spectrum`` the NPR's boundary moved by the residual's spectrum)
and the NPR recipe itself, copied, so one ``analyse`` compares the three on the same pictures.
The crops regime's aligned round trips (made on the GPU for each run, not in the pools) have
no features: NaN in every arm, the NPR's copy included (``analyse`` leaves NaN out), so the
three arms are scored on the same pictures.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from bitmind.report import save_npz
from bitmind.residual_features import SPECTRUM_BINS

FOLD_SEP = ".minus-"
#: The features file's group for training-only roots (``extract --train_data``): never scored.
EXTRA = "train_only"


def cmd_extract(args) -> None:
    import torch

    from bitmind.inference import to_model_input
    from bitmind.residual_features import FEATURE_DIM, residual_features
    from bitmind.training.logo import regime_loader, scored_items

    torch.set_num_threads(max(1, args.threads))
    arrays = {}
    for regime, roots in (("validator", args.challenge_data), ("crops", args.data), (EXTRA, args.train_data)):
        if not roots:
            continue
        items = scored_items(roots)
        if regime == EXTRA:  # training-only roots: their train split, through the validator pipeline like the crops
            items = [it for it in items if it[3] == "train"]
        loader = regime_loader(items, regime, seed=args.seed, batch_size=64, workers=args.workers)
        feats = np.full((len(items), FEATURE_DIM), np.nan, dtype=np.float32)
        t0, done = time.time(), 0
        with torch.no_grad():
            for batch in loader:
                if batch is None:
                    continue
                x, _, k, _ = batch
                feats[k.numpy()] = residual_features(to_model_input(x, torch.device("cpu"))).numpy()
                done += len(k)
                print(f"\r{regime}: {done}/{len(items)} pictures, {done / (time.time() - t0):.0f}/s", end="", flush=True)
        print()
        arrays[f"{regime}/features"] = feats
        arrays[f"{regime}/source"] = np.asarray([it[2] for it in items])
        arrays[f"{regime}/split"] = np.asarray([it[3] for it in items])
        arrays[f"{regime}/label"] = np.asarray([it[4] for it in items], dtype=np.int8)
    if len(args.features) != 1:
        raise SystemExit("extract writes one features file: give --features one path")
    out = Path(args.features[0])
    save_npz(out, arrays)
    print(f"wrote {out}")


def align(feat: dict, scores, regime: str) -> np.ndarray:
    """(n_scores, D) features in the scores file's picture order: the two lists agree
    picture for picture, except pictures the scores have and the features lack (the
    aligned round trips at the end of the crops regime), which get NaN rows."""
    src, n = scores[f"{regime}/source"], len(scores[f"{regime}/source"])
    f_src = feat[f"{regime}/source"]
    m = len(f_src)
    if m > n or not np.array_equal(src[:m], f_src) or not np.array_equal(scores[f"{regime}/split"][:m], feat[f"{regime}/split"]):
        raise SystemExit(f"{regime}: the features were not extracted from the pictures the scores file scored")
    out = np.full((n, feat[f"{regime}/features"].shape[1]), np.nan, dtype=np.float32)
    out[:m] = feat[f"{regime}/features"]
    return out


def source_weights(sources: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Each class weighs the same, and each source the same within its class, so that a big
    source (ImageNet, SDXL) does not set the boundary alone. (Training balances families
    first, ``bitmind.data.families.family_weights``; a linear fit here balances sources.)"""
    w = np.zeros(len(sources))
    for c in (0, 1):
        in_c = labels == c
        names = np.unique(sources[in_c])
        for s in names:
            m = in_c & (sources == s)
            w[m] = 1.0 / (m.sum() * len(names))
    return w * len(w) / w.sum()


def fit_linear(x: np.ndarray, y: np.ndarray, w: np.ndarray, c: float):
    """Standardise, then an L2 logistic regression; returns (mean, scale, coef, intercept)."""
    from sklearn.linear_model import LogisticRegression

    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-6
    clf = LogisticRegression(C=c, max_iter=3000)
    clf.fit((x - mean) / scale, y, sample_weight=w)
    return mean, scale, clf.coef_[0], float(clf.intercept_[0])


def linear_logits(x: np.ndarray, model) -> np.ndarray:
    mean, scale, coef, b = model
    out = np.full(len(x), np.nan, dtype=np.float32)
    ok = ~np.isnan(x).any(axis=1)
    out[ok] = ((x[ok] - mean) / scale) @ coef + b
    return out


#: L2 strength of the stack's fit: the plain stack has three numbers to fit (barely any
#: penalty); the spectrum stack has 49 and is regularised like the residual model.
STACK_C = {"plain": 1e4, "spectrum": 0.05}


def stack_design(npr: np.ndarray, res: np.ndarray, x: np.ndarray, kind: str) -> np.ndarray:
    """The stack's inputs per picture. ``plain``: the fold's NPR logit and the residual
    model's logit. ``spectrum``: the NPR logit, the residual's radial spectrum and their
    products, so the NPR's boundary may move with how a picture was resized (the spectrum's
    slope shows it) instead of adding a second detector."""
    n = npr.astype(np.float32)[:, None]
    if kind == "plain":
        return np.c_[n, res.astype(np.float32)[:, None]]
    spectrum = x[:, -SPECTRUM_BINS:]
    return np.c_[n, spectrum, n * spectrum]


def cmd_logo(args) -> None:
    """The stack of every fold of ``--recipe``; its scores and spec are each written whole
    (``save_npz``, ``atomic_write_text``), so a crash or a Ctrl-C mid-write leaves the old files
    as they were, never a truncated one for ``generalisation.py analyse`` to read."""
    from bitmind.common import atomic_write_text

    feat = {}
    for path in args.features:  # several extracts (the pools once, training-only roots apart) read as one
        for k, v in np.load(path).items():  # training-only pictures of several files add up; the pools' are replaced
            feat[k] = np.concatenate([feat[k], v]) if k.startswith(EXTRA + "/") and k in feat else v
    scores = np.load(args.scores)
    spec = json.loads(Path(args.spec).read_text())
    regimes = [r for r in ("validator", "crops") if f"{r}/source" in scores.files and f"{r}/features" in feat]
    x = {r: align(feat, scores, r) for r in regimes}
    meta = {r: (scores[f"{r}/source"], scores[f"{r}/split"], scores[f"{r}/label"].astype(int)) for r in regimes}
    sources, labels = {r: meta[r][0] for r in regimes}, {r: meta[r][2] for r in regimes}
    use_extra = args.use_train_data and f"{EXTRA}/features" in feat
    if args.use_train_data and not use_extra:
        raise SystemExit("--use_train_data: no features file holds training-only pictures (extract --train_data)")
    extra = ((feat[f"{EXTRA}/features"], feat[f"{EXTRA}/source"], feat[f"{EXTRA}/label"].astype(int)) if use_extra
             else (np.zeros((0, x[regimes[0]].shape[1]), np.float32), np.zeros(0, dtype=str), np.zeros(0, int)))
    variants = [v for v in spec["variants"] if v == args.recipe or v.startswith(args.recipe + FOLD_SEP)]
    out = {k: scores[k] for k in scores.files if k.split("/")[0] in regimes and k.split("/")[1] in ("source", "split", "label")}
    new_variants, report = {}, {}
    for v in variants:
        excluded = spec["variants"][v].get("exclude_sources", [])
        fold = v[len(args.recipe):]
        usable = {r: ~np.isin(meta[r][0], excluded) & ~np.isnan(x[r]).any(axis=1) for r in regimes}
        train = {r: usable[r] & (meta[r][1] == "train") for r in regimes}
        val = {r: usable[r] & (meta[r][1] == "val") for r in regimes}
        keep = ~np.isin(extra[1], excluded)

        def rows(per_regime, mask, extra_part=None):
            """The fold's rows of ``per_regime`` over both regimes, then the training-only ones."""
            parts = [per_regime[r][mask[r]] for r in regimes]
            return np.concatenate(parts + ([extra_part[keep]] if extra_part is not None else []))

        xt, yt, st = rows(x, train, extra[0]), rows(labels, train, extra[2]), rows(sources, train, extra[1])
        lin = fit_linear(xt, yt, source_weights(st, yt), args.c)
        res = {r: linear_logits(x[r], lin) for r in regimes}
        npr = {r: scores[f"{r}/{v}"].astype(np.float64) for r in regimes}
        # the stack, fitted on the fold's validation pictures (the NPR never trained on them)
        design = {r: stack_design(npr[r], res[r], x[r], args.stack) for r in regimes}
        zv, yv, sv = rows(design, val), rows(labels, val), rows(sources, val)
        ok = ~np.isnan(zv).any(axis=1)
        stack = fit_linear(zv[ok], yv[ok], source_weights(sv[ok], yv[ok]), STACK_C[args.stack])
        for r in regimes:
            out[f"{r}/{v}"] = np.where(np.isnan(x[r]).any(axis=1), np.nan, scores[f"{r}/{v}"]).astype(np.float32)
            out[f"{r}/residual{fold}"] = res[r]
            out[f"{r}/stack{fold}"] = linear_logits(design[r], stack)
        new_variants[f"residual{fold}"] = new_variants[f"stack{fold}"] = dict(spec["variants"][v])
        new_variants[v] = spec["variants"][v]
        report[v] = {"train_pictures": int(len(yt)), "validation_pictures": int(ok.sum())}
        line = f"{v}: {len(yt)} training pictures"
        if args.stack == "plain":
            w_npr, w_res = stack[2][:2] / stack[1][:2]  # weights per raw logit unit
            report[v].update(stack_weight_npr=float(w_npr), stack_weight_residual=float(w_res))
            line += f"; stack = {w_npr:.2f} * NPR + {w_res:.2f} * residual"
        print(line, flush=True)
    save_npz(args.out_scores, out)
    logo = dict(spec["logo"])
    logo["recipes"] = [args.recipe, "residual", "stack"]
    logo["controls"] = []
    new_spec = {**{k: spec[k] for k in spec if k not in ("variants", "logo")}, "variants": new_variants, "logo": logo,
                "residual_logo": {"features": args.features, "c": args.c, "stack": args.stack,
                                  "train_only_pictures": int(len(extra[1])), "from_scores": args.scores, "folds": report}}
    atomic_write_text(args.out_spec, json.dumps(new_spec, indent=2))  # whole, as the scores
    print(f"wrote {args.out_scores} and {args.out_spec}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=["extract", "logo"])
    p.add_argument("--challenge_data", nargs="*", default=[], help="extract: ready-made challenges (sn34-validator)")
    p.add_argument("--data", nargs="*", default=[], help="extract: crop pools, sent through the seeded validator pipeline")
    p.add_argument("--train_data", nargs="*", default=[],
                   help="extract: training-only roots (their train split, through the validator pipeline; never scored)")
    p.add_argument("--seed", type=int, default=0, help="extract: the crops' challenge draw (score_models' default)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--features", nargs="+", required=True,
                   help="the features .npz: extract writes one; logo reads one or several (e.g. the pools', then a training-only root's)")
    p.add_argument("--scores", help="logo: a LOGO run's scores .npz")
    p.add_argument("--spec", help="logo: that run's logo_spec.json")
    p.add_argument("--recipe", default="patch96nopool", help="logo: the NPR recipe whose folds are stacked on")
    p.add_argument("--c", type=float, default=0.05, help="logo: inverse L2 strength of the residual model")
    p.add_argument("--stack", choices=sorted(STACK_C), default="plain",
                   help="logo: plain (NPR + residual logits) or spectrum (NPR's boundary moved by the residual spectrum)")
    p.add_argument("--use_train_data", action="store_true",
                   help="logo: also fit every fold's residual model on the features file's training-only pictures")
    p.add_argument("--out_scores", help="logo: where the scores .npz goes")
    p.add_argument("--out_spec", help="logo: where its spec goes")
    args = p.parse_args(argv)
    cmd_extract(args) if args.command == "extract" else cmd_logo(args)


if __name__ == "__main__":
    main()
