#!/usr/bin/env python3
"""Every figure in ``docs/figures``, and the command that draws it.

Why: a figure in the docs is a claim; a reader (or the next session) must be able to see
where it came from and draw it again. Most are drawn in seconds from what the repository
holds (the raw LOGO scores and result JSONs in ``benchmarks/results``); a few need the data
folders and model files, or the folder of a training run that is not committed. This
registry names each figure's script and arguments, ``make`` redraws it, and ``check``
redraws it into a scratch folder and compares the numbers written beside it with the
committed result (and says whether the picture is pixel-identical), so a command here is
the one that made the figure, not a guess.

    python benchmarks/figures.py list                  # each figure: script, kind, inputs present?
    python benchmarks/figures.py make                  # redraw every figure the repository can (into docs/figures)
    python benchmarks/figures.py make generalisation_fixed_s1_135 --out_dir /tmp/figs
    python benchmarks/figures.py check                 # redraw into a scratch folder, compare with benchmarks/results
    python benchmarks/figures.py make accuracy_by_crop --data_root ../shared/data   # a figure drawn from data

Kinds: ``results`` (from committed files only), ``data`` (from the data folders under
``--data_root`` and the committed model files; note that a model file may have changed since
the figure was drawn: the figure's JSON names what it scored), ``run`` (from a training run's
folder, named in the entry; not redrawable from a clean checkout). A test keeps every figure in
``docs/figures`` in this registry and every entry's committed inputs present.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIGURES_DIR = REPO / "docs" / "figures"
R = "benchmarks/results"


@dataclass(frozen=True)
class Figure:
    """One figure: ``script`` run from the repository root with ``args``, in which ``{fig}``
    is the figure's path, ``{out}`` the JSON the script writes beside it (``result``, the
    committed one, is what ``check`` compares it with, on the keys ``compare``) and
    ``{data}`` the data root. ``kind`` says what it needs (module docstring)."""

    script: str
    args: tuple[str, ...]
    result: str
    compare: tuple[str, ...]
    kind: str = "results"
    note: str = ""
    inputs: tuple[str, ...] = ()

    def committed_inputs(self) -> list[str]:
        """The repository files the command reads (every ``benchmarks/results`` or
        ``mining_models`` file among its arguments, ``=``/``:`` forms included, and
        ``inputs`` for what the arguments name only by a prefix)."""
        found = []
        for a in self.args:
            for part in a.replace("=", " ").replace(":", " ").split():
                if part.startswith((f"{R}/", "mining_models/")) and Path(part).suffix and part != self.result:
                    found.append(part)
        return list(dict.fromkeys([*found, *self.inputs]))


def logo_heat_map(stem: str, recipe: str | None = "patch96nopool", ensembles: tuple[str, ...] = (),
                  baselines: tuple[str, ...] = ()) -> Figure:
    """A LOGO run's heat map: ``generalisation.py analyse`` on its committed scores and spec."""
    args = ["analyse", "--sweep", ".", "--logo_spec", f"{R}/{stem}_spec.json", "--scores", f"{R}/{stem}_scores.npz"]
    if recipe:
        args += ["--recipe", recipe]
    if ensembles:
        args += ["--ensemble", *ensembles]
    if baselines:
        args += ["--baseline", *baselines]
    return Figure("benchmarks/generalisation.py", (*args, "--out", "{out}", "--figure", "{fig}"), f"{R}/{stem}.json",
                  ("summary", "regimes"))


BASELINES_SD1X = ("base_sd1x=mining_models/base_sd1x.pth:fake/sd1x", "npr_f2=mining_models/npr_f2.pth:fake/sd1x")
CAMERAS = ("--cameras", f"{R}/generalisation_cameras_scores.npz", f"{R}/generalisation_cameras_spec.json")
LENGTH_ARMS = tuple(f"{label}={R}/{stem}.json:{arm}" for label, stem, arm in [
    ("patch96nopool", "generalisation", "patch96nopool"), ("patch96nopool", "generalisation_controls", "patch96nopool"),
    ("patch96nopool", "generalisation_capacity", "patch96nopool"), ("patch96nopool", "generalisation_noise", "plain_s0"),
    ("patch96nopool", "generalisation_noise", "plain_s1"), ("patch96nopool", "generalisation_norm", "mean_s0"),
    ("patch96nopool", "generalisation_norm", "mean_s1"), ("patch96nopool", "generalisation_topk", "mean_s0"),
    ("patch96nopool", "generalisation_topk", "mean_s1"), ("patch96nopool", "generalisation_synth", "nosynth"),
    ("patch96nopool", "generalisation_periodic", "patch96nopool"), ("patch96nopool", "generalisation_pairpatch", "patch96nopool"),
    ("patch96nopool", "generalisation_long", "patch96nopool"), ("patch96nopool", "generalisation_long_s1", "patch96nopool"),
    ("patch96nopool", "generalisation_longer", "patch96nopool"), ("patch96nopool", "generalisation_longer_s1", "patch96nopool"),
    ("patch96nopool_fixedpipe", "generalisation_fixed_s0", "patch96nopool"),
    ("patch96nopool_fixedpipe", "generalisation_fixed_s1", "patch96nopool"),
    ("patch96nopool_fixedpipe", "generalisation_fixed_s0_78", "patch96nopool"),
    ("patch96nopool_fixedpipe", "generalisation_fixed_s1_135", "patch96nopool"),
    ("patch96nopool_fixedpipe", "generalisation_aux_s1_patch96nopool", "patch96nopool"),
    ("patch96nopool_fixedpipe", "generalisation_swa_s1_patch96nopool", "patch96nopool"),
    ("layer3", "generalisation_capacity", "layer3"), ("layer3", "generalisation_norm", "layer3_s0"),
    ("layer3", "generalisation_long", "layer3"), ("periodic", "generalisation_periodic", "periodic"),
    ("shuffle32", "generalisation_long_s1", "shuffle32"), ("patch48nopool", "generalisation_patch48", "patch48nopool"),
    ("pairpatch", "generalisation_pairpatch", "pairpatch")])
MINIGAN = f"{R}/residual_logo_paired_minigan_cpu"

FIGURES: dict[str, Figure] = {
    # LOGO heat maps, one per run (docs/Generalisation.md and its record)
    "generalisation": logo_heat_map("generalisation", ensembles=("ens3=patch96+full256+patch96nopool", "ens2=full256+patch96nopool"),
                                    baselines=BASELINES_SD1X),
    "generalisation_controls": logo_heat_map(
        "generalisation_controls", ensembles=("npr+rgb=patch96nopool+rgbpatch96", "npr+rgbnopool=patch96nopool+rgbpatch96nopool"),
        baselines=BASELINES_SD1X),
    "generalisation_cameras": logo_heat_map("generalisation_cameras", recipe=None),
    "generalisation_capacity": logo_heat_map("generalisation_capacity", baselines=BASELINES_SD1X),
    "generalisation_noise": logo_heat_map("generalisation_noise", recipe="plain_s0",
                                          ensembles=("plain2=plain_s0+plain_s1", "seeds4=plain_s0+plain_s1+noise_s0+noise_s1")),
    "generalisation_topk": logo_heat_map("generalisation_topk", recipe="mean_s0"),
    "generalisation_norm": logo_heat_map("generalisation_norm", recipe="mean_s0"),
    "generalisation_synth": logo_heat_map("generalisation_synth", recipe="nosynth"),
    "generalisation_long": logo_heat_map("generalisation_long", ensembles=("pair=patch96nopool+layer3",)),
    "generalisation_periodic": logo_heat_map("generalisation_periodic"),
    "generalisation_long_s1": logo_heat_map("generalisation_long_s1"),
    "generalisation_longer": logo_heat_map("generalisation_longer"),
    "generalisation_longer_s1": logo_heat_map("generalisation_longer_s1"),
    "generalisation_fixed_s1": logo_heat_map("generalisation_fixed_s1"),
    "generalisation_fixed_s0_78": logo_heat_map("generalisation_fixed_s0_78"),
    "generalisation_fixed_s1_135": logo_heat_map("generalisation_fixed_s1_135"),
    "generalisation_minigan_s1": logo_heat_map("generalisation_minigan_s1"),
    "generalisation_minigan_nearest_s1": logo_heat_map("generalisation_minigan_nearest_s1"),
    "generalisation_minigan_share_s1": logo_heat_map("generalisation_minigan_share_s1"),
    "generalisation_aux01_s1": logo_heat_map("generalisation_aux01_s1", recipe="patch96aux01"),
    "generalisation_freqmask_s1": logo_heat_map("generalisation_freqmask_s1", recipe="patch96aux01fm"),
    "generalisation_cutmix_oc_s1": logo_heat_map("generalisation_cutmix_oc_s1", recipe="patch96aux01cm"),
    "generalisation_history_s1": logo_heat_map("generalisation_history_s1", recipe="patch96aux01h"),
    "generalisation_auxby_s1": logo_heat_map("generalisation_auxby_s1", recipe="patch96aux01g"),
    "generalisation_aux01_s0_52": logo_heat_map("generalisation_aux01_s0_52", recipe="patch96aux01"),
    "generalisation_aux01_s2_34": logo_heat_map("generalisation_aux01_s2_34", recipe="patch96aux01"),
    "generalisation_auxsh_s0_52": logo_heat_map("generalisation_auxsh_s0_52", recipe="patch96aux01sh"),
    "generalisation_auxsh_s1": logo_heat_map("generalisation_auxsh_s1", recipe="patch96aux01sh"),
    "pooling_npr_f2": logo_heat_map("pooling_npr_f2", recipe=None, baselines=(
        "npr_f2=mining_models/npr_f2.pth:fake/sd1x", "npr_f2_top5=mining_models/npr_f2.pth:fake/sd1x",
        "npr_f2_top25=mining_models/npr_f2.pth:fake/sd1x")),
    # across runs
    "logo_by_length": Figure("benchmarks/logo_by_length.py", (
        *LENGTH_ARMS, "--ran", "generalisation=15", "generalisation_controls=15", "generalisation_capacity=10",
        "generalisation_aux_s1_patch96nopool=52", "generalisation_swa_s1_patch96nopool=77",
        "--longer_from", "60", "--out", "{out}", "--figure", "{fig}"), f"{R}/logo_by_length.json", ("rows", "groups")),
    "threshold_logo": Figure("benchmarks/threshold_logo.py", (
        "--scores", f"{R}/generalisation_controls_scores.npz", "--logo_spec", f"{R}/generalisation_controls_spec.json",
        "--arm", "patch96nopool", "patch96nopool.nochal", "rgbpatch96", *CAMERAS, "--out", "{out}", "--figure", "{fig}"),
        f"{R}/threshold_logo.json", ("arms", "cameras")),
    "minigan_designs": Figure("benchmarks/minigan_designs.py", (
        "--arm", f"transposed 1k={MINIGAN}", f"transposed 2k={MINIGAN}_t2k", f"nearest={MINIGAN}_n1k",
        f"nearest, 2nd seed={MINIGAN}_nearestb", f"nearest 2k={MINIGAN}_n2k", f"blur={MINIGAN}_blur",
        f"bilinear={MINIGAN}_bilinear", f"shuffle={MINIGAN}_shuffle", f"two nearest={MINIGAN}_twonearest",
        f"nearest + transposed 2k={MINIGAN}_both", f"nearest + transposed 2k + shuffle={MINIGAN}_three",
        "--out", "{out}", "--figure", "{fig}"), f"{R}/minigan_designs.json", ("arms",),
        inputs=tuple(f"{MINIGAN}{s}{end}" for s in ("", "_t2k", "_n1k", "_nearestb", "_n2k", "_blur", "_bilinear", "_shuffle",
                                                    "_twonearest", "_both", "_three") for end in (".json", "_by_source.json"))),
    # from data and model files
    "accuracy_by_crop": Figure("benchmarks/accuracy_by_crop.py", (
        "--data", "{data}/sn34-mini", "--models", "mining_models/base_sd1x.pth", "mining_models/npr_f2.pth",
        "--out", "{out}", "--figure", "{fig}"), f"{R}/accuracy_by_crop.json", ("bins", "overall"), kind="data",
        note="scores two model files on the sn34-mini test split under --data_root (about 7 CPU minutes)"),
    # from a training run's folder, not committed
    "learning_curve": Figure("benchmarks/learning_curve.py", (
        "--sweep", "base_miner/checkpoints/sweep_learning_curve", "--data", "{data}/sn34-mini", "--out", "{out}",
        "--figure", "{fig}"), f"{R}/learning_curve.json", ("rows",), kind="run",
        note="needs the sweep folder of base_miner/NPR/sweeps/learning_curve.json (one GPU run, not committed)"),
    "sweep_final_curves": Figure("bitmind/training/loop.py", (), "", (), kind="run",
                                 note="the training curves plot_curves draws into every training run's folder "
                                      "(curves.png), here of the sweep of base_miner/NPR/sweeps/final.json"),
}


def fill(fig: Figure, name: str, fig_dir: Path, out_dir: Path, data_root: str) -> list[str]:
    subs = {"fig": str(fig_dir / f"{name}.png"), "out": str(out_dir / f"{name}.json"), "data": data_root}
    return [a.format(**subs) for a in fig.args]


def missing_inputs(fig: Figure) -> list[str]:
    return [p for p in fig.committed_inputs() if not (REPO / p).exists()]


def redrawable(fig: Figure, data_root: str | None) -> bool:
    return fig.kind == "results" or (fig.kind == "data" and data_root is not None)


def draw(name: str, fig_dir: Path, out_dir: Path, data_root: str | None) -> subprocess.CompletedProcess:
    """Run ``name``'s script. Models are scored in fp32 (``BITMIND_CPU_BF16=0``), as every
    committed result was: on a CPU that computes bf16 the serving forward may pick bf16,
    which moves accuracies by up to a few hundredths and would not reproduce the figure."""
    fig = FIGURES[name]
    cmd = [sys.executable, str(REPO / fig.script), *fill(fig, name, fig_dir, out_dir, data_root or "")]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env={**os.environ, "BITMIND_CPU_BF16": "0"})


def compare(fig: Figure, made: Path) -> list[str]:
    """The keys of ``fig.compare`` on which the redrawn JSON differs from the committed one."""
    old, new = json.loads((REPO / fig.result).read_text()), json.loads(made.read_text())
    return [k for k in fig.compare if _rounded(old.get(k)) != _rounded(new.get(k))]


def pixels_differ(committed: Path, drawn: Path) -> str:
    """How the redrawn picture compares with the committed one, pixel by pixel. Said, not
    judged: fonts and matplotlib versions move pixels without changing a number."""
    import numpy as np
    from PIL import Image

    a, b = (np.asarray(Image.open(p).convert("RGB"), dtype=np.int16) for p in (committed, drawn))
    if a.shape != b.shape:
        return f"of another size ({a.shape[1]}x{a.shape[0]} committed, {b.shape[1]}x{b.shape[0]} drawn)"
    share = float((np.abs(a - b).sum(axis=-1) > 0).mean())
    return "identical" if share == 0 else f"{share:.1%} of pixels differ"


def _rounded(v, digits: int = 9):
    if isinstance(v, float):
        return "nan" if v != v else round(v, digits)  # an empty bin's NaN equals itself here
    if isinstance(v, dict):
        return {k: _rounded(x, digits) for k, x in v.items()}
    if isinstance(v, list):
        return [_rounded(x, digits) for x in v]
    return v


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=["list", "make", "check"])
    p.add_argument("names", nargs="*", help="figures (file stems in docs/figures); default: every one that can be redrawn")
    p.add_argument("--out_dir", default=None, help="make: where the figures go (default docs/figures); the JSONs go "
                                                   "to a scratch folder, so committed results are never overwritten")
    p.add_argument("--data_root", default=None, help="the folder holding sn34-mini etc. (figures of kind 'data')")
    args = p.parse_args(argv)
    # the scripts run from the repository root: paths given relative to the caller's folder
    args.out_dir = str(Path(args.out_dir).resolve()) if args.out_dir else None
    args.data_root = str(Path(args.data_root).resolve()) if args.data_root else None
    unknown = [n for n in args.names if n not in FIGURES]
    if unknown:
        p.error(f"unknown figures {unknown}; known: {', '.join(sorted(FIGURES))}")
    if args.command == "list":
        for name, fig in sorted(FIGURES.items()):
            miss = missing_inputs(fig)
            state = f"MISSING {', '.join(miss)}" if miss else "inputs present"
            print(f"{name:30s} {fig.kind:8s} {fig.script:34s} {state}" + (f"  ({fig.note})" if fig.note else ""))
        return 0
    names = args.names or [n for n, f in sorted(FIGURES.items()) if redrawable(f, args.data_root)]
    failed = 0
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        fig_dir = scratch if args.command == "check" else Path(args.out_dir or FIGURES_DIR)
        fig_dir.mkdir(parents=True, exist_ok=True)
        for name in names:
            fig = FIGURES[name]
            if not redrawable(fig, args.data_root):
                print(f"{name}: not redrawable here ({fig.kind}: {fig.note or 'needs --data_root'})")
                failed += 1
                continue
            res = draw(name, fig_dir, scratch, args.data_root)
            if res.returncode != 0:
                print(f"{name}: FAILED\n{res.stdout[-1500:]}{res.stderr[-1500:]}")
                failed += 1
                continue
            if args.command == "make":
                print(f"{name}: wrote {fig_dir / (name + '.png')}")
                continue
            diff = compare(fig, scratch / f"{name}.json")
            print(f"{name}: " + ("matches " + fig.result if not diff else f"DIFFERS from {fig.result} on {diff}")
                  + f"; picture {pixels_differ(FIGURES_DIR / f'{name}.png', fig_dir / f'{name}.png')}")
            failed += bool(diff)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
