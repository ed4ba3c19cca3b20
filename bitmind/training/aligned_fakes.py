"""Make "aligned" fakes: real photos passed through autoencoders (TAEF2 and its kin).

Latent-diffusion generators (SD, SDXL, SD3, Flux) produce every pixel through a learned
VAE decoder that up-samples; that decoder leaves the up-sampling trace NPR looks for.
A real photo encoded and decoded by such an autoencoder looks the same (~28-35 dB PSNR)
but now carries the trace, so (real, round trip) pairs differ ONLY by the decoder: no
content or format shortcut for the detector to learn. One decoder teaches one trace, so
any number of TAESD-family decoders can be given, each its own source:

    python -m bitmind.training.aligned_fakes --data ROOT [ROOT ...] \
        --decoders taef2=../shared/models/taef2 [NAME=TAESD_DIR ...] --out OUT

writes a pool root: ``OUT/fake/aligned-<decoder>/<root>/<source>/<file>.jpg``, JPEG
quality 90 like the crop pools, one folder per decoder (``aligned-taef2``,
``aligned-NAME``, ...). File names are kept, so each round trip has its
original's picture stem and lands in the same train/val/test split; the ``<root>/<source>``
sub-folders only keep apart pictures that share a file name in two sources (the
LocalFolderSource reads them recursively, so the source stays ``fake/aligned-<decoder>``).
Give the sn34-validator root too, and its real challenges get round trips with the same
stems: aligned pairs in the validator-realistic regime.

``--synthetic`` adds (or, without ``--decoders``, makes only) synthetic fakes: each photo
with the trace of a randomly drawn generator-like up-sampler added
(``bitmind.training.upsampling_traces``), source ``fake/aligned-synth-upsampling``.

The older form ``--real DIR --weights TAEF2_DIR`` (one root, TAEF2 only, output
``OUT/fake/taef2_<source>/``) still works. The weights are training-data tooling, never
shipped with the miner.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms.functional as TF

from bitmind.training.decoders import Decoder, load_decoders, psnr, round_trip
from bitmind.training.taesd import DecoderLoadError, TinyAutoencoder, build_from_state_dict
from bitmind.training.upsampling_traces import SYNTHETIC_SOURCE, UpsamplingTrace

__all__ = ["DecoderLoadError", "TinyAutoencoder", "build_from_state_dict", "make_aligned_fakes", "make_aligned_pool",
           "real_inputs", "main"]
logger = logging.getLogger(__name__)


def make_aligned_fakes(real_root: str | Path, out_root: str | Path, weights_dir: str | Path, prefix: str = "taef2_",
                       device: str = "cpu", batch_size: int = 16, limit: int = 0, quality: int = 90,
                       split: str | None = None, split_seed: int = 0) -> dict:
    """Older single-root TAEF2 form (``benchmarks/unseen_generator.py`` uses it).

    Round-trip every ``real_root/real/SOURCE/*`` image into ``out_root/fake/<prefix>SOURCE/``
    (only those of one ``split``, by picture stem, if given: e.g. the test split's photos as
    fakes of a generator that no training image came from). ``make_aligned_pool`` with one
    decoder and the older folder layout; returns the images written and their mean PSNR."""
    decoder = Decoder(prefix.rstrip("_"), TinyAutoencoder(weights_dir), Path(weights_dir))  # one folder per source, below
    summary = make_aligned_pool([real_root], out_root, [decoder], device=device, batch_size=batch_size, split=split,
                                split_seed=split_seed, limit=limit, quality=quality,
                                dest=lambda d, rel: f"{prefix}{rel.split('/')[1]}/{Path(rel).name}")
    stats = {"written": summary["written"], "psnr_mean": summary["decoders"][decoder.source]["psnr_mean"]}
    logger.info("aligned fakes: %s", stats)
    return stats


def real_inputs(roots: list[str | Path], split: str | None, split_seed: int = 0,
                limit: int = 0) -> list[tuple[str, Path]]:
    """``(relative output path, input file)`` for the real photos of ``roots`` in one split
    (all splits for None or "all"). The relative path is ``<root name>/<source>/<name>.jpg``;
    two roots with the same folder name get ``_2``, ``_3`` suffixes."""
    from bitmind.data import LocalFolderSource, split_indices

    out: list[tuple[str, Path]] = []
    seen_roots: dict[str, int] = {}
    for root in roots:
        src = LocalFolderSource(root)
        rname = src.root.name
        seen_roots[rname] = seen_roots.get(rname, 0) + 1
        if seen_roots[rname] > 1:
            rname = f"{rname}_{seen_roots[rname]}"
        pool = split_indices(src, seed=split_seed)[split] if split not in (None, "all") else range(len(src))
        picked = [i for i in pool if src.label(i) == 0]
        if limit:
            picked = picked[:limit]
        for i in picked:
            f = Path(src.path(i))
            source = src.source_name(i).split("/", 1)[1]
            out.append((f"{rname}/{source}/{f.relative_to(src.root / 'real' / source).with_suffix('.jpg')}", f))
    return out


def make_aligned_pool(roots: list[str | Path], out_root: str | Path, decoders: list[Decoder], device: str = "cpu",
                      batch_size: int = 32, split: str | None = None, split_seed: int = 0, limit: int = 0,
                      quality: int = 90, workers: int = 0, dest=None) -> dict:
    """Round-trip the real photos of ``roots`` through every decoder into a pool at ``out_root``.

    Each input is read once and sent through all decoders in batches of one image size
    (GPU or CPU, fp32); sides not divisible by a decoder's factor are padded and the
    output cropped back, so a round trip has its original's exact size. Reading and JPEG
    writing run on ``workers`` threads (PIL releases the GIL), the networks on ``device``.
    A round trip goes to ``out_root/fake/<dest(decoder, rel)>``, by default
    ``<decoder.source>/<rel>`` with ``rel`` = ``<root name>/<source>/<file>.jpg``."""
    from bitmind.image_io import load_image_file, _to_rgb

    items = real_inputs(roots, split, split_seed, limit)
    if not items:
        raise ValueError(f"no real photos in split {split or 'all'} of {[str(r) for r in roots]}")
    out_root = Path(out_root)
    dest = dest or (lambda d, rel: f"{d.source}/{rel}")
    models = [d.model.to(device).eval() for d in decoders]
    workers = workers or min(32, os.cpu_count() or 1)
    stats = {d.source: {"written": 0, "psnr_sum": 0.0} for d in decoders}

    def read(item: tuple[str, Path]) -> torch.Tensor | None:
        try:
            return TF.pil_to_tensor(_to_rgb(load_image_file(str(item[1]))))
        except Exception as e:  # one unreadable photo never stops the run
            logger.warning("skipping unreadable %s: %s", item[1], e)
            return None

    def save(arr: np.ndarray, dst: Path) -> None:
        dst.parent.mkdir(parents=True, exist_ok=True)
        from PIL import Image

        Image.fromarray(arr).save(dst, quality=quality)

    t0, skipped = time.perf_counter(), 0
    with ThreadPoolExecutor(workers) as pool:
        writes = []

        def flush(batch: list[tuple[str, torch.Tensor]]) -> None:
            x = torch.stack([t for _, t in batch]).to(device, non_blocking=True).float().div_(255)
            for d, m in zip(decoders, models):
                y8 = (round_trip(m, x) * 255).round_()
                stats[d.source]["psnr_sum"] += float(psnr(y8 / 255, x).sum())
                arrs = y8.to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
                for (rel, _), a in zip(batch, arrs):
                    writes.append(pool.submit(save, a, out_root / "fake" / dest(d, rel)))
                stats[d.source]["written"] += len(batch)

        pending: list[tuple[str, torch.Tensor]] = []
        for k in range(0, len(items), 4 * batch_size):  # read ahead a few batches at a time
            chunk = items[k:k + 4 * batch_size]
            for (rel, _), t in zip(chunk, pool.map(read, chunk)):
                if t is None:
                    skipped += 1
                    continue
                if pending and (len(pending) >= batch_size or pending[0][1].shape != t.shape):
                    flush(pending)
                    pending = []
                pending.append((rel, t))
            cap = 8 * batch_size * len(decoders)  # bound the JPEG backlog held in memory
            while len(writes) > cap:
                writes.pop(0).result()
            writes = [w for w in writes if not w.done() or w.result() or False]  # re-raises a failed write
            logger.info("aligned fakes: %d / %d photos, %.1f s", min(k + len(chunk), len(items)), len(items),
                        time.perf_counter() - t0)
        if pending:
            flush(pending)
        for w in writes:
            w.result()
    per = {s: {"written": v["written"], "psnr_mean": round(v["psnr_sum"] / max(v["written"], 1), 3)}
           for s, v in stats.items()}
    summary = {"photos": len(items) - skipped, "skipped": skipped, "split": split or "all",
               "written": sum(v["written"] for v in per.values()), "decoders": per,
               "roots": [str(r) for r in roots], "seconds": round(time.perf_counter() - t0, 1)}
    (out_root / "aligned.json").write_text(json.dumps(summary, indent=2))
    logger.info("aligned fakes: %s", json.dumps(per))
    return summary


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m bitmind.training.aligned_fakes",
                                description="Round-trip real photos through autoencoders to make aligned fake training images.")
    p.add_argument("--data", nargs="+", help="pool roots in the CLASS/SOURCE layout (their real/ photos are used)")
    p.add_argument("--decoders", nargs="+", help="NAME=PATH: a TAESD-family folder holding one "
                                                 "<prefix>_encoder.pth / <prefix>_decoder.pth pair (taef2=../shared/models/taef2)")
    p.add_argument("--synthetic", action="store_true",
                   help=f"also write synthetic fakes: each photo plus a random up-sampler's trace (fake/{SYNTHETIC_SOURCE})")
    p.add_argument("--synthetic_seed", type=int, default=0, help="seed of the random up-samplers")
    p.add_argument("--synthetic_rms", type=float, nargs=2, default=(1.5, 6.0), metavar=("LO", "HI"),
                   help="strength of each synthetic trace: RMS drawn uniformly in [LO, HI] 8-bit levels "
                        "(default 1.5 6, about 37 dB PSNR; TAEF2 round trips are about 31 dB)")
    p.add_argument("--real", help="(older form) one root; with --weights, writes OUT/fake/taef2_SOURCE/")
    p.add_argument("--weights", help="(older form) folder holding taef2_encoder.pth and taef2_decoder.pth")
    p.add_argument("--out", required=True, help="output pool root")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--workers", type=int, default=0, help="threads for reading and JPEG writing (0: all cores)")
    p.add_argument("--limit", type=int, default=0, help="at most this many photos per root (0: all)")
    p.add_argument("--split", choices=("train", "val", "test", "all"), default=None,
                   help="only the real photos of this split, by picture stem (default: all)")
    p.add_argument("--split_seed", type=int, default=0)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    split = None if a.split == "all" else a.split
    try:
        if a.real or a.weights:
            if not (a.real and a.weights) or a.data or a.decoders or a.synthetic:
                p.error("the older form takes --real and --weights together, without --data/--decoders/--synthetic")
            TinyAutoencoder(a.weights)  # a clear error for missing or corrupt weights before any work
            stats = make_aligned_fakes(a.real, a.out, a.weights, device=a.device, batch_size=a.batch_size,
                                       limit=a.limit, split=split, split_seed=a.split_seed)
        else:
            if not (a.data and (a.decoders or a.synthetic)):
                p.error("give --data ROOT ... and --decoders NAME=PATH ... and/or --synthetic (or the older --real/--weights)")
            decoders = load_decoders(a.decoders or [])
            if a.synthetic:
                lo, hi = a.synthetic_rms
                if not 0 < lo <= hi:
                    p.error(f"--synthetic_rms takes 0 < LO <= HI, got {lo:g} {hi:g}")
                decoders.append(Decoder(SYNTHETIC_SOURCE, UpsamplingTrace(seed=a.synthetic_seed, rms=(lo, hi)),
                                        Path("synthetic")))
            stats = make_aligned_pool(a.data, a.out, decoders, device=a.device,
                                      batch_size=a.batch_size, split=split, split_seed=a.split_seed, limit=a.limit,
                                      workers=a.workers)
    except (DecoderLoadError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2)
    print(json.dumps(stats))
    return stats


if __name__ == "__main__":
    main()
