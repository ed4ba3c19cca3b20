#!/usr/bin/env python3
"""Would test-time augmentation help? Validation accuracy of a model on validator
challenges, one view per challenge against the mean logit of flipped copies.

Validators flip challenges at random, so a detector that averaged its answers over
flipped copies of each image might be steadier. This measures it on the pooled
validation draws that model selection uses (selection by validation only: the test split
is not touched):

    python benchmarks/tta_flips.py --model mining_models/base.pth --data ../shared/data/sn34-mini

Writes ``benchmarks/results/tta_flips.json``. Views: ``id`` (as sent), ``h``/``v``/``hv``
(horizontal, vertical, both flips) and ``r90`` (a quarter turn, which validators never
send); combinations are mean logits, then the model's own calibration. Costs one forward pass per view and image.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from bitmind.calibration import apply_calibration
from bitmind.checkpoint import load_model
from bitmind.data import collate_skip_none
from bitmind.evaluation import build_dataset
from bitmind.inference import forward_logits
from bitmind.metrics import compute_metrics

HERE = Path(__file__).resolve().parent
VIEWS = {"id": lambda x: x, "h": lambda x: x.flip(3), "v": lambda x: x.flip(2), "hv": lambda x: x.flip(2).flip(3),
         "r90": lambda x: x.rot90(1, (2, 3))}
COMBOS = {"id+h": ("id", "h"), "id+v": ("id", "v"), "id+h+v+hv": ("id", "h", "v", "hv"), "all5": tuple(VIEWS)}


@torch.inference_mode()
def view_logits(lm, data: list[str], split: str, seeds: list[int], workers: int) -> tuple[dict, np.ndarray]:
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    net = lm.model.eval()
    z = {k: [] for k in VIEWS}
    labels = []
    for seed in seeds:
        ds = build_dataset(data, split=split, challenge=True, seed=seed)
        loader = DataLoader(ds, batch_size=64, num_workers=workers, collate_fn=collate_skip_none)
        for batch in tqdm(loader, desc=f"seed {seed}", unit="batch"):
            if batch is None:
                continue
            x, y = batch[0], batch[1]
            for name, f in VIEWS.items():
                z[name].append(forward_logits(net, f(x)).cpu().double().numpy())
            labels.append(y.numpy())
    return {k: np.concatenate(v) for k, v in z.items()}, np.concatenate(labels)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", nargs="+", required=True)
    ap.add_argument("--split", default="val")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4, 5])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default=str(HERE / "results" / "tta_flips.json"))
    a = ap.parse_args(argv)
    lm = load_model(a.model)
    z, y = view_logits(lm, a.data, a.split, a.seeds, a.workers)
    rows = {}
    for name, views in [(k, (k,)) for k in VIEWS] + list(COMBOS.items()):
        m = compute_metrics(y, apply_calibration(np.mean([z[v] for v in views], axis=0), lm.temperature, lm.logit_bias))
        rows[name] = {k: m[k] for k in ("accuracy", "ap", "real_accuracy", "fake_accuracy")}
        print(f"{name:<11} acc {m['accuracy']:.4f}  AP {m['ap']:.4f}  real {m['real_accuracy']:.4f}")
    res = {"model": a.model, "split": a.split, "seeds": a.seeds, "challenges": int(len(y)), "views": rows}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=2))
    return res


if __name__ == "__main__":
    main()
