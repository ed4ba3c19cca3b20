#!/usr/bin/env python3
"""Does the detector catch a generator it never saw? A proxy measurement.

The miner is scored on generators that are not in the training pool (SD v1.x only). This
script makes fakes of another latent decoder: the held-out test split's real photos
passed through TAEF2, the tiny autoencoder of the FLUX.2 latent space
(``../shared/models/taef2``). Each fake shows the same picture as its real twin, so only
the decoder's up-sampling trace tells them apart. No training image of the shipped
models came through this decoder. It then reports, per model and per ensemble member,
accuracy on the real photos and the detection rate of those fakes, on clean images and on
validator challenges:

    python benchmarks/unseen_generator.py --data ../shared/data/sn34-mini --taef2 ../shared/models/taef2 \\
        --models mining_models/base.pth mining_models/npr_f2.pth

Writes ``benchmarks/results/unseen_generator.json``. The fakes are written under
``--work`` (default: a temporary folder) and deleted afterwards unless ``--keep``.
A proxy, not the real thing: one decoder, applied to real photos rather than generated
from noise.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from bitmind.checkpoint import load_model
from bitmind.data import LocalFolderSource, split_indices
from bitmind.evaluation import build_dataset, collect_predictions
from bitmind.training.aligned_fakes import make_aligned_fakes

HERE = Path(__file__).resolve().parent


def build_pool(data: str, taef2: str, work: Path, split: str, split_seed: int) -> dict:
    """``work/real/<source>/`` (links to the split's real photos) and ``work/fake/taef2_<source>/``."""
    src = LocalFolderSource(data)
    n_real = 0
    for i in split_indices(src, seed=split_seed)[split]:
        if src.label(i) != 0:
            continue
        dst = work / "real" / src.source_name(i).split("/", 1)[1] / Path(src.path(i)).name
        dst.parent.mkdir(parents=True, exist_ok=True)
        if not dst.exists():
            os.symlink(os.path.abspath(src.path(i)), dst)
        n_real += 1
    stats = make_aligned_fakes(data, work, taef2, device="cuda" if torch.cuda.is_available() else "cpu",
                               split=split, split_seed=split_seed)
    return {"real": n_real, "fake": stats["written"], "psnr_mean": stats["psnr_mean"]}


def scorers(model_path: str) -> dict[str, tuple[torch.nn.Module, float, float]]:
    """The model itself (calibrated) and, for an ensemble, each member alone (uncalibrated logit > 0)."""
    lm = load_model(model_path)
    name = str(model_path)  # the path as given: several models may share a file name
    out = {name: (lm.model, lm.temperature, lm.logit_bias)}
    if lm.arch == "ensemble":
        for k, (member, cfg) in enumerate(zip(lm.model.members, lm.model.config["members"])):
            out[f"{name} member {k} ({cfg['config'].get('input', 'npr')})"] = (member, 1.0, 0.0)
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="the training pool (its test-split real photos are used)")
    ap.add_argument("--taef2", required=True, help="folder with taef2_encoder.pth and taef2_decoder.pth")
    ap.add_argument("--models", nargs="+", default=["mining_models/base.pth", "mining_models/npr_f2.pth"])
    ap.add_argument("--split", default="test")
    ap.add_argument("--split_seed", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0, help="challenge seed")
    ap.add_argument("--work", default=None, help="folder for the generated pool (default: temporary)")
    ap.add_argument("--keep", action="store_true", help="keep the generated pool")
    ap.add_argument("--out", default=str(HERE / "results" / "unseen_generator.json"))
    a = ap.parse_args(argv)
    work = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix="unseen_generator_"))
    try:
        pool = build_pool(a.data, a.taef2, work, a.split, a.split_seed)
        print(f"pool: {pool['real']} real test photos and {pool['fake']} TAEF2 round trips (PSNR {pool['psnr_mean']:.1f} dB)")
        views = {"clean": build_dataset([str(work)]), "challenge": build_dataset([str(work)], challenge=True, seed=a.seed)}
        rows = {}
        for path in a.models:
            for name, (net, t, b) in scorers(path).items():
                rows[name] = {}
                for view, ds in views.items():
                    m = collect_predictions(net, ds, batch_size=32, temperature=t, logit_bias=b, progress=False).metrics()
                    rows[name][view] = {"real_accuracy": m["real_accuracy"], "fake_detection": m["fake_accuracy"],
                                        "accuracy": m["accuracy"], "ap": m["ap"]}
                r = rows[name]
                print(f"{name}\n    clean: real {r['clean']['real_accuracy']:.3f} fakes caught {r['clean']['fake_detection']:.3f} "
                      f"AP {r['clean']['ap']:.3f} | challenge: real {r['challenge']['real_accuracy']:.3f} "
                      f"fakes caught {r['challenge']['fake_detection']:.3f} AP {r['challenge']['ap']:.3f}", flush=True)
        res = {"pool": pool, "split": a.split, "split_seed": a.split_seed, "challenge_seed": a.seed, "models": rows}
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(res, indent=2))
        return res
    finally:
        if not a.keep and not a.work:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
