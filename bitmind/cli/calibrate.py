"""Re-calibrate a checkpoint on held-out data: ``python -m bitmind.calibrate``.

Fits Platt scaling (``sigmoid(logit / T + b)``, see ``bitmind.calibration``) on the
logits of a validation split, optionally seen as several independent draws of
validator challenges (``--challenge --seeds 0 1 2 ...``: more samples of the
distribution the miner is scored on than one pass gives), and writes the result into
the checkpoint's metadata. The calibration is kept only if it lowers the Brier score.

    python -m bitmind.calibrate --model M.pth --data DIR [DIR2 ...] --split val --challenge --seeds 0 1 2 3 4 5 --out M.cal.pth

``--data`` takes one or more roots, as ``bitmind.eval`` and the trainer do (each split
by picture stem with the trainer's rule; the fit pools the chosen split of every root).
"""
from __future__ import annotations

import argparse
import json
import logging

import numpy as np

from bitmind.calibration import calibrate_logits, store_calibration
from bitmind.checkpoint import load_model
from bitmind.cli.eval import add_data_argument
from bitmind.evaluation import build_dataset, collect_predictions

logger = logging.getLogger(__name__)


def calibrate(model_path: str, data: list[str], out_path: str | None = None, split: str | None = "val", split_seed: int = 0,
              challenge: bool = False, seeds=(0,), device: str = "auto", batch_size: int = 64, workers: int = 0,
              real_target: float | None = None) -> dict:
    """Fit the checkpoint's calibration on ``split`` of ``data`` (validator challenges of
    every seed in ``seeds`` if ``challenge``) and store it; returns the record."""
    lm = load_model(model_path)
    logits, labels = [], []
    for seed in seeds:
        ds = build_dataset(data, split=split, split_seed=split_seed, challenge=challenge, seed=seed)
        pred = collect_predictions(lm, ds, batch_size=batch_size, device=device, workers=workers, temperature=1.0, logit_bias=0.0)
        logits.append(pred.logits)
        labels.append(pred.labels)
    record = calibrate_logits(np.concatenate(logits), np.concatenate(labels), real_target=real_target, split=split, split_seed=split_seed,
                              challenge=challenge, seeds=list(seeds))
    return store_calibration(model_path, record, out_path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    add_data_argument(ap)
    ap.add_argument("--out", default=None, help="write here instead of over --model")
    ap.add_argument("--split", default="val", help="split to fit on (by picture stem); 'all' for every image")
    ap.add_argument("--split_seed", type=int, default=0)
    ap.add_argument("--challenge", action="store_true", help="fit on validator challenges (random aug / plain + JPEG 75)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0], help="challenge draws to pool")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    ap.add_argument("--batch_size", type=int, default=64)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--real_target", type=float, default=None,
                    help="then move the boundary so this share of the split's real photos is called real "
                         "(0.85 for the shipped model: docs/Generalisation.md); default: the Platt boundary")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    rec = calibrate(a.model, a.data, a.out, None if a.split == "all" else a.split, a.split_seed, a.challenge, a.seeds,
                    a.device, a.batch_size, a.workers, a.real_target)
    print(json.dumps(rec, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
