#!/usr/bin/env python3
"""Training throughput: this trainer vs a naive baseline, same data, one run.

Both runs go through ``bitmind.training.train`` on the same images with the same
augmentation (validator pipeline + JPEG), so the only differences are the speed
settings:

* fast (this trainer's defaults): N loader worker processes (one torch thread each),
  pinned memory, uint8 hand-over scaled on the device, channels-last, bf16 autocast,
  cudnn benchmark;
* naive (the original SN34 script's way): loading in the main process, float tensors,
  fp32, cudnn disabled, no channels-last.

Each run trains ``--epochs`` short epochs of ``--steps`` batches; the first epoch is
warm-up, the figure is the mean images/second of the rest (training loop only, not
validation). Writes ``benchmarks/results/train_speed_<device>.json``.

``--compile`` adds a third run: the fast settings with the training network compiled
(``TrainConfig.compile``, TorchInductor); its first epoch holds the compile, so it is
warm-up as for the others. ``--shipped_recipe`` trains the shipped network (``npr_hp``
input, no stem pool, 96 px patches: what the LOGO sweeps train) instead of the trainer's
default one.

    python benchmarks/train_speed.py --data ../shared/data/sn34-mini --device cuda --workers 14
    python benchmarks/train_speed.py --data ../shared/data/sn34-mini --device cuda --workers 14 --batch_size 256 \
        --shipped_recipe --compile --json benchmarks/results/train_speed_cuda_compile.json
"""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
from pathlib import Path

import torch

from bitmind.training import TrainConfig, train

RESULTS = Path(__file__).resolve().parent / "results"
SHIPPED_RECIPE = {"input": "npr_hp", "stem_pool": False, "patch_size": 96}  # mining_models/base.pth's network


def run(label: str, data: str, device: str, steps: int, epochs: int, batch_size: int, fast: bool, workers: int, tmp: str,
        compile: bool = False, recipe: dict | None = None) -> dict:
    cfg = TrainConfig(
        data=[data], name=f"speed_{label}", checkpoints_dir=tmp, device=device, epochs=epochs, batch_size=batch_size,
        max_steps_per_epoch=steps, early_stop_patience=0, calibrate=False, progress=False, val_fraction=0.02, test_fraction=0.02,
        workers=workers if fast else 0, pin_memory=fast, uint8_loading=fast, channels_last=fast,
        cudnn_benchmark=fast, amp="auto" if fast else "none", compile=compile, **(recipe or {}),
    )
    cudnn_was = torch.backends.cudnn.enabled
    torch.backends.cudnn.enabled = fast  # the naive baseline ran with cudnn off
    try:
        summary = train(cfg)
    finally:
        torch.backends.cudnn.enabled = cudnn_was
    warm = summary["history"][1:] or summary["history"]
    ips = sum(h["images_per_second"] for h in warm) / len(warm)
    return {"label": label, "images_per_second": ips, "per_epoch": [h["images_per_second"] for h in summary["history"]],
            "settings": {k: getattr(cfg, k) for k in ("workers", "pin_memory", "uint8_loading", "channels_last", "cudnn_benchmark", "amp",
                                                      "batch_size", "compile", "input", "stem_pool", "patch_size")}
            | {"cudnn_enabled": fast}}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="CLASS/SOURCE image folder (e.g. ../shared/data/sn34-mini)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--steps", type=int, default=30, help="batches per epoch")
    p.add_argument("--epochs", type=int, default=3, help="epochs per run (the first is warm-up)")
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--compile", action="store_true", help="also the fast settings with the training network compiled")
    p.add_argument("--shipped_recipe", action="store_true", help="train the shipped network (npr_hp, no stem pool, 96 px patches)")
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    recipe = SHIPPED_RECIPE if a.shipped_recipe else None
    with tempfile.TemporaryDirectory() as tmp:
        naive = run("naive", a.data, a.device, a.steps, a.epochs, a.batch_size, False, a.workers, tmp, recipe=recipe)
        fast = run("fast", a.data, a.device, a.steps, a.epochs, a.batch_size, True, a.workers, tmp, recipe=recipe)
        compiled = (run("compiled", a.data, a.device, a.steps, a.epochs, a.batch_size, True, a.workers, tmp, compile=True,
                        recipe=recipe) if a.compile else None)
    dev_name = torch.cuda.get_device_name(0) if a.device.startswith("cuda") else platform.processor() or platform.machine()
    out = {"device": a.device, "device_name": dev_name, "torch": torch.__version__, "cpu_count": __import__("os").cpu_count(),
           "batch_size": a.batch_size, "steps_per_epoch": a.steps, "epochs": a.epochs,
           "naive": naive, "fast": fast, "speedup": fast["images_per_second"] / naive["images_per_second"]}
    if compiled is not None:
        out["compiled"] = compiled
        out["compile_speedup"] = compiled["images_per_second"] / fast["images_per_second"]
    path = Path(a.json) if a.json else RESULTS / f"train_speed_{a.device.split(':')[0]}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    print(f"naive {naive['images_per_second']:.1f} img/s | fast {fast['images_per_second']:.1f} img/s | "
          f"speed-up x{out['speedup']:.2f} on {dev_name} -> {path}")
    if compiled is not None:
        print(f"compiled {compiled['images_per_second']:.1f} img/s: x{out['compile_speedup']:.2f} the fast settings")
    return out


if __name__ == "__main__":
    main()
