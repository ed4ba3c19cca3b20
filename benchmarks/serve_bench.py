#!/usr/bin/env python3
"""How fast does the miner answer, and how much of that is the model?

    python benchmarks/serve_bench.py [--data ../shared/data/sn34-mini] [--device cpu|cuda]
        [--model mining_models/base.pth] [--requests 200] [--clients 1,4,16] [--json OUT] [--no-axon]

Everything below is measured in one run, on the same machine, with the same challenges
(256x256 JPEG q75, base64: what validators send), made from the images of ``--data``
(CLASS/SOURCE/*.jpg) or synthetic ones if it is absent:

``floor``        decode + transform + forward of one image, model loaded once, nothing
                 else: the cost per request no serving design can avoid.
``predictor``    the miner's ``Predictor`` in process (decode thread + micro-batching
                 worker), driven by 1/4/16 concurrent asyncio clients: serving minus network.
``baseline_inproc``  the original miner design in process: rebuild the model and
                 ``torch.load`` the file on every request, all of it synchronous inside the
                 async forward (it blocks the event loop, so concurrent clients queue).
``axon_empty`` / ``axon_instant``  round trips through a real ``bt.Axon`` (real blacklist and
                 priority handlers, mock chain on loopback) queried by real ``bt.Dendrite``s,
                 whose forward answers at once: with an empty synapse, and with the full
                 challenge payload. That is the fixed price of bittensor's transport
                 (signing, nonce and signature checks, body hashing, pydantic, HTTP).
``miner``        the real miner process (``neurons/miner.py --mock``) queried through the
                 axon: p50/p99 latency with one client, throughput with 1/4/16 clients.
``baseline``     the original design behind the same axon, same clients.

Servers run in their own processes (the clients' work must not share a GIL with them);
on a small machine clients and server still share the CPU cores, so the client and
server CPU time per request are recorded too. The axon parts need bittensor; without it
(or with ``--no-axon``) only the floor, predictor and in-process baseline run, which is
what the GPU machine (torch only) runs. On CUDA the forward uses bf16 autocast.

``--compare-model B`` also measures the floor of a second checkpoint B (e.g. the single
network ``mining_models/npr_f2.pth``) in the same run: both floors are timed in alternating
rounds (A, B, A, B, ...) on the same challenges, so that drift of this machine's speed hits
both alike; ``compare`` in the JSON holds B's floor and the ratio of the two p50s.

Targets checked at the end: miner p50 <= 1.5 x floor + axon overhead; throughput with 16
clients >= 2 x with 1; >= 2x faster per request than the baseline; with ``--compare-model``,
floor p50 <= ``--compare-max-ratio`` (default 2) x the compared model's floor p50.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
NETUID = 34
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp")

try:
    import torch

    from bitmind.image_io import decode_image, encode_image, load_image_file
    from bitmind.image_transforms import base_pil, base_transforms
    from bitmind.miner.batching import auto_max_batch
    from bitmind.miner.cpu import logits_of, single_threaded
    from bitmind.miner.predict import Predictor
    from bitmind.models import build_model
except ImportError as _e:  # pragma: no cover - a clear message on a machine without the package installed
    sys.exit(f"cannot import the bitmind package ({_e}); run from the repository root with PYTHONPATH=. "
             "or install it (pip install -e .)")


# ----------------------------------------------------------------------------- helpers
def summarize(ms: list[float]) -> dict:
    """n, p50, p90, p99, mean and min of a list of milliseconds."""
    if not ms:
        return {"n": 0}
    s = sorted(ms)

    def q(p: float) -> float:
        return round(s[min(len(s) - 1, int(round(p * (len(s) - 1))))], 2)

    return {"n": len(s), "p50_ms": round(statistics.median(s), 2), "p90_ms": q(0.9), "p99_ms": q(0.99),
            "mean_ms": round(statistics.fmean(s), 2), "min_ms": round(s[0], 2)}


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU seconds of a process (this one by default), all its threads."""
    import psutil

    t = psutil.Process(pid).cpu_times() if pid else psutil.Process().cpu_times()
    return t.user + t.system


def system_busy_seconds() -> float:
    import psutil

    t = psutil.cpu_times()  # guest time is already part of user time: not added again
    return sum(getattr(t, f, 0.0) for f in ("user", "nice", "system", "irq", "softirq", "steal"))


class ForeignLoad:
    """How many cores *other* processes kept busy during a measurement (this machine is
    shared: a number well above 0 means the figures were taken under contention)."""

    def __init__(self, pids: tuple[int, ...] = ()):
        self.pids = pids
        self.t0 = time.perf_counter()
        self.busy0, self.own0 = self._sample()

    def _sample(self) -> tuple[float, float] | tuple[None, None]:
        try:  # sandboxes may not expose system-wide counters
            return system_busy_seconds(), cpu_seconds() + sum(cpu_seconds(p) for p in self.pids)
        except Exception:
            return None, None

    def cores(self) -> float | None:
        wall = time.perf_counter() - self.t0
        busy, own = self._sample()
        if busy is None or self.busy0 is None:
            return None
        return round(max(0.0, (busy - self.busy0) - (own - self.own0)) / wall, 2)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_challenges(data: str | None, n: int, seed: int = 0) -> tuple[list[str], str]:
    """``n`` base64 JPEG q75 challenges of 256x256: from ``data`` (CLASS/SOURCE/*.jpg, spread
    over classes and sources) if it has images, else synthetic gradients with noise."""
    import numpy as np
    from PIL import Image

    files: list[Path] = []
    if data and Path(data).is_dir():
        files = sorted(p for p in Path(data).glob("*/*/*") if p.suffix.lower() in IMAGE_EXTS)
    if files:
        step = max(1, len(files) // n)
        chosen = (files[::step] + files)[:n]
        out = [encode_image(base_pil(load_image_file(p)), "JPEG", 75) for p in chosen]
        return out, f"{len(out)} images from {data} ({len(files)} available), re-encoded 256x256 JPEG q75"
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        arr = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8).astype(np.float32) * 0.3
        arr += np.linspace(0, 170, 256)[None, :, None] * rng.uniform(0.5, 1.0)
        out.append(encode_image(Image.fromarray(arr.clip(0, 255).astype(np.uint8), "RGB"), "JPEG", 75))
    return out, f"{n} synthetic 256x256 JPEG q75 images (no --data folder)"


def resolve_model(arg: str, tmp: Path) -> tuple[Path, str | None]:
    p = Path(arg)
    if not p.is_absolute() and not p.exists():
        p = REPO_ROOT / arg
    if p.is_file():
        return p.resolve(), None
    from bitmind.checkpoint import save_checkpoint

    torch.manual_seed(0)
    path = save_checkpoint(build_model("npr"), tmp / "untrained_default_npr.pth")
    return path, f"{arg} not found: measured an untrained NPR of the default (served) architecture"


# ----------------------------------------------------------------------------- the original design
class BaselinePredictor:
    """The original SN34 miner's serving path, as a baseline: on every request rebuild the
    model, ``torch.load`` its weights from the file, then decode, transform and run it,
    all synchronously inside the async forward (so the event loop is blocked throughout)."""

    def __init__(self, model_path: str | Path, device: str | torch.device = "cpu"):
        self.model_path = str(model_path)
        self.device = torch.device(device)
        self.amp_dtype = torch.bfloat16 if self.device.type == "cuda" else None
        self.calls = 0

    def predict_b64(self, b64: str) -> float:
        self.calls += 1
        obj = torch.load(self.model_path, map_location="cpu", weights_only=True)
        meta = obj.get("meta") or {}
        model = build_model(meta.get("arch", "npr"), **(meta.get("config") or {}))
        model.load_state_dict(obj["model"] if "model" in obj else obj)
        model.eval().to(self.device)
        x = base_transforms(decode_image(b64)).unsqueeze(0)
        return float(torch.sigmoid(logits_of(model, x, self.amp_dtype))[0])

    async def predict_b64_async(self, b64: str, priority: float = 0.0) -> float:
        return self.predict_b64(b64)  # deliberately blocking: that is the design being measured


class InstantPredictor:
    """Answers at once without looking at the image: isolates the axon's own cost."""

    async def predict_b64_async(self, b64: str, priority: float = 0.0) -> float:
        return 0.5


# ----------------------------------------------------------------------------- in-process parts
def time_floor(predictor: Predictor, payloads: list[str], reps: int, start: int = 0,
               into: dict[str, list[float]] | None = None) -> dict[str, list[float]]:
    """Time ``reps`` lone requests (decode + transform + forward, ms) on the predictor's own
    serving forward, payloads from position ``start``; appends to ``into`` if given."""
    dev, forward = predictor.device, predictor.logits  # the forward the predictor serves with
    torch.set_num_threads(predictor.batcher.threads)  # as the predictor's worker 0 for a lone request
    for b in payloads[:5]:
        forward(base_transforms(decode_image(b)).unsqueeze(0))
    t = into if into is not None else {"total": [], "decode": [], "transform": [], "forward": []}
    for i in range(start, start + reps):
        b = payloads[i % len(payloads)]
        t0 = time.perf_counter()
        img = decode_image(b)
        t1 = time.perf_counter()
        x = base_transforms(img).unsqueeze(0)
        t2 = time.perf_counter()
        forward(x)
        sync(dev)
        t3 = time.perf_counter()
        t["total"].append((t3 - t0) * 1000)
        t["decode"].append((t1 - t0) * 1000)
        t["transform"].append((t2 - t1) * 1000)
        t["forward"].append((t3 - t2) * 1000)
    return t


def measure_floor(predictor: Predictor, payloads: list[str], reps: int) -> dict:
    """decode + transform + forward per image on the predictor's own model, sequentially."""
    watch = ForeignLoad()
    timed = time_floor(predictor, payloads, reps)
    return floor_summary(predictor, payloads, reps, timed, watch.cores())


def measure_floors_paired(a: Predictor, b: Predictor, payloads: list[str], reps: int, rounds: int = 4) -> tuple[dict, dict]:
    """The floors of two predictors, ``reps`` requests each, timed in ``rounds`` alternating
    rounds (a, b, a, b, ...) over the same payloads: slow drift of the machine's speed (a
    shared VM) then falls on both alike. Each summary also lists its rounds' p50s."""
    rounds = max(1, min(rounds, reps))
    timed = {id(p): {"total": [], "decode": [], "transform": [], "forward": []} for p in (a, b)}
    per_round: dict[int, list[float]] = {id(a): [], id(b): []}
    watch = ForeignLoad()
    done = 0
    for r in range(rounds):
        n = reps * (r + 1) // rounds - done
        for p in (a, b):
            before = len(timed[id(p)]["total"])
            time_floor(p, payloads, n, start=done, into=timed[id(p)])
            per_round[id(p)].append(round(statistics.median(timed[id(p)]["total"][before:]), 2))
        done += n
    load = watch.cores()
    out = []
    for p in (a, b):
        s = floor_summary(p, payloads, reps, timed[id(p)], load)
        s["rounds_p50_ms"] = per_round[id(p)]
        out.append(s)
    return out[0], out[1]


def floor_summary(predictor: Predictor, payloads: list[str], reps: int, t: dict[str, list[float]],
                  foreign_load: float | None) -> dict:
    """Summary of timed lone requests, plus the eager forward and the batched forward's cost
    per image (both timed here, after the lone requests)."""
    dev, forward = predictor.device, predictor.logits
    torch.set_num_threads(predictor.batcher.threads)
    eager = []  # the plain eager module, for reference (the predictor serves a prepared copy on CPU)
    x = base_transforms(decode_image(payloads[0])).unsqueeze(0)
    for i in range(min(reps, 30)):
        t0 = time.perf_counter()
        logits_of(predictor.current.model, x, predictor.amp_dtype)
        eager.append((time.perf_counter() - t0) * 1000)
    out = {"total": summarize(t["total"]), "decode_p50_ms": summarize(t["decode"])["p50_ms"],
           "transform_p50_ms": summarize(t["transform"])["p50_ms"], "forward_p50_ms": summarize(t["forward"])["p50_ms"],
           "optimized": predictor.status()["optimized"], "cpu_bf16": predictor.status()["cpu_bf16"],
           "eager_forward_p50_ms": summarize(eager[3:])["p50_ms"],
           "foreign_load_cores": foreign_load}
    # Batched forward cost per image (what micro-batching can win or lose on this device).
    per_image = {}
    x1 = torch.stack([base_transforms(decode_image(b)) for b in payloads[:1]])
    for bs in (1, 2, 4, 8, 16, 32):
        xb = x1.expand(bs, -1, -1, -1).contiguous()
        forward(xb)
        runs = []
        for _ in range(3 if dev.type == "cpu" else 10):
            t0 = time.perf_counter()
            forward(xb)
            sync(dev)
            runs.append((time.perf_counter() - t0) * 1000)
        per_image[str(bs)] = round(min(runs) / bs, 2)
    out["batched_forward_ms_per_image"] = per_image
    return out


def in_thread(fn, *args):
    """Run ``fn`` in a thread of its own, as the predictor's workers run the model: a thread
    that runs multi-threaded torch ops keeps an OpenMP team alive, which slows other
    threads' multi-threaded forwards (bitmind.miner.cpu.single_threaded)."""
    out: list = []
    t = threading.Thread(target=lambda: out.append(fn(*args)))
    t.start()
    t.join()
    return out[0]


async def _drive(call, payloads: list[str], clients: int, requests: int) -> dict:
    """``clients`` concurrent loops awaiting ``call(payload) -> (ok, ms)``; ``requests`` in all."""
    per_client = max(1, requests // clients)
    lat: list[float] = []
    failures = 0

    async def client(k: int) -> None:
        nonlocal failures
        for i in range(per_client):
            ok, ms = await call(payloads[(k * per_client + i) % len(payloads)])
            if ok:
                lat.append(ms)
            else:
                failures += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(client(k) for k in range(clients)))
    wall = time.perf_counter() - t0
    return {"clients": clients, "requests": per_client * clients, "failed": failures, "wall_s": round(wall, 3),
            "throughput_rps": round(len(lat) / wall, 2), "latency": summarize(lat)}


def drive_inproc(predict_async, payloads: list[str], client_counts: list[int], requests: int) -> dict:
    """Concurrent asyncio clients calling ``predict_async(b64)`` in this process (no network)."""

    async def call(b64: str):
        t0 = time.perf_counter()
        try:
            p = await predict_async(b64)
            return 0.0 <= p <= 1.0, (time.perf_counter() - t0) * 1000
        except Exception:
            return False, 0.0

    results = {}
    for c in client_counts:
        asyncio.run(_drive(call, payloads, c, max(4, requests // 8)))  # warm-up (threads, allocator)
        cpu0, watch = cpu_seconds(), ForeignLoad()
        r = asyncio.run(_drive(call, payloads, c, requests))
        r["cpu_ms_per_request"] = round((cpu_seconds() - cpu0) * 1000 / max(1, r["requests"]), 2)
        r["foreign_load_cores"] = watch.cores()
        results[str(c)] = r
        print(f"    {c:>2} clients: {r['throughput_rps']:7.2f} req/s, p50 {r['latency'].get('p50_ms')} ms, "
              f"p99 {r['latency'].get('p99_ms')} ms, failed {r['failed']}, other load {r['foreign_load_cores']} cores",
              flush=True)
    return results


# ----------------------------------------------------------------------------- axon parts
def serve_main(args) -> int:
    """``--serve baseline|instant``: an axon with the real handlers in front of the
    baseline or instant predictor, on the local chain under ``--root``; runs until stdin closes."""
    import bittensor as bt

    from bitmind import local_chain
    from bitmind.miner.handlers import MinerHandlers

    local_chain.patch_external_ip()
    chain = local_chain.open_local_chain(args.root, NETUID, block_time=0)
    wallet = local_chain.local_wallet(args.root, "miner")
    predictor = BaselinePredictor(args.model, args.device) if args.serve == "baseline" else InstantPredictor()
    handlers = MinerHandlers(predictor, chain.metagraph(NETUID))
    axon = bt.Axon(wallet=wallet, ip="127.0.0.1", external_ip="127.0.0.1", port=args.port)
    handlers.attach(axon)
    axon.serve(netuid=NETUID, subtensor=chain)
    axon.start()
    sys.stdin.read()  # the parent closes our stdin to stop us
    axon.stop()
    return 0


class Server:
    """A serving process (the real miner, or ``--serve`` of this script) on the local chain."""

    def __init__(self, kind: str, root: Path, model: Path, device: str, env_extra: dict, miner_flags: list[str]):
        from bitmind import local_chain

        self.kind, self.root = kind, root
        self.port = local_chain.free_port()
        env = {**os.environ, **env_extra, "PYTHONPATH": str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        if kind == "miner":
            cmd = [sys.executable, str(REPO_ROOT / "neurons" / "miner.py"), "--mock", "--local.root", str(root),
                   "--netuid", str(NETUID), "--wallet.name", "miner", "--axon.port", str(self.port),
                   "--neuron.model_path", str(model), "--neuron.device", device, *miner_flags]
        else:
            cmd = [sys.executable, str(Path(__file__).resolve()), "--serve", kind, "--root", str(root),
                   "--port", str(self.port), "--model", str(model), "--device", device]
        self.log_path = root / f"{kind}.log"
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=self.log, stderr=subprocess.STDOUT, env=env)

    def wait(self, chain, hotkey: str, timeout: float = 240.0):
        from bitmind.local_chain import wait_for_axon

        try:
            return wait_for_axon(chain, NETUID, hotkey, self.port, self.proc, timeout)
        except Exception:
            self.stop()
            print(self.log_path.read_text()[-3000:], file=sys.stderr)
            raise

    def stop(self) -> None:
        from bitmind.shutdown import stop_process

        if self.proc.stdin and not self.proc.stdin.closed:
            self.proc.stdin.close()
        if self.kind != "miner":
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        stop_process(self.proc)
        self.log.close()


def drive_axon(server: Server, axon, wallet, payloads: list[str], client_counts: list[int], requests: int,
               timeout: float, empty: bool = False) -> dict:
    """Concurrent clients, one ``bt.Dendrite`` each (each dendrite has its own nonce stream),
    on one event loop in this process; returns per-client-count latency and throughput."""
    import bittensor as bt

    from bitmind.protocol import ImageSynapse

    async def run_all() -> dict:
        dendrites = [bt.Dendrite(wallet=wallet) for _ in range(max(client_counts))]
        results = {}
        try:
            for c in client_counts:
                pool = asyncio.Queue()
                for d in dendrites[:c]:
                    pool.put_nowait(d)

                async def call(b64: str):
                    d = await pool.get()  # one request in flight per dendrite
                    try:
                        t0 = time.perf_counter()
                        r = await d.call(axon, ImageSynapse(image="" if empty else b64), timeout=timeout,
                                         deserialize=False)
                        ms = (time.perf_counter() - t0) * 1000
                    finally:
                        pool.put_nowait(d)
                    ok = r.dendrite.status_code == 200 and (empty or 0.0 <= r.prediction <= 1.0)
                    return ok, ms

                await _drive(call, payloads, c, max(2 * c, requests // 8))  # warm-up: connections, threads
                cpu_s, cpu_c = cpu_seconds(server.proc.pid), cpu_seconds()
                watch = ForeignLoad((server.proc.pid,))
                r = await _drive(call, payloads, c, requests)
                r["foreign_load_cores"] = watch.cores()
                n = max(1, r["requests"])
                r["server_cpu_ms_per_request"] = round((cpu_seconds(server.proc.pid) - cpu_s) * 1000 / n, 2)
                r["client_cpu_ms_per_request"] = round((cpu_seconds() - cpu_c) * 1000 / n, 2)
                results[str(c)] = r
                print(f"    {c:>2} clients: {r['throughput_rps']:7.2f} req/s, p50 {r['latency'].get('p50_ms')} ms, "
                      f"p99 {r['latency'].get('p99_ms')} ms, failed {r['failed']}, cpu/req server "
                      f"{r['server_cpu_ms_per_request']} client {r['client_cpu_ms_per_request']} ms, other load "
                      f"{r['foreign_load_cores']} cores", flush=True)
                for d in dendrites[:c]:
                    d.synapse_history.clear()
        finally:
            for d in dendrites:
                await d.aclose_session()
        return results

    return asyncio.run(run_all())


# ----------------------------------------------------------------------------- report
def ratio(a, b):
    return round(a / b, 3) if a and b else None


def targets(res: dict) -> dict:
    """The three targets, from the measurements (None where a part did not run)."""
    out = {}
    floor = res["floor"]["total"]["p50_ms"]
    cmp_ = res.get("compare")
    if cmp_:
        other = cmp_["floor"]["total"]["p50_ms"]
        out["floor_vs_compare"] = {"floor_p50_ms": floor, "compare_floor_p50_ms": other,
                                   "compare_model": cmp_["model"], "ratio": ratio(floor, other),
                                   "max_ratio": cmp_["max_ratio"], "met": floor <= cmp_["max_ratio"] * other}
    ax = res.get("axon")
    if ax:
        overhead = ax["instant"]["1"]["latency"]["p50_ms"]
        p50 = ax["miner"]["1"]["latency"]["p50_ms"]
        bound = 1.5 * floor + overhead
        out["p50_vs_floor"] = {"miner_p50_ms": p50, "floor_p50_ms": floor, "axon_overhead_p50_ms": overhead,
                               "empty_synapse_p50_ms": ax["empty"]["1"]["latency"]["p50_ms"],
                               "bound_ms": round(bound, 2), "met": p50 <= bound,
                               "miner_minus_overhead_over_floor": ratio(p50 - overhead, floor)}
        t1, t16 = ax["miner"]["1"]["throughput_rps"], ax["miner"].get("16", {}).get("throughput_rps")
        out["scaling_axon"] = {"throughput_1": t1, "throughput_16": t16, "ratio": ratio(t16, t1),
                               "met": bool(t16 and t16 >= 2 * t1)}
        if "baseline" in ax:
            b = ax["baseline"]["1"]["latency"]["p50_ms"]
            out["vs_baseline_axon"] = {"miner_p50_ms": p50, "baseline_p50_ms": b, "speedup_p50": ratio(b, p50),
                                       "speedup_throughput_16": ratio(t16, ax["baseline"].get("16", {}).get("throughput_rps")),
                                       "met": b >= 2 * p50}
    pr, bl = res.get("predictor"), res.get("baseline_inproc")
    if not pr:
        return out
    t1, t16 = pr["1"]["throughput_rps"], pr.get("16", {}).get("throughput_rps")
    out["scaling_inproc"] = {"throughput_1": t1, "throughput_16": t16, "ratio": ratio(t16, t1),
                             "met": bool(t16 and t16 >= 2 * t1)}
    if bl:
        p, b = pr["1"]["latency"]["p50_ms"], bl["1"]["latency"]["p50_ms"]
        out["vs_baseline_inproc"] = {"predictor_p50_ms": p, "baseline_p50_ms": b, "speedup_p50": ratio(b, p),
                                     "speedup_throughput_16": ratio(t16, bl.get("16", {}).get("throughput_rps")),
                                     "met": b >= 2 * p}
    return out


def print_table(res: dict) -> None:
    rows = [("floor (decode+transform+forward)", res["floor"]["total"], None)]
    if res.get("compare"):
        rows.append((f"floor of --compare-model {Path(res['compare']['model']).name}",
                     res["compare"]["floor"]["total"], None))
    for name, part in (("predictor in-process", res.get("predictor")), ("baseline in-process", res.get("baseline_inproc"))):
        for c, r in (part or {}).items():
            rows.append((f"{name}, {c} clients", r["latency"], r["throughput_rps"]))
    for name, part in (res.get("axon") or {}).items():
        for c, r in part.items():
            rows.append((f"axon {name}, {c} clients", r["latency"], r["throughput_rps"]))
    print(f"\n{'measurement':<44}{'p50 ms':>9}{'p99 ms':>9}{'req/s':>9}")
    for name, lat, rps in rows:
        print(f"{name:<44}{lat.get('p50_ms', ''):>9}{lat.get('p99_ms', ''):>9}{'' if rps is None else rps:>9}")
    print("\ntargets:")
    for k, v in res["targets"].items():
        print(f"  {k:<20} {'MET ' if v.get('met') else 'MISS'} {json.dumps({a: b for a, b in v.items() if a != 'met'})}")


# ----------------------------------------------------------------------------- main
def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--model", default="mining_models/base.pth",
                    help="checkpoint to serve (default mining_models/base.pth; an untrained default NPR if missing)")
    ap.add_argument("--compare-model", "--compare_model", dest="compare_model", default=None,
                    help="a second checkpoint whose floor is measured in the same run, in rounds alternating "
                    "with --model's (e.g. mining_models/npr_f2.pth); only the floor, not the serving parts")
    ap.add_argument("--compare-max-ratio", type=float, default=2.0,
                    help="target: floor p50 of --model <= this x floor p50 of --compare-model")
    ap.add_argument("--floor-rounds", type=int, default=4,
                    help="alternating rounds of the two floors with --compare-model")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (bf16 autocast on cuda)")
    ap.add_argument("--data", default=None, help="image folder in CLASS/SOURCE layout for the challenges")
    ap.add_argument("--requests", type=int, default=200, help="requests per measurement")
    ap.add_argument("--baseline-requests", type=int, default=None, help="requests per baseline measurement "
                    "(default: half of --requests)")
    ap.add_argument("--clients", default="1,4,16", help="concurrent client counts")
    ap.add_argument("--no-axon", action="store_true", help="skip the axon parts (no bittensor needed)")
    ap.add_argument("--no-baseline", action="store_true", help="skip the baseline parts")
    ap.add_argument("--no-inproc", action="store_true", help="skip the in-process predictor and baseline runs")
    ap.add_argument("--torch-threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    ap.add_argument("--max-batch", type=int, default=0, help="Predictor max_batch (0: the miner's auto choice)")
    ap.add_argument("--workers", type=int, default=0, help="in-process Predictor forward workers (0: auto; the "
                    "miner process always uses auto)")
    ap.add_argument("--compile", action="store_true", help="serve compiled (TorchInductor) on CPU: the predictors and "
                    "the miner process with --neuron.compile (the floor of --compare-model too)")
    ap.add_argument("--batch-window-ms", type=float, default=2.0)
    ap.add_argument("--decode-workers", type=int, default=0, help="Predictor decode threads (0: the event loop's pool)")
    ap.add_argument("--timeout", type=float, default=30.0, help="per-request timeout through the axon (s)")
    ap.add_argument("--json", default=None, help="output (default benchmarks/results/serve_bench_<device>.json)")
    # internal: serving process for the axon parts
    ap.add_argument("--serve", choices=("baseline", "instant"), help=argparse.SUPPRESS)
    ap.add_argument("--root", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    if args.serve:
        return serve_main(args)

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda but torch sees no CUDA device")
    tmp = Path(tempfile.mkdtemp(prefix="bitmind-serve-bench-"))
    try:  # the untrained stand-in model and the local chain live here: leave nothing behind
        return bench(args, device, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def bench(args, device: torch.device, tmp: Path) -> int:
    """The whole measurement (floor, in-process predictor, axon parts), its JSON written;
    every temporary file goes under ``tmp``."""
    client_counts = [int(c) for c in args.clients.split(",") if c.strip()]
    base_requests = args.baseline_requests or max(8, args.requests // 2)
    with single_threaded():  # no torch work with a thread team in this (main) thread: see measure_floor
        model, note = resolve_model(args.model, tmp)
        compare = None
        if args.compare_model:
            compare, cnote = resolve_model(args.compare_model, tmp)
            if cnote:
                sys.exit(f"--compare-model {args.compare_model}: no such file")
    payloads, data_note = make_challenges(args.data, 64)
    max_batch = args.max_batch or auto_max_batch(device)  # 0: the miner's auto choice

    res: dict = {
        "device": str(device), "model": str(model), "note": note, "challenges": data_note,
        "payload_b64_chars_p50": int(statistics.median(len(p) for p in payloads)),
        "machine": {"cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
                    "python": platform.python_version(), "torch": torch.__version__,
                    "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
                    "loadavg_start": loadavg()},
        "settings": {"requests": args.requests, "baseline_requests": base_requests, "clients": client_counts,
                     "torch_threads": torch.get_num_threads(), "max_batch": max_batch,
                     "batch_window_ms": args.batch_window_ms, "decode_workers": args.decode_workers or None,
                     "compile": args.compile},
    }
    predictor = Predictor(str(model), device=device, max_batch=max_batch, batch_window_ms=args.batch_window_ms,
                          decode_workers=args.decode_workers or None, workers=args.workers, compile=args.compile)
    res["settings"]["workers"] = predictor.batcher.workers
    res["model_sha256"] = predictor.status()["sha256"]
    res["model_parameters"] = sum(p.numel() for p in predictor.current.model.parameters())

    print(f"model {model} ({res['model_parameters']} parameters) on {device}; {data_note}", flush=True)
    print("floor: decode + transform + forward, one image at a time", flush=True)
    if compare:
        other = Predictor(str(compare), device=device, max_batch=max_batch, batch_window_ms=args.batch_window_ms,
                          decode_workers=args.decode_workers or None, workers=args.workers, compile=args.compile)
        print(f"  in {args.floor_rounds} rounds alternating with --compare-model {compare} "
              f"({sum(p.numel() for p in other.current.model.parameters())} parameters)", flush=True)
        res["floor"], cfloor = in_thread(measure_floors_paired, predictor, other, payloads, args.requests,
                                         args.floor_rounds)
        res["compare"] = {"model": str(compare), "model_sha256": other.status()["sha256"],
                          "model_parameters": sum(p.numel() for p in other.current.model.parameters()),
                          "rounds": args.floor_rounds, "max_ratio": args.compare_max_ratio, "floor": cfloor,
                          "compiled": other.status()["compiled"],
                          "floor_p50_ratio": ratio(res["floor"]["total"]["p50_ms"], cfloor["total"]["p50_ms"])}
        other.close()
    else:
        res["floor"] = in_thread(measure_floor, predictor, payloads, args.requests)
    for name, f in (("", res["floor"]), ("compare ", (res.get("compare") or {}).get("floor"))):
        if f:
            print(f"    {name}p50 {f['total']['p50_ms']} ms (decode {f['decode_p50_ms']}, transform "
                  f"{f['transform_p50_ms']}, forward {f['forward_p50_ms']}); rounds {f.get('rounds_p50_ms')}; "
                  f"batched forward ms/image {f['batched_forward_ms_per_image']}", flush=True)
    if not args.no_inproc:
        print("predictor in process (decode thread + micro-batching worker):", flush=True)
        res["predictor"] = drive_inproc(predictor.predict_b64_async, payloads, client_counts, args.requests)
    res["predictor_status"] = {k: v for k, v in predictor.status().items() if k != "loaded_at"}
    predictor.close()
    if not args.no_baseline and not args.no_inproc:
        print("baseline in process (rebuild + torch.load per request, blocking the event loop):", flush=True)
        res["baseline_inproc"] = drive_inproc(BaselinePredictor(model, device).predict_b64_async, payloads,
                                              client_counts, base_requests)

    if not args.no_axon:
        try:
            import bittensor  # noqa: F401
        except ImportError:
            print("bittensor is not installed: skipping the axon parts", flush=True)
            args.no_axon = True
    if not args.no_axon:
        res["axon"] = run_axon_parts(args, model, payloads, client_counts, base_requests, tmp)

    res["machine"]["loadavg_end"] = loadavg()
    res["targets"] = targets(res)
    print_table(res)
    out = Path(args.json or REPO_ROOT / "benchmarks" / "results" / f"serve_bench_{device.type}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1) + "\n")
    print(f"\nwrote {out}")
    return 0


def run_axon_parts(args, model: Path, payloads: list[str], client_counts: list[int], base_requests: int,
                   tmp: Path) -> dict:
    from bitmind import local_chain

    root = tmp / "chain"
    chain, wallets = local_chain.local_setup(root, NETUID, miners=("miner",), validators=("validator",),
                                             block_time=0)
    hotkey, validator = wallets["miner"].hotkey.ss58_address, wallets["validator"]
    env = {"OMP_NUM_THREADS": str(args.torch_threads)} if args.torch_threads else {}
    flags = ["--neuron.max_batch", str(args.max_batch), "--neuron.batch_window_ms", str(args.batch_window_ms),
             *(["--neuron.compile"] if args.compile else [])]
    out: dict = {}
    plan = [("instant", "empty", True), ("instant", "instant", False), ("miner", "miner", False)]
    if not args.no_baseline:
        plan.append(("baseline", "baseline", False))
    servers: dict[str, Server] = {}
    try:
        for kind, name, empty in plan:
            if kind not in servers:
                for s in servers.values():  # one server at a time: they would share the cores
                    s.stop()
                servers = {kind: Server(kind, root, model, args.device, env, flags)}
                axon = servers[kind].wait(chain, hotkey)
            what = {"empty": "axon, empty synapse, forward returns at once",
                    "instant": "axon, full challenge payload, forward returns at once",
                    "miner": "the miner process (neurons/miner.py --mock) through the axon",
                    "baseline": "the original design behind the axon"}[name]
            print(f"{what}:", flush=True)
            n = base_requests if name == "baseline" else args.requests
            out[name] = drive_axon(servers[kind], axon, validator, payloads, client_counts, n, args.timeout, empty)
    finally:
        for s in servers.values():
            s.stop()
    return out


if __name__ == "__main__":
    sys.exit(main())
