#!/usr/bin/env python3
"""How good, and how different, are the decoder zoo's round trips? Numbers and a picture.

For every zoo decoder (accepted or not) and optionally TAEF2, on held-out real crops (the
``--split`` split by picture stem; the zoo trains on ``train`` only): mean PSNR, SSIM and
high-frequency energy ratio (round trip over original; < 1 is blurrier). Then a figure:
one real crop, its round trip through each decoder, the difference amplified
(``--amplify``, mid-grey = no change) and a 4x zoom of the difference's centre, where each
up-sampling design's grid pattern shows.

    python benchmarks/decoder_zoo.py --zoo ZOO_DIR --taef2 ../shared/models/taef2 \\
        --data ../shared/data/sn34-mini ../shared/data/sn34-wide

Writes ``benchmarks/results/decoder_zoo.json`` and ``benchmarks/results/decoder_zoo.png``.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from bitmind.training.decoder_zoo import load_real_images, measure
from bitmind.training.decoders import load_decoders, round_trip
from bitmind.training.zoo_models import load_zoo_file

HERE = Path(__file__).resolve().parent


def zoo_members(zoo: Path) -> list[tuple[str, torch.nn.Module, dict]]:
    index = json.loads((zoo / "zoo.json").read_text())
    return [(d["name"], load_zoo_file(zoo / d["file"]), d) for d in index["decoders"]]


def figure(x: torch.Tensor, outputs: list[tuple[str, torch.Tensor, str]], path: Path, amplify: float) -> None:
    """Columns: the original, then one per decoder; rows: image, amplified difference, 4x zoom of it."""
    from bitmind.plots import new_figure

    n = 1 + len(outputs)
    fig, flat = new_figure(ncols=n, nrows=3, size=(2.2, 2.3))
    axes = np.asarray(flat, dtype=object).reshape(3, n)
    h, w = x.shape[-2:]
    z = min(h, w) // 4  # zoom window side
    y0, x0 = (h - z) // 2, (w - z) // 2
    show = lambda ax, t: ax.imshow(t.permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="nearest")
    show(axes[0, 0], x)
    axes[0, 0].set_title("real (held out)", fontsize=8)
    axes[1, 0].text(0.5, 0.5, f"difference x{amplify:g}\n(grey = none)", ha="center", va="center", fontsize=8)
    axes[2, 0].text(0.5, 0.5, f"centre {z}x{z} px\nof the difference,\nenlarged", ha="center", va="center", fontsize=8)
    for col, (name, y, label) in enumerate(outputs, start=1):
        diff = 0.5 + amplify * (y - x)
        show(axes[0, col], y)
        axes[0, col].set_title(f"{name}\n{label}", fontsize=7)
        show(axes[1, col], diff)
        show(axes[2, col], diff[:, y0:y0 + z, x0:x0 + z])
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--zoo", required=True, help="folder written by python -m bitmind.training.decoder_zoo train")
    p.add_argument("--taef2", default=None, help="TAEF2 folder, measured alongside as the reference")
    p.add_argument("--data", nargs="+", required=True, help="pool roots; their real crops of --split are used")
    p.add_argument("--split", default="test", choices=("val", "test"))
    p.add_argument("--split_seed", type=int, default=0)
    p.add_argument("--eval_images", type=int, default=256)
    p.add_argument("--image", type=int, default=0, help="which held-out crop the figure shows")
    p.add_argument("--amplify", type=float, default=8.0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", default=str(HERE / "results" / "decoder_zoo.json"))
    p.add_argument("--figure", default=str(HERE / "results" / "decoder_zoo.png"))
    a = p.parse_args(argv)

    images, paths = load_real_images(a.data, a.split, a.split_seed, a.eval_images)
    decoders = [(n, m, {"accepted": d["accepted"], "reason": d["reason"], "design": d["design"], "factor": d["factor"],
                        "latent_channels": d["latent_channels"], "params_decoder": d["params_decoder"]})
                for n, m, d in zoo_members(Path(a.zoo))]
    if a.taef2:
        (t,) = load_decoders([f"taef2={a.taef2}"])
        decoders.append(("taef2", t.model, {"reference": True, "factor": t.factor}))
    results, outputs = {}, []
    x = images[a.image % len(images)].float()[None] / 255
    for name, model, info in decoders:
        m = measure(model, images, a.device)
        results[name] = {**m, **info}
        y = (round_trip(model.to(a.device), x.to(a.device)) * 255).round().cpu()[0] / 255
        verdict = "" if info.get("accepted", True) else " REJECTED"
        outputs.append((name, y, f"{m['psnr']:.1f} dB, HF {m['hf_ratio']:.2f}{verdict}"))
        print(f"{name:24s} PSNR {m['psnr']:6.2f} dB  SSIM {m['ssim']:.3f}  HF ratio {m['hf_ratio']:.3f}{verdict}")
    report = {"split": a.split, "images": len(images), "data": a.data, "zoo": a.zoo, "figure_image": paths[a.image % len(paths)],
              "decoders": results}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(report, indent=2))
    figure(x[0], outputs, Path(a.figure), a.amplify)
    print(f"wrote {a.out} and {a.figure}")
    return report


if __name__ == "__main__":
    main()
