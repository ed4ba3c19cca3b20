"""Did a model memorise the one augmented version of each training crop it was shown?

Until the persistent-workers fix (docs/Generalisation_record.md, "Every GPU run trained with its
first epoch's augmentation") a run with loader workers drew each picture's epoch-0
augmentation again in every epoch. This probe rebuilds a checkpoint's training set from the
``train_options`` it records (the crop pools only: their item indices, hence their random
draws, do not depend on the roots listed after them) and scores a sample of training crops
in two kinds of version: the one the model trained on in every epoch (epoch 0's draw) and
fresh draws of the same augmentation (later epochs). The validation split's crops, never
trained on, through the same training augmentation, are the control: for them the two kinds
are alike by construction. A model that memorised its frozen versions separates them
better than fresh draws of the same pictures; the control says how much of a gap is noise.

Figures per set (train, val) and version kind: ROC AUC, balanced accuracy at the file's
calibrated boundary, and the mean signed margin ``(2y - 1) * logit``; the headline is the
per-picture margin gain of the frozen version over the mean of the fresh ones, with its
standard error, train against val.

    python benchmarks/augmentation_memory.py --model mining_models/base.pth \\
        --data ../shared/data/sn34-mini ../shared/data/sn34-wide --per_class 300 \\
        --out benchmarks/results/augmentation_memory_base.json

``--data`` are the local copies of the checkpoint's leading ``data`` roots, in its order
(matched by folder name); later roots (round trips, ready-made challenges) are left out.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

from bitmind.calibration import apply_calibration
from bitmind.checkpoint import load_model
from bitmind.data import DetectionDataset
from bitmind.inference import forward_logits, serving_forward
from bitmind.metrics import compute_metrics
from bitmind.training.config import TrainConfig
from bitmind.training.trainer import build_datasets


def training_config(meta: dict, data: list[str]) -> TrainConfig:
    """The checkpoint's training options with its leading ``data`` roots replaced by local
    copies (same folder names, same order) and every later root dropped."""
    opts = dict(meta.get("train_options") or {})
    if not opts:
        raise SystemExit("the checkpoint records no train_options: nothing to rebuild the training set from")
    recorded = list(opts.get("data") or [])
    want = [Path(p).name for p in recorded[:len(data)]]
    got = [Path(p).name for p in data]
    if got != want:
        raise SystemExit(f"--data must be local copies of the checkpoint's first data roots in order: {want}, got {got}")
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    opts = {k: v for k, v in opts.items() if k in known}
    opts.update(data=list(data), challenge_data=[], train_data=[], workers=0, device="cpu", init_from="")
    return TrainConfig(**opts)


def sample(ds: DetectionDataset, per_class: int, seed: int) -> list[int]:
    """Up to ``per_class`` item indices of each label, drawn at random (sorted)."""
    rng = random.Random(seed)
    labels = ds.labels()
    out = []
    for lab in (0, 1):
        idx = [k for k, y in enumerate(labels) if y == lab]
        out += rng.sample(idx, min(per_class, len(idx)))
    return sorted(out)


@torch.inference_mode()
def score(served: tuple, ds: DetectionDataset, items: list[int], epoch: int, batch: int = 32) -> np.ndarray:
    """Raw logits of ``items`` of ``ds`` in their epoch-``epoch`` augmentation, through
    ``served`` (what ``serving_forward`` returns: the model as the miner serves it)."""
    forward, amp_dtype, channels_last = served
    ds.set_epoch(epoch)
    out = []
    for i in range(0, len(items), batch):
        x = torch.stack([ds[k][0] for k in items[i:i + batch]])
        out.append(forward_logits(forward, x, torch.device("cpu"), amp_dtype, channels_last).numpy())
    return np.concatenate(out).astype(np.float64)


def summarise(logits: np.ndarray, labels: np.ndarray, temperature: float, bias: float) -> dict:
    probs = apply_calibration(logits, temperature, bias)
    m = compute_metrics(labels, probs)
    sign = 2.0 * labels - 1.0
    return {"roc_auc": m["roc_auc"], "balanced_accuracy": m["balanced_accuracy"],
            "real_accuracy": m["real_accuracy"], "fake_accuracy": m["fake_accuracy"],
            "mean_signed_margin": float(np.mean(sign * logits))}


def probe(model_path: str, data: list[str], per_class: int = 300, fresh_epochs=(1, 2), seed: int = 0) -> dict:
    loaded = load_model(model_path)
    cfg = training_config(loaded.meta, data)
    train_ds, val_ds, _ = build_datasets(cfg)
    # the control: validation crops through the training augmentation (not the validator pipeline)
    control = DetectionDataset(val_ds.items, augment=train_ds.augment, seed=cfg.seed, augment_for=train_ds.augment_for)
    temperature, bias = loaded.temperature, loaded.logit_bias
    served = serving_forward(loaded.model, torch.device("cpu"))  # prepared once for every draw of both sets
    out = {"model": str(model_path), "data": list(data), "seed": cfg.seed, "per_class": per_class,
           "fresh_epochs": list(fresh_epochs), "sets": {}}
    for name, ds in (("train", train_ds), ("val", control)):
        items = sample(ds, per_class, seed)
        labels = np.asarray([ds.items[k][0].label(ds.items[k][1]) for k in items], dtype=np.float64)
        t = time.time()
        frozen = score(served, ds, items, 0)
        fresh = np.stack([score(served, ds, items, e) for e in fresh_epochs])
        sign = 2.0 * labels - 1.0
        gain = sign * (frozen - fresh.mean(axis=0))
        fresh_spread = sign * (fresh[0] - fresh[1]) if len(fresh) > 1 else None
        res = {"pictures": len(items), "real": int((labels == 0).sum()), "fake": int((labels == 1).sum()),
               "epoch0": summarise(frozen, labels, temperature, bias),
               "fresh": [summarise(f, labels, temperature, bias) for f in fresh],
               "margin_gain_epoch0_over_fresh": float(gain.mean()),
               "margin_gain_stderr": float(gain.std(ddof=1) / np.sqrt(len(gain))),
               "share_more_confident_in_epoch0": float((gain > 0).mean()),
               "fresh_vs_fresh_margin_gap": None if fresh_spread is None else float(fresh_spread.mean()),
               "seconds": round(time.time() - t, 1)}
        out["sets"][name] = res
        print(f"{name:<5} {len(items)} pictures: AUC epoch0 {res['epoch0']['roc_auc']:.3f} vs fresh "
              + " ".join(f"{f['roc_auc']:.3f}" for f in res["fresh"])
              + f" | margin gain {res['margin_gain_epoch0_over_fresh']:+.3f} +- {res['margin_gain_stderr']:.3f}"
              + f", epoch0 more confident for {res['share_more_confident_in_epoch0']:.2f}", flush=True)
    tr, va = out["sets"]["train"], out["sets"]["val"]
    out["memorisation"] = {
        "margin_gain_train_minus_val": tr["margin_gain_epoch0_over_fresh"] - va["margin_gain_epoch0_over_fresh"],
        "stderr": float(np.hypot(tr["margin_gain_stderr"], va["margin_gain_stderr"])),
        "auc_gain_train": tr["epoch0"]["roc_auc"] - float(np.mean([f["roc_auc"] for f in tr["fresh"]])),
        "auc_gain_val": va["epoch0"]["roc_auc"] - float(np.mean([f["roc_auc"] for f in va["fresh"]])),
    }
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="mining_models/base.pth")
    p.add_argument("--data", nargs="+", required=True, help="local copies of the checkpoint's leading data roots, in order")
    p.add_argument("--per_class", type=int, default=300, help="pictures of each label per set")
    p.add_argument("--fresh_epochs", type=int, nargs="+", default=[1, 2], help="epochs whose draws are the fresh versions")
    p.add_argument("--seed", type=int, default=0, help="seed of the picture sample")
    p.add_argument("--out", default="", help="JSON of the figures")
    a = p.parse_args(argv)
    if 0 in a.fresh_epochs:
        p.error("--fresh_epochs must not include 0 (epoch 0 is the frozen version)")
    res = probe(a.model, a.data, a.per_class, tuple(a.fresh_epochs), a.seed)
    m = res["memorisation"]
    print(f"margin gain of the frozen version, train minus val: {m['margin_gain_train_minus_val']:+.3f} +- {m['stderr']:.3f}; "
          f"AUC gain train {m['auc_gain_train']:+.3f}, val {m['auc_gain_val']:+.3f}")
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(res, indent=2))
        print(f"wrote {a.out}")
    return res


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
