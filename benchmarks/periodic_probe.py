#!/usr/bin/env python3
"""Does the local spectrum of the fine detail carry what unseen generators share? A CPU probe.

Before a GPU run trains networks on ``npr_hp_periodic`` (``base_miner/NPR/sweeps/logo_periodic.json``),
this asks the cheap question with no network at all: summarise each picture by a few
numbers, fit a logistic regression leave-one-family-out, and read how well it separates
the held-out family from real photos. Three feature sets, per picture:

* ``level``: how strong the fine detail is: mean and spread over 16 x 16 cells of the log
  RMS of the NPR and the high-pass residuals (4 numbers). What a picture shows and how it
  was taken move these; the shipped detector already reads them.
* ``periodic``: the shape of the local spectrum (``bitmind.models.npr.periodic_energy``,
  14 channels: 7 frequencies along rows and along columns), its mean and spread over the
  picture (28 numbers).
* ``both``.

For each generator family: fit on the training split of every other source, put the
boundary where 90 % of the validation real photos pass, and report the held-out family's
detection there and its ROC AUC against the test real photos (all its pictures count: none
was fitted on). Also, per feature set, a one-class read-out that sees no fake at all: the
Mahalanobis distance from the training real photos (``oneclass_auc``), which would flag a
family that differs from photos in either direction. Regime ``validator`` (default): the ``sn34-validator`` pictures as they are,
what a validator sends; ``crops``: the 256 px crops through the seeded validator pipeline,
as LOGO's crops regime scores them (``--regime crops --data sn34-mini sn34-wide``). A linear read-out of 4-32 numbers is a floor for what a network can learn
from the same input, not an estimate of it.

    python benchmarks/periodic_probe.py --data ../shared/data/sn34-validator \\
        --scores benchmarks/results/generalisation_long_scores.npz --arm patch96nopool \\
        --out benchmarks/results/periodic_probe.json
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from bitmind.report import report_path, save_npz, write_report


def picture_features(x) -> tuple[np.ndarray, np.ndarray]:
    """(level, periodic) features of a (B, 3, H, W) [0, 1] batch: (B, 4) and (B, 28)."""
    import torch
    import torch.nn.functional as F

    from bitmind.models.npr import highpass_residual, npr_residual, periodic_energy

    with torch.no_grad():
        level = []
        for r in (npr_residual(x), highpass_residual(x)):
            cell_ms = F.avg_pool2d(r.pow(2).mean(1, keepdim=True), 16)  # (B, 1, H/16, W/16)
            log_rms = 0.5 * torch.log(cell_ms + 1e-10).flatten(1)
            level += [log_rms.mean(1), log_rms.std(1)]
        p = periodic_energy(x).flatten(2)
        periodic = torch.cat([p.mean(2), p.std(2)], dim=1)
    return torch.stack(level, 1).numpy(), periodic.numpy()


def extract(roots, workers: int = 2, batch_size: int = 64, regime: str = "validator") -> dict[str, np.ndarray]:
    """Features, source, split and label of every picture ``score_models`` would score in
    ``regime``: ``validator`` (files as they are, base transforms only) or ``crops`` (through
    the validator pipeline, seed 0, the same draw per picture as LOGO's scores)."""
    from torch.utils.data import DataLoader

    from bitmind.data import AsIs, DetectionDataset, collate_skip_none
    from bitmind.data.dataset import worker_init
    from bitmind.image_transforms import ValidatorPipeline
    from bitmind.training.logo import scored_items

    if regime not in ("validator", "crops"):
        raise ValueError(f"regime is validator or crops, got {regime!r}")
    items = scored_items(roots)
    ds = DetectionDataset([(s, i) for s, i, *_ in items], augment=AsIs() if regime == "validator" else ValidatorPipeline(),
                          seed=0)
    loader = DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=workers,
                        collate_fn=collate_skip_none, worker_init_fn=worker_init)
    level = np.full((len(items), 4), np.nan, dtype=np.float32)
    periodic = np.full((len(items), 28), np.nan, dtype=np.float32)
    t0, done = time.time(), 0
    for batch in loader:
        if batch is None:
            continue
        x, _, k, _ = batch
        lv, pe = picture_features(x.float())
        level[k.numpy()], periodic[k.numpy()] = lv, pe
        done += len(k)
        if done % (batch_size * 10) < batch_size:
            print(f"features: {done} / {len(items)} pictures, {time.time() - t0:.0f} s", flush=True)
    return {"level": level, "periodic": periodic, "source": np.asarray([it[2] for it in items]),
            "split": np.asarray([it[3] for it in items]), "label": np.asarray([it[4] for it in items], dtype=np.int8)}


def _readout(X: np.ndarray, label: np.ndarray, fit: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """Scores of a class-balanced logistic regression on standardised ``X``, fitted on the
    pictures of ``fit``; pictures whose features are missing (``~ok``: they failed to
    load) score 0 instead of stopping the probe."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(class_weight="balanced", max_iter=2000))
    clf.fit(X[fit], label[fit])
    return np.where(ok, clf.decision_function(np.nan_to_num(X)), 0.0)


def _fold_metrics(s: np.ndarray, ok: np.ndarray, held: np.ndarray, split: np.ndarray, label: np.ndarray,
                  real_target: float) -> dict:
    """One fold's read-out of scores ``s`` over the pictures of ``ok``: the held-out family's
    AUC against the test real photos and its detection at the boundary that passes
    ``real_target`` of the other sources' validation real photos, the test real photos kept
    there, and the in-pool test AUC (the fakes the fold knows against the test reals)."""
    from bitmind.training.logo import pos_neg_auc

    val_real = s[ok & ~held & (split == "val") & (label == 0)]
    thr = float(np.quantile(val_real, real_target)) if len(val_real) else 0.0
    test_real = ok & (split == "test") & (label == 0)
    return {"heldout_auc": pos_neg_auc(s[ok & held], s[test_real]),
            "heldout_detection_at_real90": float(np.mean(s[ok & held] > thr)),
            "test_real_kept": float(np.mean(s[test_real] <= thr)),
            "in_pool_test_auc": pos_neg_auc(s[ok & ~held & (split == "test") & (label == 1)], s[test_real])}


def probe(feats: dict[str, np.ndarray], folds: list[str] | None = None, real_target: float = 0.90) -> dict:
    """Leave-one-family-out logistic regression per feature set, and the one-class read-out
    (see the module docstring)."""
    from sklearn.covariance import LedoitWolf

    from bitmind.training.logo import default_folds, held_out_sources, pos_neg_auc

    source, split, label = feats["source"], feats["split"], feats["label"]
    ok = ~np.isnan(feats["level"]).any(1) & ~np.isnan(feats["periodic"]).any(1)
    sources = sorted(set(source.tolist()))
    folds = folds or [f for f in default_folds(sources) if f != "aligned"]
    sets = {"level": feats["level"], "periodic": feats["periodic"], "both": np.hstack([feats["level"], feats["periodic"]])}
    out: dict = {}
    test_real = ok & (split == "test") & (label == 0)
    for name, X in sets.items():
        out[name] = {}
        # one-class: how far a picture lies from the training real photos (Mahalanobis,
        # shrunk covariance), fitted on no fake at all, so every family is unseen to it and
        # a family that differs from photos in either direction would stand out
        distance = LedoitWolf().fit(X[ok & (split == "train") & (label == 0)]).mahalanobis(np.nan_to_num(X))
        for fold in folds:
            held = np.isin(source, held_out_sources(fold, sources))
            if not held.any():
                continue
            sc = _readout(X, label, ok & ~held & (split == "train"), ok)
            out[name][fold] = {**_fold_metrics(sc, ok, held, split, label, real_target),
                               "oneclass_auc": pos_neg_auc(distance[ok & held], distance[test_real]),
                               "heldout_n": int((ok & held).sum())}
        out[name]["_mean"] = {m: _mean([f[m] for f in out[name].values()])
                              for m in ("heldout_auc", "heldout_detection_at_real90", "oneclass_auc")}
    return out


def _mean(values) -> float | None:
    got = [v for v in values if v is not None]
    return float(np.mean(got)) if got else None


def stacked(feats: dict[str, np.ndarray], scores: dict[str, np.ndarray], arm: str, folds: list[str],
            real_target: float = 0.90, regime: str = "validator") -> dict:
    """The probe as a second opinion beside a trained detector: per generator fold, the fold
    model's logit in ``regime`` (``<arm>.minus-<fold>`` in a LOGO scores file, same
    pictures in the same order) and the ``periodic`` read-out of the same fold, combined by a
    two-weight logistic regression fitted on the validation split of the other sources.
    Held-out AUC and detection at ``real_target`` of validation real photos, for the model
    alone and stacked, plus the in-pool test AUC (fakes the fold knows against test reals)."""
    from sklearn.linear_model import LogisticRegression

    from bitmind.training.logo import held_out_sources

    source, split, label = feats["source"], feats["split"], feats["label"]
    n = len(source)  # the scores may go on past the features (a scored aligned root after the crop roots)
    for key in ("source", "split"):
        if f"{regime}/{key}" not in scores or not np.array_equal(scores[f"{regime}/{key}"][:n], feats[key]):
            raise SystemExit(f"the scores file scored other pictures than the features ({key} differs)")
    X, sources = feats["periodic"], sorted(set(source.tolist()))
    ok = ~np.isnan(X).any(1)
    out: dict = {}
    for fold in folds:
        key = f"{regime}/{arm}.minus-{fold}"
        held = np.isin(source, held_out_sources(fold, sources))
        if key not in scores or not held.any():
            continue
        net = scores[key][:n].astype(np.float64)
        ok_f = ok & ~np.isnan(net)
        both = np.c_[net, _readout(X, label, ok_f & ~held & (split == "train"), ok)]
        val = ok_f & ~held & (split == "val")
        comb = LogisticRegression(class_weight="balanced").fit(both[val], label[val])
        out[fold] = {"weights": comb.coef_[0].tolist()}
        for name, sc in (("model", net), ("stacked", comb.decision_function(both))):
            out[fold][name] = _fold_metrics(sc, ok_f, held, split, label, real_target)
    if out:
        out["_mean"] = {name: {m: _mean([f[name][m] for f in out.values()])
                               for m in ("heldout_auc", "heldout_detection_at_real90", "test_real_kept", "in_pool_test_auc")}
                        for name in ("model", "stacked")}
    return out


def stacked_markdown(result: dict, arm: str) -> str:
    f = lambda v: "–" if v is None else f"{v:.3f}"  # noqa: E731
    lines = [f"| held-out family | {arm}: AUC / det. at real 0.90 / in-pool AUC | stacked with the periodic read-out |",
             "|---|---|---|"]
    for fold, r in result.items():
        cells = [f"{f(r[n]['heldout_auc'])} / {f(r[n]['heldout_detection_at_real90'])} / {f(r[n]['in_pool_test_auc'])}"
                 for n in ("model", "stacked")]
        lines.append(f"| {'**mean**' if fold == '_mean' else fold} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def markdown(result: dict) -> str:
    f = lambda v: "–" if v is None else f"{v:.3f}"  # noqa: E731
    folds = [k for k in next(iter(result.values())) if k != "_mean"]
    lines = ["| held-out family | " + " | ".join(f"{s}: AUC / det. at real 0.90" for s in result) + " |",
             "|---|" + "---|" * len(result)]
    for fold in folds + ["_mean"]:
        cells = [f"{f(result[s][fold]['heldout_auc'])} / {f(result[s][fold]['heldout_detection_at_real90'])}" for s in result]
        lines.append(f"| {'**mean**' if fold == '_mean' else fold} | " + " | ".join(cells) + " |")
    lines.append("| one-class (distance from the real photos): mean AUC | "
                 + " | ".join(f(result[s]["_mean"]["oneclass_auc"]) for s in result) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", nargs="+", required=True, help="the regime's roots, in LOGO's order: sn34-validator "
                   "(validator), or sn34-mini sn34-wide (crops)")
    p.add_argument("--regime", default="validator", choices=("validator", "crops"))
    p.add_argument("--folds", nargs="*", default=None, help="generator families to hold out (default: every one present)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--features", default="", help="cache of the per-picture features (.npz): read if it exists, else written")
    p.add_argument("--scores", default="", help="a LOGO scores file (generalisation*_scores.npz) that scored the same "
                   "pictures (first): also stack the periodic read-out onto its fold models (stacked)")
    p.add_argument("--arm", default="patch96nopool", help="the arm of --scores whose folds are stacked")
    p.add_argument("--out", type=report_path, default="", help="JSON of the probe; the markdown table goes beside it (.md)")
    a = p.parse_args(argv)
    if a.features and not a.features.endswith(".npz"):  # save_npz writes X.npz for X: look for that file next time
        a.features += ".npz"
    if a.features and Path(a.features).is_file():
        with np.load(a.features, allow_pickle=False) as z:
            feats = {k: z[k] for k in z.files}
    else:
        feats = extract(a.data, workers=a.workers, regime=a.regime)
        if a.features:
            save_npz(a.features, feats)  # whole: a truncated cache would be read as it is next time
    result = probe(feats, a.folds)
    md = markdown(result)
    out = {"data": a.data, "regime": a.regime, "probe": result}
    if a.scores:
        with np.load(a.scores, allow_pickle=False) as z:
            scores = {k: z[k] for k in z.files if k.startswith(f"{a.regime}/")}
        folds = [k for k in result["periodic"] if k != "_mean"]
        out["stacked"] = {"scores": a.scores, "arm": a.arm, "folds": stacked(feats, scores, a.arm, folds, regime=a.regime)}
        md += "\n" + stacked_markdown(out["stacked"]["folds"], a.arm)
    print(md)
    if a.out:
        write_report(a.out, out, md)
    return out


if __name__ == "__main__":
    main()
