#!/usr/bin/env python3
"""How fast does a LOGO sweep's training data stream run, without any model?

Why: the GPU LOGO sweeps (``benchmarks/generalisation.py train`` -> ``bitmind.training.sweep``)
train at only ~600-800 images/s on an H200 host with 16 cores and 14 loader workers, as
fast with 7 models sharing the stream as with 11, so the data side limits them. A CPU
profile of the items (no workers) gave ~2.5 ms per item, ~400 items/s per worker, which
predicts several thousand images/s from 14 workers: the per-item augmentation alone does
not explain it. This script takes the models away and times the stream exactly as a sweep
builds it, to say where the time goes: worker scaling, the main process (collate hand-over,
pinning, the copy to the device), the per-epoch restart of the persistent workers, the
sampler, or the items themselves.

Answer on the H200 (fifteenth session, ``benchmarks/results/loader_speed_cuda.json``): the
stream scales with the workers (896 / 1,795 / 3,225 images/s with 4 / 8 / 14), about four
times what the sweeps train at, so the data does not limit them; the models' steps do
(``benchmarks/step_speed.py``). Each epoch does start with a ~1.1 s wait: a worker builds a
whole batch before the first one arrives.

What it builds, as ``generalisation.py train`` and ``run_sweep`` do: the spec's ``base``
(a LOGO spec is turned into its sweep spec first) with ``--data``/``--challenge_data``/
``--train_data``/``--train_seed`` overrides, ``build_datasets``, ``train_sampler`` (family
sampler with aligned pairs) and the DataLoader of ``run_sweep`` (batch size, sampler,
``drop_last``, ``collate_skip_none``, ``worker_init``, persistent workers, prefetch 4,
pinned memory on CUDA: ``loader_kwargs``). The stream runs epoch after epoch with
``train_ds.set_epoch`` as in the sweep, so timings that cover more than one epoch
(``--batches``, counted in loader batches: parts of a training batch, ``TrainConfig.loader_parts``,
above the loader batches per epoch: 128 for 8192 samples of 256 in 4 parts) include the
stall of each epoch's restart.

Per worker count (``--workers``) and mode, after ``--warmup`` batches, ``--batches`` batches:

* ``loader``: just iterate the loader;
* ``to_device``: also ``bitmind.training.loop.prepare_batch`` (uint8 -> float on the device,
  channels-last) and, on CUDA, ``torch.cuda.synchronize()``: what the training loop does
  before the models see a batch;
* ``unpinned``: ``to_device`` with ``pin_memory`` off (the same as ``to_device`` on a CPU):
  what pinning costs or saves;
* ``busy`` (only with ``--busy_ms``): ``to_device`` then the main thread spins in Python for
  that many ms per batch, as a training step holds the interpreter; if the stream slows
  below both the loader and ``batch_size / busy_ms``, the main process's hand-over (the
  pin-memory thread needs the GIL) is the bottleneck.

Each timing gives images/s, the time to the first batch (worker start), the median and
largest wait for a batch, and CPU use: the main process's (all its threads) and the
workers' (mean busy fraction, from ``/proc``): workers near 1.0 mean the items are the
limit; workers well below 1.0 with a low rate mean they wait on something else.

Before the loaders, in the main process with no workers: the sampler's ms per epoch, and
the mean ms per item of ``train_ds[k]`` for the first ``--items`` sampled indices (epoch 0),
split by the item's augmentation class and by its source, with the read+decode share
(``load_ms``) apart; the ms to collate one batch of them with the main process's torch
threads and with one (a worker's: ``worker_init``); ``torch.get_num_threads()`` of the main
process (``--main_threads`` sets it first); and the machine. On a 2-core box shared with
another job, collating 64 pictures took ~470 ms with 2 torch threads against ~6 ms with
one: intra-op threads that fight other processes for the cores stall; workers run one
thread, the main process (workers 0, the copy to the device) does not.
Writes ``benchmarks/results/loader_speed_<device>.json`` (``--json``) and prints a table.

    python benchmarks/loader_speed.py --spec base_miner/NPR/sweeps/logo_longer_s1.json \\
        --data ../shared/data/sn34-mini ../shared/data/sn34-wide --challenge_data ../shared/data/sn34-validator \\
        --workers 4 14 --batches 40
    python benchmarks/loader_speed.py --spec base_miner/NPR/sweeps/logo_longer_s1.json \\
        --data ../shared/data/sn34-mini ../shared/data/sn34-wide --challenge_data ../shared/data/sn34-validator \\
        --workers 0 2 --batches 5 --batch_size 64 --device cpu      # a quick look on a small CPU box

On a GPU host pass the sweep's roots in its order (its ``logo_spec.json`` records them,
aligned round trips included). Workers 0 is slow (about 400 images/s at best): leave it out
on the GPU host, the per-item timing already gives the single-process figure.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import logging
import os
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import PIL
import torch
from torch.utils.data import DataLoader

from bitmind.common import machine_info
from bitmind.data import collate_skip_none
from bitmind.training.logo import spec_with_overrides
from bitmind.training.loop import prepare_batch
from bitmind.training.sweep import SweepSpec, carries_history, sweep_train_loader
from bitmind.training.trainer import build_datasets, prepare_device, seed_everything, train_sampler

RESULTS = Path(__file__).resolve().parent / "results"
MODES = ("loader", "to_device", "unpinned")

logger = logging.getLogger("loader_speed")


# ---------------------------------------------------------------------------- the sweep's training set
def sweep_base(args) -> tuple:
    """(the sweep's base TrainConfig, checked; the SweepSpec) from ``--spec`` with the
    command line's overrides, as ``generalisation.py train`` builds it (a LOGO spec) or
    ``bitmind.training.sweep`` reads it (a sweep spec, with ``variants``)."""
    raw = json.loads(Path(args.spec).read_text())
    overrides = {k: getattr(args, k) for k in ("data", "challenge_data", "train_data", "batch_size", "samples_per_epoch")}
    raw = spec_with_overrides(raw, "loader_speed", seed=args.train_seed, device=args.device, **overrides)
    spec = SweepSpec.from_dict(raw)
    return spec.checked_base(), spec


def sweep_loader(base, train_ds, device: torch.device) -> DataLoader:
    """The training DataLoader of ``run_sweep`` for ``base`` (its own sampler, as a sweep makes one)."""
    return sweep_train_loader(base, train_ds, train_sampler(base, train_ds), device)


# ---------------------------------------------------------------------------- CPU accounting
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _proc_cpu_s(pid: int) -> float | None:
    """User+system CPU seconds of a process (Linux ``/proc``), None where unreadable."""
    try:
        rest = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(rest[11]) + int(rest[12])) / _TICK
    except (OSError, IndexError, ValueError):
        return None


def _worker_pids(loader: DataLoader) -> list[int]:
    it = getattr(loader, "_iterator", None)
    return [w.pid for w in getattr(it, "_workers", []) or [] if w.pid is not None]


def _workers_cpu_s(pids: list[int]) -> float | None:
    vals = [_proc_cpu_s(p) for p in pids]
    return None if not vals or any(v is None for v in vals) else sum(vals)


def _shutdown(loader: DataLoader) -> None:
    """Stop a loader's persistent workers now (not whenever the garbage collector gets to them)."""
    it = getattr(loader, "_iterator", None)
    if it is not None and hasattr(it, "_shutdown_workers"):
        it._shutdown_workers()
    loader._iterator = None


# ---------------------------------------------------------------------------- timings
def epoch_stream(loader: DataLoader, train_ds, counter: dict):
    """Batches of epoch after epoch, ``set_epoch`` before each as the sweep does; counts epochs."""
    while True:
        train_ds.set_epoch(counter["epoch"])
        n = 0
        for batch in loader:
            n += 1
            if batch is not None:
                yield batch
        if n == 0:
            raise RuntimeError("the loader gave no batch: fewer training items than one batch?")
        counter["epoch"] += 1


def _spin(ms: float) -> None:
    end = time.perf_counter() + ms / 1000.0
    while time.perf_counter() < end:
        pass


def time_stream(loader: DataLoader, train_ds, base, device: torch.device, mode: str, warmup: int, batches: int,
                busy_ms: float = 0.0, counter: dict | None = None) -> dict:
    """Images/s of ``batches`` batches of ``loader`` after ``warmup`` in ``mode``, with waits and CPU use."""
    counter = counter if counter is not None else {"epoch": 0}
    epoch_at_start = counter["epoch"]
    t_make = time.perf_counter()
    stream = epoch_stream(loader, train_ds, counter)
    first_batch_s = None
    waits, images, skipped = [], 0, 0
    t0 = cpu0 = wcpu0 = None
    pids: list[int] = []
    try:
        for i in range(warmup + batches):
            if i == warmup:
                pids = _worker_pids(loader)
                t0, cpu0, wcpu0 = time.perf_counter(), time.process_time(), _workers_cpu_s(pids)
                epoch_timed = counter["epoch"]
            t = time.perf_counter()
            x, y, _k, bad = next(stream)[:4]  # a fifth item: the processing histories (history_weight)
            if mode != "loader":
                x, y = prepare_batch(x, y, device, base.channels_last)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
            if mode == "busy":
                _spin(busy_ms)
            if first_batch_s is None:
                first_batch_s = time.perf_counter() - t_make
            if i >= warmup:
                waits.append((time.perf_counter() - t) * 1000.0)
                images += len(y)
                skipped += int(bad)
        if t0 is None:  # no timed batch
            raise ValueError("--batches must be at least 1")
        seconds = time.perf_counter() - t0
        main_cpu = time.process_time() - cpu0
        wcpu1 = _workers_cpu_s(pids)
    finally:
        stream.close()
    out = {"images": images, "batches": batches, "seconds": seconds, "images_per_second": images / max(seconds, 1e-9),
           "first_batch_s": first_batch_s, "batch_wait_ms": {"median": statistics.median(waits), "max": max(waits)},
           "epochs_crossed": counter["epoch"] - epoch_timed, "started_at_epoch": epoch_at_start, "skipped_items": skipped,
           "main_cpu_per_wall": main_cpu / max(seconds, 1e-9), "workers": loader.num_workers}
    if pids and wcpu0 is not None and wcpu1 is not None:
        out["workers_busy"] = (wcpu1 - wcpu0) / max(seconds, 1e-9) / len(pids)  # mean fraction of a core per worker
    if mode == "busy":
        out["busy_ms"] = busy_ms
        out["ceiling_images_per_second"] = loader.batch_size / (busy_ms / 1000.0)
    return out


def time_items(train_ds, sampler, n: int) -> dict:
    """Mean ms per item of ``train_ds[k]`` (epoch 0) for the first ``n`` sampled indices, by augmentation and source."""
    sampler = copy.deepcopy(sampler)  # the loaders' samplers are their own: this one's draws change nothing
    ks: list[int] = []
    while len(ks) < n:  # the sampler's first draws, over as many epochs' draws as it takes
        draws = list(iter(sampler)) if sampler is not None else torch.randperm(len(train_ds)).tolist()
        if not draws:
            break
        ks += draws[:n - len(ks)]
    train_ds.set_epoch(0)
    rows = []
    for k in ks:
        src, i = train_ds.items[k]
        t = time.perf_counter()
        item = train_ds[k]
        total = time.perf_counter() - t
        t = time.perf_counter()
        src.load(i)  # read + decode alone (the file is in the page cache now)
        load = time.perf_counter() - t
        aug = train_ds.augment_of(k)
        rows.append((type(aug).__name__ if aug is not None else "none", src.source_name(i), total * 1000, load * 1000,
                     item is None))

    def summarise(key: int) -> dict:
        groups = defaultdict(list)
        for r in rows:
            groups[r[key]].append(r)
        return {name: {"n": len(g), "mean_ms": statistics.fmean(r[2] for r in g), "load_ms": statistics.fmean(r[3] for r in g),
                       "unreadable": sum(r[4] for r in g)} for name, g in sorted(groups.items())}

    mean = statistics.fmean(r[2] for r in rows) if rows else 0.0
    return {"n": len(rows), "indices": ks, "mean_ms": mean, "items_per_second": 1000.0 / mean if mean else None,
            "load_ms": statistics.fmean(r[3] for r in rows) if rows else 0.0,
            "by_augment": summarise(0), "by_source": summarise(1)}


def time_collate(train_ds, ks: list[int], batch_size: int, repeats: int = 3) -> dict:
    """ms to collate one batch (``collate_skip_none``: ``torch.stack`` of the items' uint8 CHW
    views) with the main process's torch threads and with one thread, as in a worker
    (``worker_init``): intra-op threads that fight other processes for the cores make this
    copy many times slower."""
    if not ks:
        return {}
    train_ds.set_epoch(0)
    items = [train_ds[k] for k in ks[:batch_size]]
    items = [it for it in items if it is not None]
    if not items:
        return {}
    batch = [items[j % len(items)] for j in range(batch_size)]
    out, threads = {"batch_size": batch_size}, torch.get_num_threads()
    try:
        for label, n in (("main_threads", threads), ("one_thread", 1)):
            torch.set_num_threads(n)
            collate_skip_none(batch)
            t = time.perf_counter()
            for _ in range(repeats):
                collate_skip_none(batch)
            out[f"{label}_ms"] = (time.perf_counter() - t) * 1000.0 / repeats
    finally:
        torch.set_num_threads(threads)
    out["main_threads"] = threads
    return out


def time_sampler(sampler, epochs: int = 3) -> float | None:
    """Mean ms to draw one epoch's indices (on a copy of ``sampler``)."""
    if sampler is None:
        return None
    s = copy.deepcopy(sampler)
    t = time.perf_counter()
    for _ in range(epochs):
        sum(1 for _ in s)
    return (time.perf_counter() - t) * 1000.0 / epochs


def machine(device: torch.device) -> dict:
    """``machine_info`` and what matters to a loader: Pillow, inter-op threads, OMP_NUM_THREADS,
    usable CPUs and the load when it started (a shared box slows workers)."""
    m = machine_info(device)
    m.update(pillow=PIL.__version__, torch_interop_threads=torch.get_num_interop_threads(),
             omp_num_threads_env=os.environ.get("OMP_NUM_THREADS"))
    if hasattr(os, "sched_getaffinity"):
        m["cpus_usable"] = len(os.sched_getaffinity(0))
    if hasattr(os, "getloadavg"):
        m["load_average_at_start"] = list(os.getloadavg())
    return m


# ---------------------------------------------------------------------------- main
def print_table(res: dict) -> None:
    cfg, items = res["config"], res["items"]
    print(f"\n{res['machine']['device_name']} ({res['machine']['cpu_count']} CPUs, main torch threads "
          f"{res['main_torch_threads']}); {cfg['training_images']} training images, batch {cfg['batch_size']}, "
          f"{cfg['batches_per_epoch']} batches per epoch")
    sm = res["sampler_ms_per_epoch"]
    print(f"sampler: {sm:.1f} ms per epoch" if sm is not None else "sampler: none (shuffle)")
    print(f"items (main process, first {items['n']} sampled): {items['mean_ms']:.2f} ms each "
          f"(read+decode {items['load_ms']:.2f} ms) = {items['items_per_second'] or 0:.0f} items/s")
    for name, r in items["by_augment"].items():
        print(f"  {name:<28} n={r['n']:<5} {r['mean_ms']:7.2f} ms  (read+decode {r['load_ms']:.2f} ms)")
    c = res["collate"]
    if c:
        print(f"collate of {c['batch_size']}: {c['main_threads_ms']:.1f} ms with {c['main_threads']} torch threads, "
              f"{c['one_thread_ms']:.1f} ms with one")
    print(f"\n{'workers':>7}  {'mode':<10} {'images/s':>9} {'first(s)':>8} {'wait med/max ms':>16} {'main cpu':>8} "
          f"{'workers busy':>12} {'epochs':>6}")
    for w, modes in res["loaders"].items():
        for mode, r in modes.items():
            busy = f"{r['workers_busy']:.2f}" if "workers_busy" in r else "-"
            print(f"{w:>7}  {mode:<10} {r['images_per_second']:9.0f} {r['first_batch_s']:8.2f} "
                  f"{r['batch_wait_ms']['median']:7.1f}/{r['batch_wait_ms']['max']:<8.1f} {r['main_cpu_per_wall']:8.2f} "
                  f"{busy:>12} {r['epochs_crossed']:>6}")


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--spec", required=True, help="LOGO or sweep spec JSON (e.g. base_miner/NPR/sweeps/logo_longer_s1.json)")
    p.add_argument("--data", nargs="+", help="crop pools (CLASS/SOURCE/*.jpg), aligned round trips included (overrides base.data)")
    p.add_argument("--challenge_data", nargs="+", help="ready-made validator challenges (sn34-validator)")
    p.add_argument("--train_data", nargs="+", help="extra training-only roots")
    p.add_argument("--train_seed", type=int, default=None, help="overrides base.seed, as generalisation.py train")
    p.add_argument("--batch_size", type=int, default=None, help="overrides base.batch_size (quick looks on a CPU)")
    p.add_argument("--samples_per_epoch", type=int, default=None, help="overrides base.samples_per_epoch")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--workers", type=int, nargs="+", default=[4, 14], help="loader worker counts to time")
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=[*MODES, "busy"])
    p.add_argument("--busy_ms", type=float, default=0.0, help="adds the 'busy' mode: the main thread spins this long per batch")
    p.add_argument("--warmup", type=int, default=2, help="batches before each timing")
    p.add_argument("--batches", type=int, default=40, help="timed batches per worker count and mode")
    p.add_argument("--items", type=int, default=300, help="sampled items timed one by one in the main process")
    p.add_argument("--main_threads", type=int, default=None,
                   help="torch.set_num_threads in the main process first (default: leave torch's choice)")
    p.add_argument("--json", default=None, help="default benchmarks/results/loader_speed_<device>.json")
    a = p.parse_args(argv)
    if a.batches < 1 or a.warmup < 0:
        p.error("--batches must be at least 1 and --warmup at least 0")
    modes = list(dict.fromkeys(a.modes + (["busy"] if a.busy_ms > 0 else [])))
    if "busy" in modes and a.busy_ms <= 0:
        p.error("the busy mode needs --busy_ms")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if a.main_threads:
        torch.set_num_threads(a.main_threads)

    base, spec = sweep_base(a)
    device = prepare_device(base)
    seed_everything(base.seed)
    t = time.perf_counter()
    train_ds, _val_ds, _counts = build_datasets(base, history=carries_history(spec.check()))  # as run_sweep builds it
    sampler = train_sampler(base, train_ds)  # pairs the round trips with their photos, as the sweep's does
    build_s = time.perf_counter() - t
    print("training set:\n" + train_ds.summary(), flush=True)
    n_drawn = len(sampler) if sampler is not None else len(train_ds)
    batches_per_epoch = n_drawn // base.batch_size if n_drawn >= base.batch_size else 1
    res = {
        "machine": machine(device),
        "main_torch_threads": torch.get_num_threads(),
        "config": {"spec": str(a.spec), "data": list(base.data), "challenge_data": list(base.challenge_data),
                   "train_data": list(base.train_data), "variants_in_spec": len(spec.variants), "seed": base.seed,
                   "batch_size": base.batch_size, "samples_per_epoch": base.samples_per_epoch, "batches_per_epoch": batches_per_epoch,
                   "loader_parts": base.loader_parts,
                   "training_images": len(train_ds), "balance": base.balance, "pair_aligned": base.pair_aligned,
                   "sampler": type(sampler).__name__ if sampler is not None else None,
                   "uint8_loading": base.uint8_loading, "channels_last": base.channels_last,
                   "pin_memory": base.pin_memory and device.type == "cuda", "prefetch_factor": 4,
                   "warmup": a.warmup, "batches": a.batches, "modes": modes, "build_datasets_s": build_s},
    }
    res["sampler_ms_per_epoch"] = time_sampler(sampler)
    logger.info("timing %d items in the main process", a.items)
    res["items"] = time_items(train_ds, sampler, a.items)
    res["collate"] = time_collate(train_ds, res["items"].pop("indices"), base.batch_size)

    res["loaders"] = {}
    for w in a.workers:
        per, loaders = {}, {}
        for mode in modes:
            pin = base.pin_memory and mode != "unpinned"
            if pin not in loaders:  # one loader per pinning; modes that share it continue its epochs
                cfg = dataclasses.replace(base, workers=w, pin_memory=pin)
                loaders[pin] = (sweep_loader(cfg, train_ds, device), {"epoch": 0})
            loader, counter = loaders[pin]
            logger.info("workers %d, %s: %d + %d batches", w, mode, a.warmup, a.batches)
            per[mode] = time_stream(loader, train_ds, base, device, mode, a.warmup, a.batches, a.busy_ms, counter)
            per[mode]["pin_memory"] = bool(pin and device.type == "cuda")
            per[mode]["loader_batch"] = loader.batch_size  # a part of a training batch (TrainConfig.loader_parts)
            logger.info("workers %d, %s: %.0f images/s", w, mode, per[mode]["images_per_second"])
        for loader, _ in loaders.values():
            _shutdown(loader)
        res["loaders"][str(w)] = per

    out = Path(a.json) if a.json else RESULTS / f"loader_speed_{device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2))
    print_table(res)
    print(f"\nwrote {out}", flush=True)
    return res


if __name__ == "__main__":
    main(sys.argv[1:])
