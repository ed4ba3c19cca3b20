#!/usr/bin/env python3
"""What bf16 autocast on a CPU costs in answers and saves in time, for one model and one pool.

The miner serves in bf16 autocast on a CPU that computes bf16 natively (AMX or
AVX512-BF16; ``bitmind.inference.cpu_runs_bf16``). This scores the same pictures through
the miner's CPU forward twice, fp32 and bf16 (``bitmind.evaluation.collect_predictions``,
the checkpoint's calibration), and times one-picture forwards of each, in alternating rounds:

    python benchmarks/cpu_bf16.py --model mining_models/base.pth --data ../shared/data/sn34-validator \\
        --json benchmarks/results/cpu_bf16.json

Reports the largest and median change of the served probability, the decisions that
flip, balanced accuracy both ways, and forward p50 both ways. On a CPU without native bf16
the bf16 forward is emulated (slow); the report says which CPU it was.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from bitmind.checkpoint import load_model
from bitmind.evaluation import build_dataset, collect_predictions
from bitmind.inference import CpuBf16, cpu_runs_bf16, forward_logits, serving_forward
from bitmind.metrics import compute_metrics

MODES = {"fp32": "0", "bf16": "1"}  # BITMIND_CPU_BF16 for each: what "auto" then serves


def forward_ms(net: torch.nn.Module, amp: str, rounds: int, per_round: int) -> list[float]:
    """p50 of ``per_round`` one-picture forwards in each of ``rounds`` rounds (after warm-up)."""
    fwd, _, channels_last = serving_forward(net, torch.device("cpu"), amp=amp)
    x = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    out = []
    with torch.inference_mode():
        for _ in range(3):
            forward_logits(fwd, x, channels_last=channels_last)
        for _ in range(rounds):
            ts = []
            for _ in range(per_round):
                t0 = time.perf_counter()
                forward_logits(fwd, x, channels_last=channels_last)
                ts.append((time.perf_counter() - t0) * 1000)
            out.append(statistics.median(ts))
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="mining_models/base.pth")
    p.add_argument("--data", nargs="+", required=True, help="pool(s) scored as they are (e.g. sn34-validator: already challenges)")
    p.add_argument("--split", default="test", help="train, val, test (by picture stem, split seed 0) or all")
    p.add_argument("--rounds", type=int, default=4, help="alternating timing rounds (fp32, bf16, fp32, ...)")
    p.add_argument("--per_round", type=int, default=15)
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    lm = load_model(a.model)
    dataset = build_dataset(a.data, split=None if a.split == "all" else a.split)
    before = os.environ.get("BITMIND_CPU_BF16")
    probs, metrics = {}, {}
    try:
        for mode, flag in MODES.items():
            os.environ["BITMIND_CPU_BF16"] = flag
            pred = collect_predictions(lm, dataset, progress=False)
            order = np.argsort(pred.index)
            probs[mode] = pred.probs[order]
            labels, sources = pred.labels[order], [pred.sources[k] for k in order]
            m = compute_metrics(pred.labels, pred.probs)
            metrics[mode] = {k: m[k] for k in ("balanced_accuracy", "roc_auc", "real_accuracy", "fake_accuracy", "brier")}
    finally:
        if before is None:
            os.environ.pop("BITMIND_CPU_BF16", None)
        else:
            os.environ["BITMIND_CPU_BF16"] = before
    served_bf16 = isinstance(serving_forward(lm.model, torch.device("cpu"), amp="bf16")[0], CpuBf16)
    timing = {"fp32": [], "bf16": []}
    for _ in range(a.rounds):
        for mode, amp in (("fp32", "none"), ("bf16", "bf16")):
            timing[mode] += forward_ms(lm.model, amp, 1, a.per_round)
    d = np.abs(probs["bf16"] - probs["fp32"])
    flips = np.flatnonzero((probs["bf16"] > 0.5) != (probs["fp32"] > 0.5))
    res = {"model": a.model, "data": a.data, "split": a.split, "n": int(len(d)),
           "cpu_computes_bf16": cpu_runs_bf16(), "bf16_forward_served": served_bf16, "torch": torch.__version__,
           "threads": torch.get_num_threads(),
           "probability_change": {"max": float(d.max()), "median": float(np.median(d)), "p99": float(np.quantile(d, 0.99))},
           "decisions_flipped": int(len(flips)), "flipped": [{"source": sources[k], "label": int(labels[k]),
                                                              "fp32": float(probs["fp32"][k]), "bf16": float(probs["bf16"][k])}
                                                             for k in flips],
           "metrics": metrics,
           "forward_p50_ms": {m: statistics.median(v) for m, v in timing.items()}, "forward_rounds_ms": timing}
    res["speedup"] = res["forward_p50_ms"]["fp32"] / res["forward_p50_ms"]["bf16"]
    print(f"{res['n']} pictures: probability change max {d.max():.4f}, median {np.median(d):.5f}; "
          f"{len(flips)} decisions flipped; balanced {metrics['fp32']['balanced_accuracy']:.4f} (fp32) vs "
          f"{metrics['bf16']['balanced_accuracy']:.4f} (bf16)")
    print(f"forward p50 fp32 {res['forward_p50_ms']['fp32']:.1f} ms, bf16 {res['forward_p50_ms']['bf16']:.1f} ms "
          f"({res['speedup']:.2f}x; this CPU computes bf16 natively: {res['cpu_computes_bf16']})")
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(res, indent=2))
        print(f"wrote {a.json}")
    return res


if __name__ == "__main__":
    main()
