"""Measure what a running miner costs: memory (RSS) and per-image CPU latency.

    python benchmarks/miner_footprint.py [--model mining_models/base.pth] [--requests 40]
                                         [--threads N] [--out benchmarks/results/miner_footprint.json]

Two measurements, both on CPU (the minimum hardware ``min_compute.yml`` describes):

1. In-process: ``Predictor.predict_b64`` on 256x256 JPEG challenges (what validators
   send): decode + transform + forward, one image at a time; and the forward alone.
2. The real miner process: ``neurons/miner.py --mock`` started on a local chain and
   queried through a validator-signed ``bt.Dendrite``; round-trip latency per request,
   then the process's resident memory (VmRSS) and peak (VmHWM) from /proc.

If the model file does not exist, an *untrained* NPR with the default architecture
(``build_model("npr")``: the size of the served model) is measured instead; the
latency and memory depend on the architecture, not on the weights.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def proc_mem_mb(pid: int) -> dict:
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = round(int(value.split()[0]) / 1024, 1)
    return fields


def summarize(ms: list[float]) -> dict:
    ms = sorted(ms)
    return {"n": len(ms), "median_ms": round(statistics.median(ms), 2),
            "p90_ms": round(ms[int(0.9 * (len(ms) - 1))], 2), "min_ms": round(ms[0], 2)}


def challenges(n: int) -> list[str]:
    import numpy as np
    from PIL import Image

    from bitmind.image_io import encode_image

    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        arr = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
        arr = (arr.astype(np.float32) * 0.3 + np.linspace(0, 170, 256)[None, :, None]).astype(np.uint8)
        out.append(encode_image(Image.fromarray(arr, "RGB"), "JPEG", 75))
    return out


def in_process(model: Path, payloads: list[str]) -> dict:
    import torch

    from bitmind.miner.predict import Predictor

    pred = Predictor(str(model), device="cpu")
    for p in payloads[:3]:
        pred.predict_b64(p)  # warm-up
    full, fwd = [], []
    for p in payloads:
        t0 = time.perf_counter()
        pred.predict_b64(p)
        full.append((time.perf_counter() - t0) * 1000)
        x = pred.preprocess_b64(p).unsqueeze(0)
        t0 = time.perf_counter()
        pred.logits(x)  # the serving forward (CPU-prepared, bf16 where the CPU computes it), as in predict_b64
        fwd.append((time.perf_counter() - t0) * 1000)
    batch = torch.stack([pred.preprocess_b64(p) for p in payloads[:16]])
    pred.logits(batch)  # warm-up
    runs = []
    for _ in range(3):
        t0 = time.perf_counter()
        pred.logits(batch)
        runs.append((time.perf_counter() - t0) * 1000)
    batch_ms = min(runs)
    params = sum(p.numel() for p in pred.current.model.parameters())
    bf16 = pred.status()["cpu_bf16"]
    pred.close()
    return {"decode_transform_forward": summarize(full), "forward_only": summarize(fwd), "cpu_bf16": bf16,
            "batch16_forward_ms_per_image": round(batch_ms / 16, 2), "model_parameters": params,
            "torch_threads": torch.get_num_threads()}


def miner_process(model: Path, payloads: list[str], threads: int | None) -> dict:
    from bitmind import local_chain
    from bitmind.local_chain import wait_for_axon
    from bitmind.shutdown import stop_process
    from bitmind.local_chain import query_axon
    from bitmind.protocol import ImageSynapse

    root = Path(tempfile.mkdtemp(prefix="bitmind-footprint-"))
    chain, wallets = local_chain.local_setup(root, 34, miners=("miner",), validators=("validator",))
    port = local_chain.free_port()
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    cmd = [sys.executable, str(REPO_ROOT / "neurons" / "miner.py"), "--mock", "--local.root", str(root),
           "--netuid", "34", "--wallet.name", "miner", "--axon.port", str(port),
           "--neuron.model_path", str(model), "--neuron.device", "cpu"]
    log = open(root / "miner.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        axon = wait_for_axon(chain, 34, wallets["miner"].hotkey.ss58_address, port, proc, 180)
        idle = proc_mem_mb(proc.pid)
        rtt, failures = [], 0
        for p in payloads:
            t0 = time.perf_counter()
            resp = query_axon(wallets["validator"], axon, ImageSynapse(image=p), timeout=30)
            rtt.append((time.perf_counter() - t0) * 1000)
            failures += not (0.0 <= resp.prediction <= 1.0)
        loaded = proc_mem_mb(proc.pid)
    finally:
        stop_process(proc)
        log.close()
        shutil.rmtree(root, ignore_errors=True)
    return {"rss_idle_mb": idle.get("VmRSS"), "rss_after_requests_mb": loaded.get("VmRSS"),
            "rss_peak_mb": loaded.get("VmHWM"), "round_trip": summarize(rtt), "failed_requests": failures}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="mining_models/base.pth")
    ap.add_argument("--requests", type=int, default=40)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--out", default=None, help="also write the JSON result here")
    args = ap.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    from bitmind.miner.config import resolve_model_path

    model = resolve_model_path(args.model, REPO_ROOT)
    note = None
    if not model.is_file():
        import torch

        from bitmind.checkpoint import save_checkpoint
        from bitmind.models import build_model

        torch.manual_seed(0)
        model = save_checkpoint(build_model("npr"), Path(tempfile.mkdtemp()) / "untrained_default_npr.pth")
        note = f"{args.model} not found: measured an untrained default-architecture NPR"
    payloads = challenges(args.requests)
    result = {
        "model": str(model), "note": note, "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(), "python": platform.python_version(),
        "in_process": in_process(model, payloads),
        "miner_process": miner_process(model, payloads, args.threads),
    }
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
