#!/usr/bin/env python3
"""Where does a LOGO sweep's training step spend its time on the device, without the loader?

Why: on an H200 the sweep's data stream alone delivers ~2700-3200 images/s with 14 workers
(``benchmarks/loader_speed.py``), yet a LOGO sweep (``bitmind.training.sweep.run_sweep``, 7
models sharing the stream) trains at ~740 images/s: ~11 s per epoch of 32 batches of 256,
~340 ms per batch. The models take that time, not the data. Each batch is prepared once
(``prepare_batch``) and given to every variant's ``train_batch``: ``select`` keeps the rows
of the variant's training subset (fold variants leave out a held-out generator family, so
every step has a different batch size), ``crop`` takes one random 96 px patch per image,
``step`` runs forward, backward and Adam under bf16 autocast. The spec turns cuDNN
autotuning off (``"cudnn_benchmark": false``) because with it on every new batch size from
``select`` autotuned again (280 s in one epoch). This script times that step on synthetic
batches to say where the ~340 ms go: the models' arithmetic, the variable shapes, the
precision, or the Python host issuing the work (launches and the syncs it waits on).

Answer on the H200 (fifteenth session, ``benchmarks/results/step_speed_cuda.json``, after the
step lost its device syncs): 7 models take 201.6 ms per batch (28.8 ms each; one alone 29.4),
and the sweep run just before it on the same machine took 6.0 s per epoch (187 ms per batch,
against 11.2 s before the syncs went and the loader built batches in parts): a sweep now runs
at the speed of its step. The host issues work for as long as the batch takes (199.5 of 201.6
ms) while kernels are busy 160.5 ms: launch-bound, about a fifth of the GPU idle. Batch norm
(channels-last, forward and backward) is about half of the kernel time, convolutions a
quarter, Adam ~2.5 ms per model step. Autotuning on: 1.11x; fixed shapes with it: 1.08x;
fp32: 0.84x. Where more could come from: fewer launches (fused Adam, ``torch.compile``, which
would also fuse the batch norms' memory-bound passes), autotuning with fewer distinct shapes.
Measured in the sixteenth session, each alone against the spec's step in the same run
(``step_speed_cuda_tuned.json``, ``step_speed_cuda_compile.json``): ``fused_adam`` 1.14x and
1.06x (two runs), ``bucketed`` 1.15x, ``compile`` 1.18x (51 s to compile); ``--tune_out``
turned on the first two for that session's LOGO run (5.6 s per epoch against 6.0 s).

What it builds, as ``generalisation.py train`` and ``run_sweep`` do: the spec's ``base`` (a
LOGO spec is turned into its sweep spec first, ``logo_run_spec``: the data roots decide the
folds, so pass the sweep's roots) with the command line's overrides, its checkpoints in a
temporary folder (each ``_Variant`` makes its run folder and a TensorBoard writer: nothing is
written in the repository); ``prepare_device``, ``resolve_amp`` and one ``_Variant`` per
variant (``spec.variant_config``, ``spec.variant_extras``), ``begin_epoch(0)``. No loader,
no data read: the batches are random uint8 images (``--batch_size`` x 3 x ``--image_size``^2,
pinned on CUDA as the sweep's loader pins them), half labelled fake, with random item keys
in ``[0, --n_items)``; a variant that leaves sources out (``exclude_sources``/
``exclude_roots``) or trains on a fraction gets a random mask over the keys keeping
``--keep`` of them, so its ``select`` gives a batch of varying size as in a sweep; the
everything model gets none. Each step is ``prepare_batch`` then every variant's
``train_batch``, as ``train_one_epoch`` does.

Settings (``--settings``; by default those that apply to the device):

* ``spec``: as the spec says (cuDNN autotuning as ``base.cudnn_benchmark``);
* ``cudnn_benchmark``: autotuning on (CUDA only): what it costs with the varying shapes;
* ``fixed_shapes``: every variant trains on the whole batch (no masks), autotuning on
  (CUDA): the cost of ``select``'s shapes, an upper bound of what fixed shapes could give;
* ``bucketed``: autotuning on, each fold's share cut to a multiple of 8 rows
  (``TrainConfig.share_multiple``, CUDA): what few shapes give back of ``fixed_shapes``;
* ``fp32``: autocast off, otherwise as ``spec`` (CUDA only: a CPU already runs fp32);
* ``one_model``: the first variant alone: the cost of one model's step;
* ``fused_adam``: ``TrainConfig.fused_adam`` (CUDA): one optimiser kernel per step;
* ``nchw``: models and batches not channels-last (CUDA): batch norm, half the kernel time
  in the fifteenth session, runs other kernels;
* ``compile``: ``TrainConfig.compile`` (CUDA; at least 15 warm-up batches, which compile):
  fused kernels and fewer launches, the batch sizes from ``select`` made dynamic on the way.

Each builds fresh variants (same seeds), runs ``--warmup`` batches (default 5, 10 where
autotuning is on) and ``--steps`` timed batches, giving: ms per batch (all variants, wall
from a synchronize before to one after), ms per batch per variant, images/s of the shared
stream, and the host ms per batch: how long the Python loop took to issue the work, before
the final synchronize. Host ms close to the wall ms means the host is the limit (kernel
launches, syncs inside the step: the GPU waits on Python); host ms well below it means the
GPU is the limit; but a step that syncs inside (a boolean-mask index on the device, a copy
from pageable host memory) keeps the host from running ahead whatever the GPU does, so set
the profile's kernel time per batch (``--profile``) against the wall too. Then ``--split_steps`` batches with a synchronize after each stage give
the split: ``prepare_batch``, ``select``, ``crop``, ``step`` (summed over the variants, and
per variant), and each variant's mean rows per step. ``--profile`` adds a ``torch.profiler``
run of 3 batches of ``spec`` (top 15 ops by self CUDA time, self CPU time on a CPU).
Writes ``benchmarks/results/step_speed_<device>.json`` (``--json``) and prints a table.
``--tune_out PATH`` also writes the spec with the options of the settings that measured at
least ``--tune_min_gain`` faster turned on (``fused_adam``; ``bucketed``: autotuning and
``share_multiple``; ``compile``), one by one measured: the spec to run next on that machine.

    D=../shared/data
    python benchmarks/step_speed.py --spec base_miner/NPR/sweeps/logo_fixed_s0_78.json \\
        --data $D/sn34-mini $D/sn34-wide /tmp/w/aligned --challenge_data $D/sn34-validator --profile
    python benchmarks/step_speed.py --spec base_miner/NPR/sweeps/logo_fixed_s0_78.json \\
        --data $D/sn34-mini $D/sn34-wide --challenge_data $D/sn34-validator --device cpu \\
        --batch_size 8 --image_size 128 --steps 2 --warmup 1 --variants 2    # a quick look on a CPU
"""
from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import logging
import tempfile
import time
from pathlib import Path

import torch

from bitmind.common import machine_info, resolve_amp
from bitmind.training.logo import spec_with_overrides
from bitmind.image_transforms import HISTORY_OUTPUTS
from bitmind.training.loop import HISTORY_KEY, prepare_batch
from bitmind.training.sweep import SweepSpec, _Variant
from bitmind.training.trainer import prepare_device, seed_everything

RESULTS = Path(__file__).resolve().parent / "results"
SETTINGS = ("spec", "cudnn_benchmark", "fixed_shapes", "bucketed", "fp32", "one_model", "fused_adam", "nchw", "compile")
CUDA_ONLY = ("cudnn_benchmark", "bucketed", "fp32", "fused_adam", "nchw", "compile")
#: ``bucketed``: the folds' shares cut to multiples of this (TrainConfig.share_multiple)
BUCKET = 8
#: what a setting changes in the spec's ``base`` (TrainConfig options); the settings that
#: change the learners this way are also the ones ``--tune_out`` can turn on (``TUNABLE``)
BASE_CHANGES = {"cudnn_benchmark": {"cudnn_benchmark": True}, "fixed_shapes": {"cudnn_benchmark": True},
                "bucketed": {"cudnn_benchmark": True, "share_multiple": BUCKET}, "nchw": {"channels_last": False},
                "fused_adam": {"fused_adam": True}, "compile": {"compile": True}}
#: warm-up batches where the first ones also compile (variable batch sizes recompile once more)
COMPILE_WARMUP = 15
PROFILE_BATCHES = 3

logger = logging.getLogger("step_speed")


# ---------------------------------------------------------------------------- the sweep
def sweep_base(args, checkpoints_dir: str) -> tuple:
    """(the sweep's base TrainConfig, checked; the SweepSpec) from ``--spec`` with the
    command line's overrides and its checkpoints under ``checkpoints_dir``, as
    ``generalisation.py train`` builds it (a LOGO spec) or ``bitmind.training.sweep`` reads it
    (a sweep spec, with ``variants``); as ``benchmarks/loader_speed.py`` does."""
    raw = json.loads(Path(args.spec).read_text())
    overrides = {k: getattr(args, k) for k in ("data", "challenge_data", "train_data", "batch_size")}
    overrides.update(device=args.device, checkpoints_dir=checkpoints_dir)
    raw = spec_with_overrides(raw, "step_speed", seed=args.train_seed, **overrides)
    spec = SweepSpec.from_dict(raw)
    return spec.checked_base(), spec


def synthetic_masks(spec: SweepSpec, names: list[str], n_items: int, keep: float, seed: int) -> dict:
    """A random boolean mask over ``n_items`` keys keeping ``keep`` of them for each variant
    that trains on a subset (held-out sources or roots, a training fraction); None for the
    others (the everything model). Seeded: every setting sees the same masks."""
    masks = {}
    for i, name in enumerate(names):
        ex = spec.variant_extras(name)
        if ex["exclude_sources"] or ex["exclude_roots"] or ex["train_fraction"] < 1.0:
            frac = keep * ex["train_fraction"]
            masks[name] = torch.rand(n_items, generator=torch.Generator().manual_seed(seed + 1000 + i)) < frac
        else:
            masks[name] = None
    return masks


#: Auxiliary classes of the synthetic items (an ``aux_weight`` variant's head): as many as
#: the pools give by family (``bitmind.data.families.aux_classes``: real and 7 fake families;
#: ``--aux_by source`` gives about 16, a few more rows of one linear layer, which the step's
#: time does not feel).
SYNTHETIC_AUX_CLASSES = 8


def synthetic_aux(n_items: int, seed: int) -> tuple[list[str], list[int]]:
    """Class names and a random class for every item key, for variants with ``aux_weight``."""
    labels = torch.randint(0, SYNTHETIC_AUX_CLASSES, (n_items,), generator=torch.Generator().manual_seed(seed + 77))
    return ["real", *(f"family{i}" for i in range(1, SYNTHETIC_AUX_CLASSES))], labels.tolist()


#: Real kinds the synthetic content labels are drawn from (``synthetic_content``): about the pools'.
SYNTHETIC_REAL_KINDS = 11


def synthetic_content(n_items: int, seed: int) -> tuple[list[str], list[int]]:
    """Kind names and, for every item key, a random real kind or -1 (generated, about half), for
    variants with ``adv_weight``: its step then runs the content adversary, as in a sweep."""
    gen = torch.Generator().manual_seed(seed + 78)
    kinds = torch.randint(0, SYNTHETIC_REAL_KINDS, (n_items,), generator=gen)
    fake = torch.rand(n_items, generator=gen) < 0.5
    return [f"real/kind{i}" for i in range(SYNTHETIC_REAL_KINDS)], torch.where(fake, -1, kinds).tolist()


def build_variants(spec: SweepSpec, names: list[str], masks: dict, device: torch.device, amp_dtype,
                   aux: tuple[list[str], list[int]] | None = None,
                   content: tuple[list[str], list[int]] | None = None) -> list[_Variant]:
    """The sweep's models, as ``run_sweep`` builds them (fresh weights from each variant's seed;
    with ``aux``, a head on every variant with ``aux_weight``; with ``content``, an adversary on
    every variant with ``adv_weight``)."""
    out = []
    for name in names:
        v = _Variant(name, spec.variant_config(name), spec.variant_extras(name), device, amp_dtype,
                     mask=masks.get(name), training_images=0, aux=aux, content=content)
        v.begin_epoch(0)
        out.append(v)
    return out


def free(variants: list[_Variant], device: torch.device) -> None:
    for v in variants:
        v.writer.close()
    variants.clear()
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# ---------------------------------------------------------------------------- batches
class Batches:
    """Synthetic loader batches: ``distinct`` uint8 image tensors (B, 3, S, S) cycled (pinned
    on CUDA, as the sweep's loader pins), half-fake labels, and fresh item keys per step from
    a seeded stream, so step ``i`` gives the same batch in every setting."""

    def __init__(self, batch_size: int, image_size: int, n_items: int, seed: int, distinct: int, pin: bool):
        g = torch.Generator().manual_seed(seed)
        self.xs = [torch.randint(0, 256, (batch_size, 3, image_size, image_size), dtype=torch.uint8, generator=g)
                   for _ in range(max(distinct, 1))]
        y = torch.zeros(batch_size)
        y[: batch_size // 2] = 1.0
        self.y = y[torch.randperm(batch_size, generator=g)]
        if pin:
            self.xs, self.y = [x.pin_memory() for x in self.xs], self.y.pin_memory()
        self.batch_size, self.n_items, self.seed = batch_size, n_items, seed

    def __call__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        k = torch.randint(0, self.n_items, (self.batch_size,), generator=torch.Generator().manual_seed(self.seed * 7919 + i))
        return self.xs[i % len(self.xs)], self.y, k


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def history_of(variants: list[_Variant], k: torch.Tensor) -> torch.Tensor | None:
    """Made-up processing-history targets for a batch's keys (CPU, as the loader gives them) when a
    variant trains a processing-history head (``history_weight``), so its step is timed with its
    term; None otherwise, as a sweep without the head gets none."""
    if not any(v.history_names for v in variants):
        return None
    return (k[:, None] % 7).float().div(7).expand(-1, len(HISTORY_OUTPUTS)).contiguous()


def train_step(variants: list[_Variant], batch, device: torch.device, channels_last: bool) -> None:
    """One shared batch, as ``train_one_epoch`` gives it to its learners."""
    x, y, k = batch
    x, y = prepare_batch(x, y, device, channels_last)
    history = history_of(variants, k)
    ctx = {HISTORY_KEY: history} if history is not None else {}
    for v in variants:
        v.train_batch(x, y, k, ctx)


# ---------------------------------------------------------------------------- timings
def time_steps(variants, batches: Batches, device, channels_last: bool, start: int, steps: int) -> dict:
    """Wall and host ms per batch of ``steps`` batches from step ``start`` (no syncs of ours in between)."""
    _sync(device)
    t0 = time.perf_counter()
    for i in range(start, start + steps):
        train_step(variants, batches(i), device, channels_last)
    host_s = time.perf_counter() - t0
    _sync(device)
    wall_s = time.perf_counter() - t0
    ms = wall_s * 1000.0 / steps
    return {"ms_per_batch": ms, "ms_per_batch_per_variant": ms / len(variants),
            "images_per_second": batches.batch_size / (wall_s / steps),
            "host_ms_per_batch": host_s * 1000.0 / steps, "host_share": host_s / wall_s if wall_s > 0 else None}


def time_split(variants, batches: Batches, device, channels_last: bool, start: int, steps: int) -> dict:
    """Mean ms per batch of each stage with a synchronize after each (slower than unsplit:
    the host no longer runs ahead), in total and per variant, and each variant's mean rows."""
    stages = ("prepare_batch", "select", "crop", "step")
    total = dict.fromkeys(stages, 0.0)
    per = {v.name: {"select": 0.0, "crop": 0.0, "step": 0.0, "rows": 0, "skipped": 0} for v in variants}

    def clock(t: float) -> float:
        _sync(device)
        return (time.perf_counter() - t) * 1000.0

    for i in range(start, start + steps):
        x, y, k = batches(i)
        history = history_of(variants, k)
        _sync(device)
        t = time.perf_counter()
        x, y = prepare_batch(x, y, device, channels_last)
        total["prepare_batch"] += clock(t)
        for v in variants:
            p = per[v.name]
            t = time.perf_counter()
            part = v.select(x, y, k, None, history)
            p["select"] += clock(t)
            if part is None:
                p["skipped"] += 1
                continue
            p["rows"] += len(part[1])
            t = time.perf_counter()
            xv = v.crop(part[0], part[3])
            p["crop"] += clock(t)
            t = time.perf_counter()
            v.step(xv, part[1], target=v.target(part[1], part[2]), aux=v.aux_for(part[3], xv.device),
                   history=v.history_for(part[4], xv.device), content=v.content_for(part[3], xv.device))
            v.remember(xv)
            p["step"] += clock(t)
    for p in per.values():
        for s in ("select", "crop", "step"):
            p[s] /= steps
            total[s] += p[s]
        p["rows"] /= steps
    total["prepare_batch"] /= steps
    return {"steps": steps, "ms": total, "ms_sum": sum(total.values()), "per_variant": per}


def profile_steps(variants, batches: Batches, device, channels_last: bool, start: int, rows: int = 15) -> dict:
    """Top ``rows`` ops of ``PROFILE_BATCHES`` batches by self CUDA time (self CPU time on a CPU)."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    _sync(device)
    with profile(activities=acts) as prof:
        for i in range(start, start + PROFILE_BATCHES):
            train_step(variants, batches(i), device, channels_last)
        _sync(device)
    ka = prof.key_averages()
    sort = "self_cpu_time_total"
    if device.type == "cuda":
        sort = "self_device_time_total" if hasattr(ka[0], "self_device_time_total") else "self_cuda_time_total"
    table = ka.table(sort_by=sort, row_limit=rows)
    top = sorted(ka, key=lambda e: getattr(e, sort, 0.0), reverse=True)[:rows]
    ops = [{"op": e.key, "calls": e.count, f"{sort}_ms": getattr(e, sort, 0.0) / 1000.0,
            "self_cpu_time_total_ms": e.self_cpu_time_total / 1000.0} for e in top]
    res = {"batches": PROFILE_BATCHES, "sort_by": sort, "top": ops, "table": table}
    if device.type == "cuda":  # the device's busy time per batch (all kernels' self time), to set against the wall
        from torch.autograd import DeviceType  # kernels only (their ops' self device time counts them again)

        kernels = [e for e in ka if getattr(e, "device_type", None) == DeviceType.CUDA and not getattr(e, "is_user_annotation", False)]
        res["device_ms_per_batch"] = sum(getattr(e, sort, 0.0) for e in kernels) / 1000.0 / PROFILE_BATCHES
    return res


def setting_base(setting: str, base):
    """``base`` as ``setting`` runs it (``BASE_CHANGES``)."""
    return dataclasses.replace(base, **BASE_CHANGES.get(setting, {}))


def run_setting(setting: str, spec: SweepSpec, names: list[str], masks: dict, base, device, batches: Batches,
                warmup: int, steps: int, split_steps: int) -> dict:
    """Fresh variants for ``setting``, ``warmup`` batches, ``steps`` timed, ``split_steps`` split."""
    spec = dataclasses.replace(spec, base=setting_base(setting, spec.base))  # the learners are built from it
    bench = spec.base.cudnn_benchmark
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = bench
    amp_dtype = None if setting == "fp32" else resolve_amp(base.amp, device)
    names = names[:1] if setting == "one_model" else names
    masks = {} if setting == "fixed_shapes" else masks
    if setting == "compile":
        warmup = max(warmup, COMPILE_WARMUP)
    channels_last = spec.base.channels_last
    seed_everything(base.seed)
    variants = build_variants(spec, names, masks, device, amp_dtype, aux=synthetic_aux(batches.n_items, base.seed),
                              content=synthetic_content(batches.n_items, base.seed))
    t = time.perf_counter()
    for i in range(warmup):
        train_step(variants, batches(i), device, channels_last)
    _sync(device)
    warmup_s = time.perf_counter() - t
    res = time_steps(variants, batches, device, channels_last, warmup, steps)
    res.update(variants=len(variants), warmup=warmup, steps=steps, warmup_s=warmup_s,
               cudnn_benchmark=bool(bench and device.type == "cuda"), amp=str(amp_dtype).replace("torch.", "") if amp_dtype else "none",
               masked_variants=sum(masks.get(n) is not None for n in names))
    res["channels_last"], res["compile"], res["fused_adam"] = channels_last, spec.base.compile, spec.base.fused_adam
    res["share_multiple"] = spec.base.share_multiple
    res["split"] = time_split(variants, batches, device, channels_last, warmup + steps, split_steps) if split_steps else None
    res["_variants"] = variants  # kept for --profile; popped by main
    return res


# ---------------------------------------------------------------------------- report
def verdict(settings: dict, device: torch.device, profile: dict | None = None) -> str:
    """A line from the numbers: the fastest setting that trains every model against ``spec``,
    the per-model cost against one model alone, and (CUDA) whether ``spec`` is host- or device-bound."""
    parts = []
    sp = settings.get("spec")
    full = {k: r for k, r in settings.items() if k != "one_model"}
    if full:
        best = min(full, key=lambda k: full[k]["ms_per_batch"])
        r = full[best]
        line = f"fastest with every model: {best} ({r['ms_per_batch']:.1f} ms/batch, {r['images_per_second']:.0f} images/s"
        if sp is not None and best != "spec":
            line += f", {sp['ms_per_batch'] / r['ms_per_batch']:.2f}x spec's {sp['ms_per_batch']:.1f} ms"
        parts.append(line + ")")
    one = settings.get("one_model")
    if sp is not None and one is not None and sp["variants"] > 1:
        parts.append(f"spec's {sp['variants']} models take {sp['ms_per_batch_per_variant']:.1f} ms each per batch, "
                     f"one alone {one['ms_per_batch']:.1f} ms ({sp['ms_per_batch_per_variant'] / one['ms_per_batch']:.2f}x)")
    if sp is not None and sp["host_share"] is not None and device.type == "cuda":
        # host close to wall: the loop cannot run ahead, it launches slowly or waits on syncs inside the step;
        # the profile's device time says which (kernels busy most of the wall: the device is the limit after all)
        line = f"spec: host {sp['host_ms_per_batch']:.1f} of {sp['ms_per_batch']:.1f} ms per batch"
        line += " (the loop does not run ahead: launches or syncs in the step)" if sp["host_share"] > 0.8 else " (the device is the limit)"
        if profile and profile.get("device_ms_per_batch"):
            line += f", kernels busy {profile['device_ms_per_batch']:.1f} ms per batch in the profile"
        parts.append(line)
    return "; ".join(parts)


#: what each tunable setting changes in a spec's ``base`` (the others only measure)
TUNABLE = {name: BASE_CHANGES[name] for name in ("fused_adam", "bucketed", "compile")}


def tuned_spec(raw: dict, settings: dict, min_gain: float) -> tuple[dict, dict]:
    """``raw`` (the spec file's JSON) with the base options of every tunable setting that
    measured at least ``min_gain`` times faster than ``spec`` turned on, and what was
    decided (setting -> its measured ratio and whether it was taken). The gains were
    measured one by one: together they are not measured, and the run's epoch times say
    what they gave. Options that change what is trained on (``share_multiple`` drops a
    fold's last few rows per batch) are named in the note the spec carries."""
    sp = settings.get("spec")
    if sp is None:
        raise ValueError("tuning needs the 'spec' setting measured as the reference")
    out, decided = json.loads(json.dumps(raw)), {}
    for name, change in TUNABLE.items():
        r = settings.get(name)
        if r is None:
            continue
        gain = sp["ms_per_batch"] / r["ms_per_batch"]
        take = gain >= min_gain
        decided[name] = {"gain": round(gain, 3), "taken": take, "options": change}
        if take:
            out.setdefault("base", {}).update(change)
    taken = [f"{k} ({v['gain']:.2f}x)" for k, v in decided.items() if v["taken"]]
    out["_tuned"] = (f"benchmarks/step_speed.py turned on {', '.join(taken) if taken else 'nothing'} "
                     f"(each measured alone against the spec's step, at least {min_gain:.2f}x to be taken)")
    return out, decided


def print_table(res: dict) -> None:
    m, c = res["machine"], res["config"]
    print(f"\n{m['device_name']} ({m['cpu_count']} CPUs, torch {m['torch']}); {c['variants']} of {c['variants_in_spec']} "
          f"variants, batch {c['batch_size']} of {c['image_size']} px, keep {c['keep']}")
    print(f"{'setting':<16} {'models':>6} {'ms/batch':>9} {'ms/model':>9} {'images/s':>9} {'host ms':>8} "
          f"{'| split ms: prep':>16} {'select':>7} {'crop':>7} {'step':>8}")
    for name, r in res["settings"].items():
        s = r["split"]["ms"] if r["split"] else None
        split = (f"{s['prepare_batch']:16.1f} {s['select']:7.1f} {s['crop']:7.1f} {s['step']:8.1f}" if s else f"{'-':>16}")
        print(f"{name:<16} {r['variants']:>6} {r['ms_per_batch']:9.1f} {r['ms_per_batch_per_variant']:9.1f} "
              f"{r['images_per_second']:9.0f} {r['host_ms_per_batch']:8.1f} {split}")
    sp = res["settings"].get("spec")
    if sp and sp["split"]:
        print("\nspec, per variant (split pass): " + ", ".join(
            f"{n} {p['step']:.1f} ms step / {p['rows']:.0f} rows" for n, p in sp["split"]["per_variant"].items()))
    if res.get("profile"):
        print(f"\nprofile of {res['profile']['batches']} batches of spec, by {res['profile']['sort_by']}:")
        print(res["profile"]["table"])
    print(f"\nverdict: {res['verdict']}")


# ---------------------------------------------------------------------------- main
def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--spec", required=True, help="LOGO or sweep spec JSON (e.g. base_miner/NPR/sweeps/logo_fixed_s0_78.json)")
    p.add_argument("--data", nargs="+", help="crop pools (CLASS/SOURCE/*.jpg), aligned round trips included (overrides base.data)")
    p.add_argument("--challenge_data", nargs="+", help="ready-made validator challenges (sn34-validator)")
    p.add_argument("--train_data", nargs="+", help="extra training-only roots")
    p.add_argument("--train_seed", type=int, default=None, help="overrides base.seed, as generalisation.py train")
    p.add_argument("--batch_size", type=int, default=None, help="overrides base.batch_size (quick looks on a CPU)")
    p.add_argument("--image_size", type=int, default=256, help="side of the synthetic images (the stream's: 256)")
    p.add_argument("--n_items", type=int, default=8192, help="item keys drawn from [0, n_items)")
    p.add_argument("--keep", type=float, default=0.9, help="share of the keys a subset variant's mask keeps")
    p.add_argument("--variants", type=int, default=None, help="keep only the first N variants of the spec")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--settings", nargs="+", choices=SETTINGS, default=None, help="default: all that apply to the device")
    p.add_argument("--warmup", type=int, default=None, help="batches before timing (default 5; 10 with cuDNN autotuning on)")
    p.add_argument("--steps", type=int, default=20, help="timed batches per setting")
    p.add_argument("--split_steps", type=int, default=5, help="batches of the per-stage split (0: none)")
    p.add_argument("--distinct", type=int, default=4, help="distinct synthetic image tensors, cycled")
    p.add_argument("--profile", action="store_true", help=f"torch.profiler over {PROFILE_BATCHES} batches of the spec setting")
    p.add_argument("--json", default=None, help="default benchmarks/results/step_speed_<device>.json")
    p.add_argument("--tune_out", default=None,
                   help="also write --spec with the options of the settings that measured faster (fused_adam, bucketed, "
                        "compile) turned on: the spec to run next on this machine")
    p.add_argument("--tune_min_gain", type=float, default=1.08, help="a setting is taken from this speed-up over spec on")
    a = p.parse_args(argv)
    if a.steps < 1 or (a.warmup is not None and a.warmup < 0) or a.split_steps < 0:
        p.error("--steps must be at least 1, --warmup and --split_steps at least 0")
    if not 0.0 < a.keep <= 1.0:
        p.error("--keep must be in (0, 1]")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    bench_before = torch.backends.cudnn.benchmark
    with tempfile.TemporaryDirectory(prefix="step_speed_") as tmp:
        base, spec = sweep_base(a, tmp)
        device = prepare_device(base)
        if a.settings is None:
            settings = [s for s in SETTINGS if device.type == "cuda" or s not in CUDA_ONLY]
        else:
            settings = list(dict.fromkeys(a.settings))
            if device.type != "cuda" and set(settings) & set(CUDA_ONLY):
                p.error(f"{sorted(set(settings) & set(CUDA_ONLY))} apply to CUDA only")
        if a.profile and "spec" not in settings:
            settings.insert(0, "spec")
        names = list(spec.variants)[: a.variants] if a.variants else list(spec.variants)
        if not names:
            p.error("--variants must keep at least one variant")
        masks = synthetic_masks(spec, names, a.n_items, a.keep, base.seed)
        batches = Batches(base.batch_size, a.image_size, a.n_items, base.seed, a.distinct, pin=device.type == "cuda")
        res = {
            "machine": machine_info(device),
            "config": {"spec": str(a.spec), "data": list(base.data), "challenge_data": list(base.challenge_data),
                       "train_data": list(base.train_data), "variants_in_spec": len(spec.variants), "variants": len(names),
                       "variant_names": names, "masked": [n for n in names if masks[n] is not None],
                       "batch_size": base.batch_size, "image_size": a.image_size, "n_items": a.n_items, "keep": a.keep,
                       "patch_size": {n: spec.variant_config(n).patch_size for n in names}, "arch": base.arch,
                       "amp": base.amp, "channels_last": base.channels_last, "spec_cudnn_benchmark": base.cudnn_benchmark,
                       "compile": base.compile, "steps": a.steps, "split_steps": a.split_steps, "checkpoints_dir": tmp},
            "settings": {},
        }
        try:
            for s in settings:
                bench = setting_base(s, base).cudnn_benchmark
                warmup = a.warmup if a.warmup is not None else (10 if bench and device.type == "cuda" else 5)
                logger.info("%s: %d + %d batches", s, warmup, a.steps)
                r = run_setting(s, spec, names, masks, base, device, batches, warmup, a.steps, a.split_steps)
                variants = r.pop("_variants")
                if s == "spec" and a.profile:
                    logger.info("profiling %d batches of spec", PROFILE_BATCHES)
                    start = warmup + a.steps + a.split_steps
                    res["profile"] = profile_steps(variants, batches, device, base.channels_last, start)
                free(variants, device)
                res["settings"][s] = r
                logger.info("%s: %.1f ms per batch (host %.1f ms), %.0f images/s", s, r["ms_per_batch"],
                            r["host_ms_per_batch"], r["images_per_second"])
        finally:
            torch.backends.cudnn.benchmark = bench_before
    res["verdict"] = verdict(res["settings"], device, res.get("profile"))
    if a.tune_out:
        tuned, res["tuning"] = tuned_spec(json.loads(Path(a.spec).read_text()), res["settings"], a.tune_min_gain)
        Path(a.tune_out).write_text(json.dumps(tuned, indent=2) + "\n")
        logger.info("wrote %s: %s", a.tune_out, tuned["_tuned"])

    out = Path(a.json) if a.json else RESULTS / f"step_speed_{device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2))
    print_table(res)
    print(f"\nwrote {out}", flush=True)
    return res


if __name__ == "__main__":
    main()
