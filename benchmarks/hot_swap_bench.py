#!/usr/bin/env python3
"""Hot swap under load: how soon does a replaced model file serve, and does anything fail?

    python benchmarks/hot_swap_bench.py [--size tiny|full] [--swaps 10] [--clients 4]
        [--interval 1.5] [--no-axon] [--json benchmarks/results/hot_swap_<size>.json]

Clients query continuously (through the real miner process, ``neurons/miner.py --mock``,
and real ``bt.Dendrite``s; or in process with ``--no-axon``) while the model file is
replaced ``--swaps`` times: alternately copied over in place (truncate + rewrite, in
chunks, as ``cp`` does: the miner can see it half-written) and renamed over atomically;
one replacement, halfway, is a truncated file, which must be refused.

Each model answers a constant, known probability (fc1 weight zero, bias = a distinct
logit), so every answer names its model. Reported per replacement:

``delay_s``        first answer from the new model minus the moment its file was complete;
``stale_after_s``  the latest start, after the file was complete, of a request that was
                   still answered by an older model (how long old answers can linger);

and overall: failed requests (not 200, or -1), answers from no known model (a half-loaded
model would give one), answers from the truncated file. Targets: zero failures, zero
unknown answers, max delay <= 1 s. ``--size full`` uses the served (default) NPR size, so
the delay includes a realistic load and validation.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
NETUID = 34


def logit_of(k: int) -> float:
    return -2.25 + 0.5 * k


def prob_of(k: int) -> float:
    return 1.0 / (1.0 + math.exp(-logit_of(k)))


def constant_model_bytes(tmp: Path, k: int, size: str) -> bytes:
    import torch

    from bitmind.checkpoint import save_checkpoint
    from bitmind.models import build_model

    torch.manual_seed(k)
    model = build_model("npr", layers=[1, 1], width=8) if size == "tiny" else build_model("npr")
    with torch.no_grad():
        model.fc1.weight.zero_()
        model.fc1.bias.fill_(logit_of(k))
    return save_checkpoint(model, tmp / f"model_{k}.pth").read_bytes()


def write_in_place(path: Path, data: bytes, chunks: int = 8, pause: float = 0.01) -> None:
    step = max(1, len(data) // chunks)
    with open(path, "r+b") as f:
        f.truncate(0)
        for i in range(0, len(data), step):
            f.write(data[i:i + step])
            f.flush()
            time.sleep(pause)


def write_by_rename(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".incoming")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def model_index(p: float, n: int) -> int | None:
    for k in range(n + 1):
        if abs(p - prob_of(k)) < 1e-4:
            return k
    return None


class Load:
    """``clients`` request loops on an event loop in a background thread; records
    (client, start, end, ok, prediction) with monotonic times."""

    def __init__(self, clients: int, make_call):
        self.clients, self.make_call = clients, make_call
        self.records: list[tuple[int, float, float, bool, float]] = []
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as e:  # surfaced by the main thread
            self.error = e

    async def _main(self) -> None:
        call, close = await self.make_call(self.clients)

        async def loop(c: int) -> None:
            while not self.stop.is_set():
                t0 = time.monotonic()
                ok, p = await call(c)
                self.records.append((c, t0, time.monotonic(), ok, p))

        try:
            await asyncio.gather(*(loop(c) for c in range(self.clients)))
        finally:
            await close()


def inproc_caller(model_path: Path, payload: str, compile: bool = False):
    from bitmind.miner.handlers import MinerHandlers
    from bitmind.miner.predict import Predictor
    from bitmind.protocol import ImageSynapse

    predictor = Predictor(str(model_path), device="cpu", compile=compile)
    handlers = MinerHandlers(predictor, metagraph=None)

    async def make(clients):
        async def call(c):
            out = await handlers.forward(ImageSynapse(image=payload))
            return out.prediction != -1.0, out.prediction

        async def close():
            predictor.close()

        return call, close

    return make, None


def axon_caller(model_path: Path, payload: str, root: Path, compile: bool = False):
    import bittensor as bt

    from bitmind import local_chain
    from bitmind.local_chain import wait_for_axon
    from bitmind.protocol import ImageSynapse

    chain, wallets = local_chain.local_setup(root, NETUID, miners=("miner",), validators=("validator",), block_time=0)
    port = local_chain.free_port()
    log = open(root / "miner.log", "w")
    proc = subprocess.Popen([sys.executable, str(REPO_ROOT / "neurons" / "miner.py"), "--mock", "--local.root", str(root),
                             "--netuid", str(NETUID), "--wallet.name", "miner", "--axon.port", str(port),
                             "--neuron.model_path", str(model_path), "--neuron.device", "cpu",
                             *(["--neuron.compile"] if compile else [])],
                            stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONPATH": str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")})
    axon = wait_for_axon(chain, NETUID, wallets["miner"].hotkey.ss58_address, port, proc, 240)

    async def make(clients):
        dendrites = [bt.Dendrite(wallet=wallets["validator"]) for _ in range(clients)]

        async def call(c):
            r = await dendrites[c].call(axon, ImageSynapse(image=payload), timeout=30, deserialize=False)
            dendrites[c].synapse_history.clear()
            return r.dendrite.status_code == 200 and r.prediction != -1.0, r.prediction

        async def close():
            for d in dendrites:
                await d.aclose_session()

        return call, close

    return make, (proc, log)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--size", choices=("tiny", "full"), default="tiny")
    ap.add_argument("--swaps", type=int, default=10)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--interval", type=float, default=1.5, help="seconds between replacements")
    ap.add_argument("--no-axon", action="store_true", help="drive the handlers in process (no bittensor transport)")
    ap.add_argument("--compile", action="store_true", help="the miner serves compiled (--neuron.compile): the first "
                    "model compiled, each replacement prepared and uncompiled")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    from bitmind.image_io import encode_image
    from bitmind.image_transforms import base_pil
    from PIL import Image

    tmp = Path(tempfile.mkdtemp(prefix="bitmind-hot-swap-"))
    truncated_step = max(1, args.swaps // 2)
    blobs = {k: constant_model_bytes(tmp, k, args.size) for k in range(args.swaps + 1)}
    path = tmp / "serving" / "base.pth"
    path.parent.mkdir()
    path.write_bytes(blobs[0])
    payload = encode_image(base_pil(Image.effect_mandelbrot((300, 300), (-2, -1.2, 0.8, 1.2), 60).convert("RGB")))
    if args.no_axon:
        make, server = inproc_caller(path, payload, args.compile)
    else:
        make, server = axon_caller(path, payload, tmp / "chain", args.compile)
    load = Load(args.clients, make)
    load.thread.start()
    swaps = []
    try:
        deadline = time.monotonic() + 120
        while not any(model_index(p, args.swaps) == 0 for *_, p in list(load.records)):
            if load.error or time.monotonic() > deadline:
                raise RuntimeError(f"no answer from model 0: {load.error!r}")
            time.sleep(0.05)
        for k in range(1, args.swaps + 1):
            time.sleep(args.interval)
            start = time.monotonic()
            if k == truncated_step:
                method = "truncated (in place)"
                write_in_place(path, blobs[k][: len(blobs[k]) // 2])
            elif k % 2:
                method = "copy in place"
                write_in_place(path, blobs[k])
            else:
                method = "atomic rename"
                write_by_rename(path, blobs[k])
            swaps.append({"step": k, "method": method, "write_start": start, "complete": time.monotonic()})
            print(f"  replacement {k:>2}: {method}", flush=True)
        time.sleep(args.interval)
    finally:
        load.stop.set()
        load.thread.join(timeout=60)
        if server is not None:
            from bitmind.shutdown import stop_process

            stop_process(server[0])
            server[1].close()
    if load.error:
        raise load.error

    recs = load.records
    t_origin = min(r[1] for r in recs)
    idx = [model_index(p, args.swaps) if ok else None for _, _, _, ok, p in recs]
    failed = sum(not ok for _, _, _, ok, _ in recs)
    unknown = sum(1 for (_, _, _, ok, _), i in zip(recs, idx) if ok and i is None)
    truncated_answers = sum(1 for i in idx if i == truncated_step)
    per_swap = []
    for s in swaps:
        k, done = s["step"], s["complete"]
        row = {"step": k, "method": s["method"], "write_s": round(done - s["write_start"], 4),
               "complete_at_s": round(done - t_origin, 3)}
        if k == truncated_step:
            row["refused"] = truncated_answers == 0
        else:
            firsts = [t1 for (_, _, t1, _, _), i in zip(recs, idx) if i == k]
            row["delay_s"] = round(min(firsts) - done, 4) if firsts else None
            stale = [t0 - done for (_, t0, _, _, _), i in zip(recs, idx) if t0 > done and i is not None and i < k]
            row["stale_after_s"] = round(max(stale), 4) if stale else 0.0
        per_swap.append(row)
    delays = [r["delay_s"] for r in per_swap if r.get("delay_s") is not None]
    res = {
        "mode": "in process (handlers + Predictor)" if args.no_axon else "miner process through bt.Axon/bt.Dendrite",
        "size": args.size, "model_bytes": len(blobs[0]), "clients": args.clients, "swaps": args.swaps,
        "interval_s": args.interval, "requests": len(recs), "failed_requests": failed,
        "unknown_answers": unknown, "truncated_file_answers": truncated_answers,
        "max_delay_s": max(delays) if delays else None, "max_stale_after_s": max(r.get("stale_after_s", 0) for r in per_swap),
        "every_new_model_served": all(r.get("delay_s") is not None for r in per_swap if "delay_s" in r),
        "per_swap": per_swap,
        "machine": {"cpu_count": os.cpu_count(), "python": platform.python_version(),
                    "loadavg_end": [round(x, 2) for x in os.getloadavg()]},
    }
    res["targets_met"] = (failed == 0 and unknown == 0 and truncated_answers == 0 and res["every_new_model_served"]
                          and res["max_delay_s"] is not None and res["max_delay_s"] <= 1.0)
    print(f"\n{len(recs)} requests from {args.clients} clients over {args.swaps} replacements ({res['mode']}, {args.size} model)")
    print(f"{'step':>4}  {'method':<22}{'delay s':>9}{'stale s':>9}")
    for r in per_swap:
        print(f"{r['step']:>4}  {r['method']:<22}{r.get('delay_s', 'refused' if r.get('refused') else '-')!s:>9}"
              f"{r.get('stale_after_s', '')!s:>9}")
    print(f"failed {failed}, unknown answers {unknown}, answers from the truncated file {truncated_answers}, "
          f"max delay {res['max_delay_s']} s -> targets {'MET' if res['targets_met'] else 'MISSED'}")
    out = Path(args.json or REPO_ROOT / "benchmarks" / "results" / f"hot_swap_{args.size}{'_inproc' if args.no_axon else ''}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1) + "\n")
    print(f"wrote {out}")
    return 0 if res["targets_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
