"""Train a zoo of small autoencoders on the pools' real photos, one per up-sampling design.

Why: the detector learned content and style, not generation. Pairs that differ ONLY in
how they were made (a real photo and its round trip through a decoder) remove every
shortcut but the decoder's trace, and one decoder (TAEF2) teaches one trace. This trains
many, with deliberately different up-sampling paths (``bitmind.training.zoo_models``), so
that ``python -m bitmind.training.aligned_fakes --decoders zoo=DIR`` can make round trips
carrying each of their traces.

    python -m bitmind.training.decoder_zoo train --data ROOT [ROOT ...] --out DIR

All decoders train in one process and one loop: each step draws one batch of random
crops (uint8 images held on the device, cropped and flipped by one indexing op) and feeds
it to every decoder. Loss: L1 plus L1 of the horizontal/vertical pixel differences, which
keeps edges sharp, plus L1 between log amplitude spectra (``--fft_weight``), which charges
missing fine detail. The learning rate follows a cosine over ``max(step / steps, elapsed /
time_budget_s)``, so a time budget ends the run on a finished schedule, not mid-way.

Afterwards each decoder is saved (fp16 safetensors with its spec), re-loaded from that
file and measured on held-out real crops (the ``--eval_split`` split by picture stem):
PSNR, SSIM and the high-frequency energy ratio. A decoder is accepted when its mean PSNR
is at least ``--min_psnr`` and its high-frequency ratio at least ``--min_hf_ratio`` (a
blurry round trip would teach "blurry = fake"). ``DIR/zoo.json`` lists all of it. Training
only uses the ``train`` split, so held-out pictures never shape a decoder.

The weights are training material only: never inside the miner.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from bitmind.training.decoders import round_trip
from bitmind.training.image_quality import high_frequency_ratio, psnr, ssim
from bitmind.training.taesd import DecoderLoadError
from bitmind.training.zoo_models import (DEFAULT_ZOO, ZooAutoencoder, ZooSpec, count_params, load_zoo_file,
                                         save_zoo_file)

logger = logging.getLogger(__name__)


def load_real_images(roots: list[str | Path], split: str | None, split_seed: int = 0, limit: int = 0,
                     workers: int = 8) -> tuple[torch.Tensor, list[str]]:
    """The real photos of ``roots`` in one split as a uint8 (N, 3, H, W) tensor, and their paths.

    Images of different sizes are centre-cropped to the smallest common height and width
    (the pools are all 256x256). ``limit`` keeps that many, evenly spread over the list,
    so every source is represented."""
    from PIL import Image

    from bitmind.data import LocalFolderSource, split_indices

    paths: list[str] = []
    for root in roots:
        src = LocalFolderSource(root)
        pool = split_indices(src, seed=split_seed)[split] if split else range(len(src))
        paths += [src.path(i) for i in pool if src.label(i) == 0]
    if limit and len(paths) > limit:
        paths = [paths[int(k * len(paths) / limit)] for k in range(limit)]
    if not paths:
        raise ValueError(f"no real images in split {split!r} of {[str(r) for r in roots]}")

    def read(p: str) -> np.ndarray:
        with Image.open(p) as im:
            return np.asarray(im.convert("RGB"))

    with ThreadPoolExecutor(workers) as ex:
        arrays = list(ex.map(read, paths))
    h, w = min(a.shape[0] for a in arrays), min(a.shape[1] for a in arrays)

    def centre(a: np.ndarray) -> np.ndarray:
        y, x = (a.shape[0] - h) // 2, (a.shape[1] - w) // 2
        return a[y:y + h, x:x + w]

    return torch.from_numpy(np.stack([centre(a) for a in arrays])).permute(0, 3, 1, 2).contiguous(), paths


def random_crops(images: torch.Tensor, batch_size: int, crop: int, gen: torch.Generator) -> torch.Tensor:
    """``batch_size`` random ``crop`` x ``crop`` crops, half of them mirrored, as float [0, 1]:
    one advanced-indexing gather on the images' device, no per-sample Python work."""
    n, _, h, w = images.shape
    crop = min(crop, h, w)
    dev = images.device  # ``gen`` lives there too: no host-device copy, so no sync per step
    idx = torch.randint(n, (batch_size,), generator=gen, device=dev)
    oy = torch.randint(h - crop + 1, (batch_size,), generator=gen, device=dev)
    ox = torch.randint(w - crop + 1, (batch_size,), generator=gen, device=dev)
    flip = torch.rand(batch_size, generator=gen, device=dev) < 0.5
    r = torch.arange(crop, device=dev)
    rows = oy[:, None] + r
    cols = torch.where(flip[:, None], ox[:, None] + crop - 1 - r, ox[:, None] + r)
    ch = torch.arange(3, device=dev)
    x = images[idx[:, None, None, None], ch[None, :, None, None], rows[:, None, :, None], cols[:, None, None, :]]
    return x.float().div_(255)


def reconstruction_loss(y: torch.Tensor, x: torch.Tensor, grad_weight: float, fft_weight: float = 0.0) -> torch.Tensor:
    """L1 on pixels plus ``grad_weight`` x L1 on neighbouring-pixel differences (sharpness)
    plus ``fft_weight`` x L1 between log amplitude spectra. Pixel losses are dominated by
    the low frequencies a decoder gets right first, so an autoencoder trained a few minutes
    on them comes out blurry (the first zoo: 19-60 % of the photo's high-frequency energy);
    the spectral term weighs every frequency alike, so missing fine detail costs as much
    as a wrong colour."""
    loss = (y - x).abs().mean()
    if grad_weight:
        dx = lambda t: t[..., :, 1:] - t[..., :, :-1]
        dy = lambda t: t[..., 1:, :] - t[..., :-1, :]
        loss = loss + grad_weight * ((dx(y) - dx(x)).abs().mean() + (dy(y) - dy(x)).abs().mean())
    if fft_weight:
        amp = lambda t: torch.log1p(torch.fft.rfft2(t.float(), norm="ortho").abs())
        loss = loss + fft_weight * (amp(y) - amp(x)).abs().mean()
    return loss


def train_zoo(specs: list[ZooSpec], images: torch.Tensor, steps: int, batch_size: int = 32, crop: int = 128,
              lr: float = 2e-3, device: str = "cpu", seed: int = 0, time_budget_s: float = 0.0,
              grad_weight: float = 0.5, warmup: int = 100, log_every: int = 100,
              fft_weight: float = 0.5) -> tuple[list[ZooAutoencoder], dict]:
    """Train one autoencoder per spec on random crops of ``images`` (uint8, any device)."""
    torch.manual_seed(seed)
    cuda = str(device).startswith("cuda")
    if cuda:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    fmt = torch.channels_last if cuda else torch.contiguous_format
    models = [ZooAutoencoder(s).to(device, memory_format=fmt).train() for s in specs]
    opts = [torch.optim.Adam(m.parameters(), lr=lr, betas=(0.9, 0.99), **({"fused": True} if cuda else {}))
            for m in models]
    images = images.to(device)
    gen = torch.Generator(device=images.device).manual_seed(seed)
    sums = [torch.zeros(2, device=device) for _ in models]  # loss, mse since the last log
    t0, step, last_log = time.perf_counter(), 0, 0
    while True:
        progress = step / max(steps, 1)
        if time_budget_s > 0:
            progress = max(progress, (time.perf_counter() - t0) / time_budget_s)
        if progress >= 1.0:
            break
        scale = min(1.0, (step + 1) / max(warmup, 1)) * 0.5 * (1 + math.cos(math.pi * progress))
        x = random_crops(images, batch_size, crop, gen).contiguous(memory_format=fmt)
        for m, opt, acc in zip(models, opts, sums):
            for g in opt.param_groups:
                g["lr"] = lr * scale
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
                y = m.reconstruct(x)
            y = y.float()
            loss = reconstruction_loss(y, x, grad_weight, fft_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            acc += torch.stack([loss.detach(), F.mse_loss(y.detach(), x)])
        step += 1
        if step % log_every == 0 or step == steps:
            n = step - last_log
            for s, acc in zip(specs, sums):
                loss_m, mse_m = (acc / n).tolist()
                logger.info("step %d %-22s loss %.4f  train PSNR %.2f dB", step, s.name, loss_m,
                            10 * math.log10(1 / max(mse_m, 1e-12)))
                acc.zero_()
            last_log = step
            logger.info("step %d: %.1f s elapsed", step, time.perf_counter() - t0)
    if cuda:
        torch.cuda.synchronize()
    return [m.eval() for m in models], {"steps": step, "train_seconds": round(time.perf_counter() - t0, 2)}


@torch.no_grad()
def measure(model: torch.nn.Module, images: torch.Tensor, device: str = "cpu", batch_size: int = 32) -> dict:
    """Mean PSNR, SSIM and high-frequency ratio of round trips (in fp32, quantised to 8 bits
    as saved files are) against uint8 originals."""
    model = model.to(device).eval()
    vals: dict[str, list] = {"psnr": [], "ssim": [], "hf_ratio": []}
    for i in range(0, len(images), batch_size):
        x = images[i:i + batch_size].to(device).float() / 255
        y = (round_trip(model, x) * 255).round() / 255
        vals["psnr"] += psnr(y, x).tolist()
        vals["ssim"] += ssim(y, x).tolist()
        vals["hf_ratio"] += high_frequency_ratio(y, x).tolist()
    return {k: round(float(np.mean(v)), 4) for k, v in vals.items()} | {"psnr_min": round(float(np.min(vals["psnr"])), 3),
                                                                        "images": len(images)}


def verdict(m: dict, min_psnr: float, min_hf_ratio: float, max_hf_ratio: float = math.inf) -> tuple[bool, str]:
    """Accept a decoder whose round trips a person would take for the photo and that are
    neither blurry (a detector would learn "blurry = fake") nor noisier than the photo."""
    why = []
    if m["psnr"] < min_psnr:
        why.append(f"PSNR {m['psnr']:.2f} dB < {min_psnr}")
    if m["hf_ratio"] < min_hf_ratio:
        why.append(f"high-frequency ratio {m['hf_ratio']:.3f} < {min_hf_ratio} (blurry)")
    if m["hf_ratio"] > max_hf_ratio:
        why.append(f"high-frequency ratio {m['hf_ratio']:.3f} > {max_hf_ratio} (adds noise)")
    return (not why), ("; ".join(why) or "ok")


def parse_designs(names: list[str], width: int) -> list[ZooSpec]:
    specs = [ZooSpec.parse(n, width) for n in names]
    if len({s.name for s in specs}) != len(specs):
        raise ValueError(f"duplicate decoder names in {names}")
    return specs


def cmd_train(a: argparse.Namespace) -> dict:
    specs = parse_designs(a.designs, a.width)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    train, _ = load_real_images(a.data, "train", a.split_seed, a.max_train_images)
    held, held_paths = load_real_images(a.data, a.eval_split, a.split_seed, a.eval_images)
    logger.info("%d training crops %s, %d held-out (%s) crops; loaded in %.1f s", len(train), tuple(train.shape[1:]),
                len(held), a.eval_split, time.perf_counter() - t0)
    models, run = train_zoo(specs, train, a.steps, a.batch_size, a.crop, a.lr, a.device, a.seed, a.time_budget_s,
                            a.grad_weight, warmup=a.warmup, log_every=a.log_every, fft_weight=a.fft_weight)
    members = []
    for spec, model in zip(specs, models):
        path = save_zoo_file(model, out / f"{spec.name}.safetensors", {"steps": run["steps"], "seed": a.seed})
        m = measure(load_zoo_file(path), held, a.device)  # the saved (fp16) weights, as aligned_fakes will use them
        ok, reason = verdict(m, a.min_psnr, a.min_hf_ratio, a.max_hf_ratio)
        members.append({"name": spec.name, "design": spec.design, "factor": spec.factor, "latent_channels": spec.latent,
                        "width": spec.width, "params_decoder": count_params(model.decoder),
                        "params_encoder": count_params(model.encoder), "file": path.name,
                        "bytes": path.stat().st_size, **m, "accepted": ok, "reason": reason})
        logger.info("%-22s PSNR %.2f dB  SSIM %.3f  HF ratio %.3f  -> %s", spec.name, m["psnr"], m["ssim"],
                    m["hf_ratio"], "accepted" if ok else f"REJECTED: {reason}")
    index = {"decoders": members, **run, "total_seconds": round(time.perf_counter() - t0, 2),
             "settings": {k: (list(map(str, v)) if isinstance(v, list) else v) for k, v in vars(a).items() if k != "func"},
             "held_out": {"split": a.eval_split, "images": len(held), "first": held_paths[:3]},
             "total_bytes": sum(m["bytes"] for m in members)}
    (out / "zoo.json").write_text(json.dumps(index, indent=2))
    logger.info("wrote %s: %d of %d decoders accepted, %.1f MiB", out / "zoo.json",
                sum(m["accepted"] for m in members), len(members), index["total_bytes"] / 2**20)
    return index


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bitmind.training.decoder_zoo", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train the zoo and write DIR/zoo.json plus one safetensors file per decoder")
    t.add_argument("--data", nargs="+", required=True, help="pool roots in the CLASS/SOURCE layout (real/ is used)")
    t.add_argument("--out", required=True)
    t.add_argument("--designs", nargs="+", default=list(DEFAULT_ZOO),
                   help=f"decoders as DESIGN-FACTORx-cLATENT (default: {' '.join(DEFAULT_ZOO)})")
    t.add_argument("--width", type=int, default=64, help="channels below full resolution (32 at full resolution)")
    t.add_argument("--steps", type=int, default=6000, help="steps (each one batch through every decoder)")
    t.add_argument("--time_budget_s", type=float, default=0.0, help="stop (on a finished LR schedule) after this long")
    t.add_argument("--batch_size", type=int, default=32)
    t.add_argument("--crop", type=int, default=128)
    t.add_argument("--lr", type=float, default=2e-3)
    t.add_argument("--warmup", type=int, default=100, help="steps of linear learning-rate warm-up")
    t.add_argument("--grad_weight", type=float, default=0.5, help="weight of the pixel-difference L1 (sharpness)")
    t.add_argument("--fft_weight", type=float, default=0.5,
                   help="weight of the L1 between log amplitude spectra (against blurry round trips; try 0.1-1)")
    t.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--split_seed", type=int, default=0)
    t.add_argument("--eval_split", default="val", choices=("val", "test"))
    t.add_argument("--eval_images", type=int, default=256)
    t.add_argument("--max_train_images", type=int, default=0, help="0: all training crops")
    t.add_argument("--min_psnr", type=float, default=28.0)
    t.add_argument("--min_hf_ratio", type=float, default=0.8,
                   help="accept only if high-frequency energy keeps this share (TAEF2: 0.91-0.97 here)")
    t.add_argument("--max_hf_ratio", type=float, default=1.3, help="reject round trips that add this much high-frequency energy")
    t.add_argument("--log_every", type=int, default=100)
    t.set_defaults(func=cmd_train)
    return p


def main(argv=None) -> dict:
    a = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    try:
        return a.func(a)
    except (DecoderLoadError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2)


if __name__ == "__main__":
    main()
