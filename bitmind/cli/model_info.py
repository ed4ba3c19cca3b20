"""What a model file is, before you serve it.

    python -m bitmind.model_info mining_models/base.pth my_run/model_epoch_best.pth
    python -m bitmind.model_info mining_models/base.pth --json
    python -m bitmind.model_info my_run/model_epoch_best.pth --serving mining_models/base.pth

For each file: its hash and size; the architecture, its config and parameter count (the
network is built and the weights loaded strictly, as stored: an auxiliary head still in the
file is counted, though the miner leaves it behind and serves the detector alone); the eval
transform; the calibration the miner applies (``P(AI) = sigmoid(logit / T + b)``) and the
rule that placed the boundary; how it was trained (data roots, training-only roots, epochs,
patch size and tile shuffle, weight averaging, an auxiliary family head's classes, where it
was fine-tuned from) and its validation figures; for an ensemble, its members. Why:
the miner hot-swaps whatever file lands at its model path, and a checkpoint describes
itself, so an operator can see what is about to be served, and that it loads, first.
A file that does not load, or whose stored calibration the miner would refuse (a
temperature or bias that would answer NaN, invert every decision or give one answer to every
picture: ``bitmind.checkpoint.check_calibration``), is reported with the reason and the exit
status is 1. With ``--serving PATH``, each file is also checked the way a running miner checks
a replacement of PATH (the same network), and a file that could not hot-swap makes the exit
status 1 too; one that swaps in place but serves with other options (``center_crop``,
``flip_mean``, ``pool``) says which.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

from bitmind.checkpoint import CheckpointError, LoadedModel, build_network, check_calibration, load_model
from bitmind.models.npr import has_aux_outputs

#: Training options worth a line (the rest are in ``--json``).
TRAIN_KEYS = ("epochs", "patch_size", "tile_shuffle", "aug_freq_mask_prob", "pair_aligned", "pair_patches", "batch_size", "lr",
              "lr_schedule", "balance", "seed", "swa_start", "aux_weight", "aux_by", "aux_fakes_only", "history_weight", "adv_weight",
              "init_from")
#: Values a training option is not worth a line at: off, and per option its default where that
#: says nothing (a family head's classes say it; a shuffled head has the same class names, so
#: ``aux_by`` shows when not family).
QUIET_VALUES = (None, "", 0)
QUIET_DEFAULTS = {"aux_by": "family"}
#: Validation figures worth a line.
VAL_KEYS = ("n", "balanced_accuracy", "roc_auc", "ap", "real_accuracy", "fake_accuracy")


def describe(path: str | Path, swap=None) -> dict:
    """Everything ``model_info`` reports about one file; ``error`` is set when it does not load.
    ``swap`` (``hot_swap_check``'s function), if given, adds ``hot_swap`` for a file that loads:
    it checks the model loaded here, so ``--serving`` reads and builds each file once."""
    path = Path(path)
    out: dict = {"path": str(path)}
    try:
        lm = load_model(path)
    except (CheckpointError, KeyError, RuntimeError, TypeError, ValueError) as e:
        out["error"] = f"{type(e).__name__}: {e}"
        return out
    try:  # what the miner checks before it serves a file
        check_calibration(lm.meta, path)
    except CheckpointError as e:
        out["error"] = f"the miner would refuse it: {e} (python -m bitmind.calibrate fits it anew)"
        return out
    meta = lm.meta
    cal = (meta.get("metrics") or {}).get("calibration") or {}
    train = meta.get("train_options") or {}
    out.update({
        "sha256": lm.sha256, "bytes": path.stat().st_size,
        "arch": lm.arch, "config": meta.get("config") or {},
        "parameters": sum(p.numel() for p in lm.model.parameters()),
        "transform": meta.get("transform"),
        "temperature": lm.temperature, "logit_bias": lm.logit_bias,
        "calibration": {k: cal.get(k) for k in ("method", "real_target", "split", "regimes", "n",
                                                 "val_real_accuracy_after", "val_fake_accuracy_after") if k in cal},
        "training": {k: train.get(k) for k in TRAIN_KEYS
                     if (train.get(k) not in QUIET_VALUES and train.get(k) != QUIET_DEFAULTS.get(k)) or k == "epochs"},
        "data": [Path(d).name for d in (train.get("data") or [])] + [f"{Path(d).name} (as sent)" for d in (train.get("challenge_data") or [])]
        + [f"{Path(d).name} (training only)" for d in (train.get("train_data") or [])],
        "validation": {k: (meta.get("metrics") or {}).get("val", {}).get(k) for k in VAL_KEYS},
        "best_epoch": (meta.get("metrics") or {}).get("epoch"),
        "aux_classes": list(train.get("aux_classes") or []),
        "history_outputs": list(train.get("history_outputs") or []),
        "adv_classes": list(train.get("adv_classes") or []),
        "aux_head_in_file": has_aux_outputs(meta),
        "description": meta.get("description"),
    })
    if lm.arch == "ensemble":
        out["members"] = [{"file": m.get("file"), "arch": spec.get("arch"), "input": (spec.get("config") or {}).get("input")}
                          for m, spec in zip(meta.get("members") or [], (meta.get("config") or {}).get("members") or [])]
    if swap is not None:
        out["hot_swap"] = swap(lm)
    return out


def as_the_miner_loads(lm: LoadedModel) -> LoadedModel:
    """``lm`` (loaded whole, as ``describe`` counts it) as the miner loads its file,
    ``load_model(..., detector_only=True)``, an auxiliary head of an npr network left behind
    (both by ``bitmind.checkpoint.build_network``, so the two cannot drift apart). Why: the
    swap check compares the detector the miner would serve, and rebuilding it from the
    weights already loaded spares reading and building the file a second time."""
    model, meta = build_network(lm.arch, lm.model.state_dict(), lm.meta, detector_only=True, built=lm.model, path=lm.path)
    if model is lm.model:  # no head: the miner loads the same network
        return lm
    return dataclasses.replace(lm, model=model, meta=meta)


def hot_swap_check(serving: str | Path):
    """A function of a model as ``describe`` loaded it: ``{"over": serving, "ok": bool, "problem":
    str | None, "serve_time_change": str | None}``, the miner's own check
    (``bitmind.miner.reload.swap_problem``, detector-only as it loads), and for a file that swaps
    in place, how its serve-time options differ from the served file's (``serve_time_change``)."""
    from bitmind.checkpoint import too_large
    from bitmind.miner.reload import swap_problem

    try:
        served = load_model(serving, detector_only=True)
    except (CheckpointError, KeyError, RuntimeError, TypeError, ValueError) as e:
        problem = f"the serving file {serving} does not load ({type(e).__name__}: {e})"
        return lambda lm: {"over": str(serving), "ok": False, "problem": problem}

    def check(lm: LoadedModel):
        detector = as_the_miner_loads(lm)
        problem = swap_problem(detector, served)
        if problem is None and lm.path and os.path.isfile(lm.path):  # the miner refuses a file larger than its cap unread
            problem = too_large(str(lm.path), os.path.getsize(lm.path)) or None
        return {"over": str(serving), "ok": problem is None, "problem": problem,
                "serve_time_change": serve_time_change(detector, served) if problem is None else None}
    return check


def serve_time_change(new: LoadedModel, served: LoadedModel) -> str | None:
    """How ``new``'s config differs from the served file's where the weights fit both (the
    options that change no weight: ``center_crop``, ``flip_mean``, ``pool``, ``stem_pool``), in
    words (``center_crop 192 -> none``), or None. Why: such a file hot-swaps in place, and the
    miner only logs that its serve-time config changed; a fine-tune that lost the served file's
    centre crop looked like a plain yes here, yet served whole pictures (slower, and other answers)."""
    old, now = served.meta.get("config") or {}, new.meta.get("config") or {}
    keys = [k for k in dict.fromkeys([*old, *now]) if old.get(k) != now.get(k)]
    if not keys:
        return None
    shown = lambda config, k: "none" if config.get(k) is None else repr(config[k])
    return ", ".join(f"{k} {shown(old, k)} -> {shown(now, k)}" for k in keys)


def _fmt(v) -> str:
    return f"{v:.3g}" if isinstance(v, float) and abs(v) < 0.01 else f"{v:.3f}" if isinstance(v, float) else str(v)


def _share(v) -> str:
    """A stored figure as ``0.123``; ``n/a`` for one that is missing or not a number (a record
    from data of one class has no fake accuracy; a hand-edited one may hold anything)."""
    return f"{v:.3f}" if isinstance(v, (int, float)) and not isinstance(v, bool) else "n/a"


def _fitted_on(cal: dict) -> str:
    """Which pictures the stored calibration's figures are on: the trainer's and
    ``bitmind.calibrate --split val``'s validation split, another split, or (``--split all``,
    no split recorded) every picture it was given."""
    split, n = cal.get("split"), cal.get("n")
    count = f" ({n} pictures)" if isinstance(n, int) and not isinstance(n, bool) else ""
    if split in (None, "", "all"):
        return f"on the pictures it was fitted on{count}, not a held-out split"
    return ("on validation" if split == "val" else f"on the {split} split") + count


def render(info: dict) -> str:
    """``describe``'s dict as a few readable lines."""
    lines = [info["path"]]
    if "error" in info:
        return "\n".join(lines + [f"  does not load: {info['error']}"])
    cfg = ", ".join(f"{k}={v}" for k, v in info["config"].items() if k != "members")
    if "members" in info:
        cfg = f"{len(info['members'])} members, mean logit"
    lines.append(f"  {info['arch']} ({cfg}), {info['parameters']:,} parameters, {info['bytes'] / 1e6:.1f} MB, "
                 f"sha256 {info['sha256'][:16]}")
    t = info.get("transform") or {}
    if t:
        lines.append(f"  input: {t.get('name')} {t.get('size')} px ({', '.join(t.get('steps') or [])})")
    cal = info["calibration"]
    rule = cal.get("method") or ("none stored" if (info["temperature"], info["logit_bias"]) == (1.0, 0.0) else "stored")
    lines.append(f"  P(AI) = sigmoid(logit / {info['temperature']:.3f} {info['logit_bias']:+.3f}): {rule}")
    if "val_real_accuracy_after" in cal:
        lines.append(f"    {_fitted_on(cal)}, calibrated: real photos {_share(cal['val_real_accuracy_after'])} called real, "
                     f"fakes {_share(cal.get('val_fake_accuracy_after'))} caught")
    if any(v is not None for v in info["training"].values()) or info["data"]:
        tr = ", ".join(f"{k} {_fmt(v)}" for k, v in info["training"].items() if v is not None)
        lines.append(f"  trained: {tr}" + (f"; data {', '.join(info['data'])}" if info["data"] else ""))
    where = ("in the file; the first output alone is served" if info.get("aux_head_in_file")
             else "dropped when shipped; the file is the detector alone")
    if info.get("aux_classes"):
        lines.append(f"  trained with an auxiliary head ({where}): {', '.join(info['aux_classes'])}")
    if info.get("history_outputs"):
        lines.append(f"  trained with a processing-history head ({where}): {', '.join(info['history_outputs'])}")
    if info.get("adv_classes"):  # a training-only head: never in the file
        lines.append(f"  trained against a content adversary (weight {_fmt((info['training'] or {}).get('adv_weight'))}, "
                     f"not in the file) naming the real kinds: {', '.join(info['adv_classes'])}")
    val = {k: v for k, v in info["validation"].items() if v is not None}
    if val:
        lines.append("  validation" + (f" (epoch {info['best_epoch']}" if info.get("best_epoch") is not None else " (")
                     + ", before calibration)"
                     + ": " + ", ".join(f"{k} {_fmt(v)}" for k, v in val.items()))
    for m in info.get("members") or []:
        lines.append(f"  member: {m['file']} ({m['arch']}, input {m['input']})")
    if info.get("description"):
        lines.append(f"  about: {info['description']}")
    if info.get("hot_swap"):
        swap = info["hot_swap"]
        change = f"; it answers differently, serve-time options change: {swap['serve_time_change']}" if swap.get("serve_time_change") else ""
        lines.append(f"  hot swap over {swap['over']}: " + (f"yes (same network){change}" if swap["ok"] else f"no: {swap['problem']}"))
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bitmind.model_info", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+", help="model files (.pth or .safetensors)")
    ap.add_argument("--json", action="store_true", help="print one JSON object per file instead (every field)")
    ap.add_argument("--serving", metavar="PATH", help="the file a running miner serves: also say whether each model "
                                                      "can hot-swap over it (same network), as the miner checks")
    args = ap.parse_args(argv)
    swap = hot_swap_check(args.serving) if args.serving else None
    infos = [describe(p, swap) for p in args.models]
    try:
        if args.json:
            print(json.dumps(infos if len(infos) > 1 else infos[0], indent=1), flush=True)
        else:
            print("\n\n".join(render(i) for i in infos), flush=True)
    except BrokenPipeError:  # `model_info ... | head`: the reader has what it wanted
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
    return 1 if any("error" in i or not i.get("hot_swap", {"ok": True})["ok"] for i in infos) else 0


if __name__ == "__main__":
    sys.exit(main())
