#!/usr/bin/env python3
"""Serving the same weights on the central part of the picture: accuracy against CPU cost.

The shipped network was trained on 96 px patches and is served on the whole 256 px
picture, its global pool averaging the evidence of every patch; its cost grows with the
area it looks at. ``center_crop`` in a model's config (``bitmind.models.npr.center_square``)
makes it look at the central N x N only. For each N this writes a copy of ``--model``
with that config (same weights, same calibration) and measures, in one run:

* accuracy on the ``sn34-validator`` test split as sent (``benchmarks/accuracy.py
  --as_sent``: balanced accuracy, ROC AUC, real and fake accuracy, the worst source) and,
  with ``--crop_data``, on the crop pools through the seeded validator pipeline;
* the CPU floor (decode + transform + forward, one image at a time) against the
  ``npr_f2.pth`` floor in alternating rounds (``benchmarks/serve_bench.py
  --compare-model``): the ratio the serving target bounds at 2x.

    python benchmarks/serve_crop.py --data ../shared/data/sn34-validator \\
        --crop_data ../shared/data/sn34-mini ../shared/data/sn34-wide --crops 0 192 160 --keep 192

Writes ``benchmarks/results/serve_crop.json`` and ``.md``. ``--keep N`` also writes the
copy with ``center_crop`` N beside the model (``<model stem>_crop<N>.pth``). The copies
keep the full-view calibration: the probe this came from moved real and fake accuracy
by under 0.01 at 192 px, so the boundary was not re-fitted (the JSON says so).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from bitmind.report import report_path, write_report

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
HEADLINE = ("balanced_accuracy", "roc_auc", "real_accuracy", "fake_accuracy")


def cropped_copy(model: str | Path, size: int, out: str | Path) -> Path:
    """``model``'s file with ``center_crop`` = ``size`` in its config (0: as it is)."""
    from bitmind.checkpoint import read_checkpoint, save_checkpoint

    state, meta = read_checkpoint(model)
    if meta.get("arch", "npr") != "npr":
        raise ValueError(f"{model}: center_crop is an option of the npr architecture, not {meta.get('arch')!r}")
    config = {k: v for k, v in (meta.get("config") or {}).items() if k != "center_crop"}
    if size:
        config["center_crop"] = int(size)
    desc = meta.get("description") or ""
    extra = f" Served on the central {size} px of the picture (center_crop; same weights and calibration)." if size else ""
    return save_checkpoint(state, out, {**meta, "config": config, "description": (desc + extra).strip()})


def run_script(args: list[str]) -> None:
    res = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:1])} failed:\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}")


def measure(model: Path, size: int, a, tmp: Path) -> dict:
    """Accuracy (as sent, and on the crops if asked) and the floor ratio of one copy."""
    row: dict = {"center_crop": size}
    out = tmp / f"acc_{size}.json"
    run_script([str(HERE / "accuracy.py"), "--model", str(model), "--data", *a.data, "--as_sent", "--plots", "none",
                "--out", str(out), "--device", "cpu"])
    acc = json.loads(out.read_text())
    row["as_sent"] = {k: acc["results"]["as sent"].get(k) for k in (*HEADLINE, "n")}
    row["as_sent"]["worst"] = acc.get("worst_of_min_n")
    if a.crop_data:
        out = tmp / f"crops_{size}.json"
        run_script([str(HERE / "accuracy.py"), "--model", str(model), "--data", *a.crop_data, "--seeds", *map(str, a.seeds),
                    "--plots", "none", "--out", str(out), "--device", "cpu"])
        acc = json.loads(out.read_text())
        row["crops"] = {k: acc["results"][acc["headline"]].get(k) for k in (*HEADLINE, "n")}
    if not a.no_latency:
        out = tmp / f"bench_{size}.json"
        run_script([str(HERE / "serve_bench.py"), "--model", str(model), "--compare-model", a.compare_model,
                    "--requests", str(a.requests), "--floor-rounds", str(a.floor_rounds), "--no-axon", "--no-inproc",
                    "--device", "cpu", "--json", str(out)]
                   + (["--data", a.data[0]] if a.data else []) + (["--compile"] if a.compile else []))
        b = json.loads(out.read_text())
        row["floor_p50_ms"] = b["floor"]["total"]["p50_ms"]
        row["compare_floor_p50_ms"] = b["compare"]["floor"]["total"]["p50_ms"]
        row["floor_ratio"] = b["compare"]["floor_p50_ratio"]
        row["machine"] = b["machine"]
    return row


def _f(v, fmt: str = ".3f") -> str:
    return "-" if v is None else format(v, fmt)


def markdown(rows: list[dict], a) -> str:
    head = "| center_crop | as sent: balanced | AUC | real | fakes |"
    sep = "|---|---|---|---|---|"
    if a.crop_data:
        head += " crops: balanced | AUC |"
        sep += "---|---|"
    if not a.no_latency:
        head += f" CPU floor p50 (ms) | x the {Path(a.compare_model).name} floor |"
        sep += "---|---|"
    lines = [head, sep]
    for r in rows:
        s = r["as_sent"]
        cells = [str(r["center_crop"] or "all (256)"), *(_f(s[k]) for k in HEADLINE)]
        if a.crop_data:
            cells += [_f(r["crops"]["balanced_accuracy"]), _f(r["crops"]["roc_auc"])]
        if not a.no_latency:
            cells += [_f(r["floor_p50_ms"], ".1f"), _f(r["floor_ratio"], ".2f")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(REPO / "mining_models" / "base.pth"))
    ap.add_argument("--compare-model", dest="compare_model", default=str(REPO / "mining_models" / "npr_f2.pth"),
                    help="the floor the serving target is measured against")
    ap.add_argument("--data", nargs="+", required=True, help="ready-made validator challenges (sn34-validator), scored as sent")
    ap.add_argument("--crop_data", nargs="*", default=[], help="crop pools, scored through the seeded validator pipeline")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0], help="challenge draws of the crop pools")
    ap.add_argument("--crops", type=int, nargs="+", default=[0, 192, 160], help="center_crop sizes (0: the whole picture)")
    ap.add_argument("--requests", type=int, default=200, help="floor requests per model")
    ap.add_argument("--floor-rounds", dest="floor_rounds", type=int, default=4)
    ap.add_argument("--compile", action="store_true", help="time the torch.compile'd serve (--neuron.compile)")
    ap.add_argument("--no-latency", dest="no_latency", action="store_true", help="accuracy only")
    ap.add_argument("--keep", type=int, default=None, help="also write the copy with this center_crop beside --model")
    ap.add_argument("--out", type=report_path, default=str(HERE / "results" / "serve_crop.json"))
    a = ap.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bitmind-serve-crop-") as tmp:
        for size in a.crops:
            copy = cropped_copy(a.model, size, Path(tmp) / f"crop{size}.pth")
            print(f"center_crop {size or 'none'}: measuring", flush=True)
            rows.append(measure(copy, size, a, Path(tmp)))
            print("  " + json.dumps({k: v for k, v in rows[-1].items() if k != "machine"}), flush=True)
    result = {"model": a.model, "compare_model": a.compare_model, "data": a.data, "crop_data": a.crop_data,
              "seeds": a.seeds, "calibration": "the model's own (fitted on the whole picture), not re-fitted", "rows": rows}
    if a.keep is not None:
        kept = Path(a.model).with_name(f"{Path(a.model).stem}_crop{a.keep}.pth")
        cropped_copy(a.model, a.keep, kept)
        result["kept"] = str(kept)
        print(f"wrote {kept}")
    md = markdown(rows, a)
    md_path = write_report(a.out, result, md, indent=1, trailing_newline=True)
    print(md + f"\nwrote {Path(a.out)} and {md_path}")
    return result


if __name__ == "__main__":
    main()
