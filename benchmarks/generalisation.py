"""Leave-one-family-out generalisation benchmark (see ``bitmind/training/logo.py`` and docs/Generalisation.md).

    # everything (GPU: a few minutes per 10 variants x epoch budget; CPU works on tiny data)
    python benchmarks/generalisation.py all --spec base_miner/NPR/sweeps/logo.json \\
        --data ../shared/data/sn34-mini ../shared/data/sn34-wide --challenge_data ../shared/data/sn34-validator \\
        --baseline base_sd1x=mining_models/base_sd1x.pth:fake/sd1x --name logo

    # the committed figures, from the committed scores of the last GPU run (CPU, seconds):
    python benchmarks/generalisation.py analyse --sweep . --logo_spec benchmarks/results/generalisation_spec.json \
        --scores benchmarks/results/generalisation_scores.npz --recipe patch96nopool \
        --ensemble ens3=patch96+full256+patch96nopool ens2=full256+patch96nopool \
        --markdown benchmarks/results/generalisation_tables.md \
        --baseline base_sd1x=mining_models/base_sd1x.pth:fake/sd1x npr_f2=mining_models/npr_f2.pth:fake/sd1x

    # or step by step: train (the sweep), score (every checkpoint on both regimes), analyse (CPU)
    python benchmarks/generalisation.py train   --spec ... --data ... --challenge_data ... --name logo
    python benchmarks/generalisation.py score   --sweep base_miner/checkpoints/logo --data ... --challenge_data ...
    python benchmarks/generalisation.py analyse --sweep base_miner/checkpoints/logo

    # several runs of one recipe (seeds, augmentations: each its own data stream) as arms
    # of one scores file, then analysed (and read by threshold_logo.py) like one run:
    python benchmarks/generalisation.py merge --runs plain_s0=RUN_A:patch96nopool noise_s0=RUN_B:patch96nopool \
        --scores merged_scores.npz --logo_spec merged_spec.json

``analyse`` writes ``benchmarks/results/generalisation.json`` (per regime, per fold, per
source; a top-level ``summary`` per recipe with ``mean_heldout_detection``,
``worst_heldout_detection`` and ``real_accuracy``) and ``docs/figures/generalisation.png``
(held-out detection per family and recipe, both regimes). Those two defaults are the
committed files, and only a run that names neither ``--out`` nor ``--figure`` rewrites them:
with ``--out`` alone the figure goes beside the JSON (same stem, ``.png``); ``--figure ""``
writes none.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

from bitmind.shutdown import exit_interrupted, exit_interrupted_while_starting, file_marks, sigterm_as_interrupt, written_since

try:  # the imports take seconds (torch): a Ctrl-C here is the start-up's
    import numpy as np

    from bitmind.models.npr import check_center_crop, top_fraction
    from bitmind.training.logo import (REAL_FOLD_PREFIX, REGIMES, analyse, load_spec, logo_run_spec, parse_ensembles,
                                      pooled_name, save_scores, score_models, select_recipe, ship, unpooled, view_of)
except KeyboardInterrupt:
    if __name__ != "__main__":  # imported (a test): the importer's Ctrl-C
        raise
    exit_interrupted_while_starting()

REPO = Path(__file__).resolve().parents[1]
#: Data-loading workers of ``score`` when ``--workers`` is left out (0: in the main process).
SCORE_WORKERS = 4


def write_spec(path: str | Path, spec: dict) -> Path:
    """A ``logo_spec.json`` written whole (``atomic_write_text``): a crash or a Ctrl-C mid-write
    leaves the old one as it was, never a truncated one for ``analyse`` or ``--resume`` to read."""
    from bitmind.common import atomic_write_text

    return atomic_write_text(path, json.dumps(spec, indent=2))


def analyse_paths(out: str | None, figure: str | None) -> tuple[Path, Path | None]:
    """Where ``analyse`` writes its JSON and its heat map (None: no figure). Left out,
    ``--out`` is the committed ``benchmarks/results/generalisation.json``; ``--figure`` left
    out goes beside ``--out`` (same stem, ``.png``) when ``--out`` is given, and to the committed
    ``docs/figures/generalisation.png`` only when both are left out; ``""`` means no figure."""
    out_path = Path(out) if out is not None else REPO / "benchmarks" / "results" / "generalisation.json"
    if figure is None:
        fig_path = REPO / "docs" / "figures" / "generalisation.png" if out is None else out_path.with_suffix(".png")
    else:
        fig_path = Path(figure) if figure else None
    return out_path, fig_path


def _baselines(items: list[str]) -> tuple[dict[str, str], dict[str, list[str]]]:
    """``name=path[:fake/src,fake/src]`` -> ({name: path}, {name: trained fake sources})."""
    paths, trained = {}, {}
    for it in items or []:
        name, _, rest = it.partition("=")
        path, _, srcs = rest.partition(":")
        if not name or not path:
            raise SystemExit(f"--baseline wants NAME=PATH[:fake/src,...], got {it!r}")
        paths[name], trained[name] = path, [s for s in srcs.split(",") if s]
    return paths, trained


def cmd_train(args, logo=None) -> Path:
    """Train the sweep of the LOGO spec ``logo`` (the JSON of ``--spec``, as ``main`` read it once
    for the sweep folder too; left out, read here)."""
    from bitmind.training.logo import check_logo_keys
    from bitmind.training.run_folder import SWEEP, finished_sweep, prepare_sweep_folder, settle_earlier_run
    from bitmind.training.sweep import ConfigError, SpecError, SweepSpec, exit_if_stopped, read_spec, run_sweep

    if logo is None:
        logo = read_spec(args.spec)  # a SpecError (one line) for a file that cannot be read or is not JSON
    if not isinstance(logo, dict):
        raise SpecError(f"a LOGO spec is a JSON object, got {type(logo).__name__}")
    check_logo_keys(logo)  # a typo'd top-level key (val_seed), before the data roots are read
    keys = ("data", "challenge_data", "train_data", "epochs", "device", "workers", "checkpoints_dir",
            "max_steps_per_epoch", "samples_per_epoch", "overwrite", "resume")
    try:
        sweep = logo_run_spec(logo, args.name, seed=args.train_seed, **{k: getattr(args, k, None) for k in keys})
        spec = SweepSpec.from_dict(sweep)
        spec.check()  # every option value, before the sweep folder or its logo_spec.json is written
    except SpecError:
        raise
    except (ConfigError, OSError) as e:  # an option value no run can use (TrainConfig.check), a LOGO block it
        raise SpecError(str(e)) from None  # cannot build, a data root that is not a readable folder (its sources are read here)
    run_dir = spec.base.run_dir
    settle_earlier_run(run_dir, SWEEP)  # what a killed --overwrite sweep left, before the folder is judged
    prepare_sweep_folder(run_dir, spec.base.overwrite, spec.base.resume)
    print(f"LOGO sweep: {len(sweep['variants'])} variants, folds {sweep['logo']['folds']}", flush=True)
    finished = spec.base.resume and finished_sweep(run_dir) is not None
    # logo_spec.json is written as the sweep starts, once the data is read and an --overwrite's earlier sweep is set
    # aside with its own (put back with it if this one ends before saving an epoch); a resumed sweep keeps its own
    summary = run_sweep(spec, beside=None if spec.base.resume else {"logo_spec.json": json.dumps(sweep, indent=2)})
    # (a finished sweep resumed trains nothing: its logo_spec.json stays as it ran; an --overwrite sweep that saved no
    # epoch left the earlier sweep, and its logo_spec.json, as they were)
    if not finished and not summary.get("earlier_sweep_kept"):
        # what actually ran (a time budget can cut the epochs) goes beside what was asked for
        sweep["ran"] = {k: summary[k] for k in ("epochs", "seconds", "val_from", "stopped", "epochs_run") if k in summary}
        write_spec(run_dir / "logo_spec.json", sweep)
    exit_if_stopped(summary)  # a stopped sweep is not scored: exit 130 (Ctrl-C, resumable) or 1
    return run_dir


def cmd_score(args) -> Path:
    sweep_dir = Path(args.sweep)
    spec = json.loads((sweep_dir / "logo_spec.json").read_text()) if (sweep_dir / "logo_spec.json").exists() else load_spec(sweep_dir)
    models = {v: str(sweep_dir / v / "model_epoch_best.pth") for v in spec["variants"]
              if (sweep_dir / v / "model_epoch_best.pth").exists()}
    paths, _ = _baselines(args.baseline)
    models.update(paths)
    base = spec.get("base", {})
    regimes = {"validator": args.challenge_data or base.get("challenge_data", []),
               "crops": args.data or base.get("data", [])}
    out = Path(args.scores or sweep_dir / "logo_scores.npz")
    workers = SCORE_WORKERS if args.workers is None else args.workers  # --workers 0: in the main process
    path = score_models(models, regimes, out, device=args.device or "auto", seed=args.seed, workers=workers,
                        pools=args.pools)
    if args.pools and (sweep_dir / "logo_spec.json").exists():  # the pooled arms join the run's spec, folds and all
        trained = {v: d for v, d in spec["variants"].items() if v in models}
        for pool in args.pools:
            spec["variants"].update({pooled_name(v, pool): dict(d) for v, d in trained.items()})
        recipes = spec["logo"]["recipes"]
        spec["logo"]["recipes"] = list(dict.fromkeys(recipes + [f"{r}_{p}" for p in args.pools for r in recipes if r in trained]))
        write_spec(sweep_dir / "logo_spec.json", spec)
    return path


def plot(result: dict, path: Path) -> None:
    """The heat map of ``result`` as ``path``, written whole (``atomic_write``: a temporary file
    beside it, then renamed over it), so a crash or a Ctrl-C mid-write leaves the old figure as
    it was, never a truncated one. The format comes from ``path``'s suffix as ``savefig`` would
    take it (``savefig.format`` without one): the temporary file's name ends in ``.tmp``."""
    import matplotlib

    from bitmind.common import atomic_write
    from bitmind.plots import new_figure

    regimes = [r for r in REGIMES if r in result["regimes"]]
    fig, axes = new_figure(ncols=len(regimes), size=(6.5, 4.8))
    for ax, regime in zip(axes, regimes):
        reg = result["regimes"][regime]
        arms = {**reg["folds"], **{f"baseline:{k}": v for k, v in reg["baselines"].items()}}
        fams = sorted({f for per in arms.values() for f in per})
        cols = list(arms)
        m = np.full((len(fams), len(cols)), np.nan)
        for j, arm in enumerate(cols):
            for i, fam in enumerate(fams):
                r = arms[arm].get(fam)
                if r and _heldout_right(r) is not None:
                    m[i, j] = _heldout_right(r)
        im = ax.imshow(m, vmin=0, vmax=1, cmap="RdYlGn", aspect="auto")
        for i in range(len(fams)):
            for j in range(len(cols)):
                if not np.isnan(m[i, j]):
                    ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=8)
        real = [result["summary"]["arms"].get(arm, {}).get(regime, {}).get("real_accuracy") for arm in cols]
        ax.set_xticks(range(len(cols)), [f"{c}\nreal {r:.2f}" if r is not None else c for c, r in zip(cols, real)],
                      rotation=30, ha="right", fontsize=8)
        ax.set_yticks(range(len(fams)), [f"{f} (kept real)" if f.startswith(REAL_FOLD_PREFIX) else f for f in fams],
                      fontsize=9)
        ax.set_title(f"held-out family detection ({regime})", fontsize=10)
        fig.colorbar(im, ax=ax, fraction=0.04)
    fmt = os.path.splitext(path)[1][1:] or matplotlib.rcParams["savefig.format"]
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format=fmt))


def _f(v, pct: bool = False) -> str:
    return "–" if v is None else f"{v:.3f}"


def _heldout_right(r: dict) -> float | None:
    """The share of a fold's held-out pictures answered right: fakes detected, or for a
    ``real-<kind>`` fold, photos of the unseen kind called real."""
    return r["heldout_detection"] if r.get("heldout_real_accuracy") is None else r["heldout_real_accuracy"]


def markdown_tables(result: dict) -> str:
    """The tables docs/Generalisation.md and docs/Model.md quote, from the analysis JSON."""
    lines = []
    for regime in REGIMES:
        reg = result["regimes"].get(regime)
        if not reg:
            continue
        arms = {**reg["folds"], **{f"baseline:{k}": v for k, v in reg["baselines"].items()}}
        fams = sorted({f for per in arms.values() for f in per})
        lines += [f"### Held-out family detection, {regime} regime", "",
                  "| held-out family | " + " | ".join(arms) + " |", "|---|" + "---|" * len(arms)]
        for fam in fams:
            cells = []
            for per in arms.values():
                r = per.get(fam)
                cells.append("–" if not r else f"{_f(_heldout_right(r))} (AUC {_f(r['heldout_auc'])}, real {_f(r['real_accuracy'])})")
            lines.append(f"| {fam}{' (share kept real)' if fam.startswith(REAL_FOLD_PREFIX) else ''} | " + " | ".join(cells) + " |")
        summ = result["summary"]["arms"]
        lines.append("| **mean / worst detection, real acc.** | " + " | ".join(
            f"**{_f(summ[a][regime]['mean_heldout_detection'])} / {_f(summ[a][regime]['worst_heldout_detection'])}, "
            f"{_f(summ[a][regime]['real_accuracy'])}**" for a in arms) + " |")
        if any("mean_unseen_real_accuracy" in summ[a][regime] for a in arms):
            lines.append("| **unseen real kinds: mean / worst kept real** | " + " | ".join(
                f"**{_f(summ[a][regime].get('mean_unseen_real_accuracy'))} / "
                f"{_f(summ[a][regime].get('worst_unseen_real_accuracy'))}**" for a in arms) + " |")
        lines.append("")
        pool = reg["in_pool"]
        lines += [f"### Test split, {regime} regime (models trained on every family; per source)", "",
                  "| source | " + " | ".join(pool) + " |", "|---|" + "---|" * len(pool)]
        srcs = sorted({s for r in pool.values() for s in list(r["per_real_kind"]) + list(r["per_seen_fake_source"])})
        for src in srcs:
            cells = [_f(r["per_real_kind"].get(src, r["per_seen_fake_source"].get(src))) for r in pool.values()]
            lines.append(f"| {src} | " + " | ".join(cells) + " |")
        for key, label in (("real_accuracy", "real photos"), ("test_fake_detection", "fakes"),
                           ("test_balanced_accuracy", "balanced"), ("test_auc", "ROC AUC")):
            lines.append(f"| **{label}** | " + " | ".join(f"**{_f(r[key])}**" for r in pool.values()) + " |")
        lines.append("")
    return "\n".join(lines)


def cmd_analyse(args) -> dict:
    """Analyse a scored sweep. Its JSON, figure and Markdown tables are each written whole
    (``atomic_write_text``, ``plot``): a crash or a Ctrl-C mid-write leaves the old file as it
    was, never a truncated one for the docs or ``threshold_logo.py`` to read."""
    from bitmind.common import atomic_write_text

    sweep_dir = Path(args.sweep)
    spec = json.loads(Path(args.logo_spec or sweep_dir / "logo_spec.json").read_text())
    _, trained = _baselines(args.baseline)
    result = analyse(args.scores or sweep_dir / "logo_scores.npz", spec, trained, args.ensembles)
    arms = result.pop("summary")
    chosen = select_recipe(arms) if not args.recipe else {"recipe": args.recipe, "regime": "validator",
                                                           "rule": "named with --recipe", **arms[args.recipe]["validator"]}
    result["summary"] = {**chosen, "arms": arms}
    result["spec"] = {"folds": spec["logo"]["folds"], "recipes": spec["logo"]["recipes"], "controls": spec["logo"]["controls"],
                      "epochs": spec["base"].get("epochs"), "variants": {k: v for k, v in spec["variants"].items()}}
    out, figure = analyse_paths(args.out, args.figure)
    atomic_write_text(out, json.dumps(result, indent=2))
    if figure is not None:  # --figure "" (as threshold_logo.py takes it): no figure
        plot(result, figure)
    if args.markdown:
        atomic_write_text(args.markdown, markdown_tables(result) + "\n")
    print(f"{'arm':<40} {'regime':<10} {'mean det':>8} {'worst':>6} {'det@r90':>7} {'AUC':>5} {'real':>5} {'worst real':>10}")
    for arm, per in result["summary"]["arms"].items():
        for regime, s in per.items():
            f = lambda v: "  -  " if v is None else f"{v:.3f}"  # noqa: E731
            print(f"{arm:<40} {regime:<10} {f(s['mean_heldout_detection']):>8} {f(s['worst_heldout_detection']):>6} "
                  f"{f(s['mean_heldout_detection_at_real90']):>7} {f(s['mean_heldout_auc']):>5} {f(s['real_accuracy']):>5} "
                  f"{f(s['worst_real_kind']):>10}"
                  + (f"  unseen real kinds kept {f(s['mean_unseen_real_accuracy'])} (worst {f(s['worst_unseen_real_accuracy'])})"
                     if "mean_unseen_real_accuracy" in s else ""))
    print(f"selected recipe: {result['summary']['recipe']} ({result['summary']['rule']})")
    print(f"wrote {out}" + (f" and {figure}" if figure is not None else ""))
    return result


def merge_runs(runs: dict[str, tuple[Path, str]]) -> tuple[dict, dict]:
    """``{arm: (sweep_dir, recipe)}`` -> (scores, spec) with each run's recipe and its folds
    renamed to ``arm``: runs that cannot share one data stream (another seed, another
    augmentation) become arms of one analysis. The runs must have scored the same pictures
    in the same order (same data, same split); anything else is refused, not misaligned."""
    data: dict[str, np.ndarray] = {}
    variants: dict[str, dict] = {}
    origin: dict[str, dict] = {}  # each arm's own run: recipe, training options (seed, augmentation), epochs run
    spec: dict | None = None
    for arm, (sweep_dir, recipe) in runs.items():
        if "." in arm:
            raise SystemExit(f"an arm name may not contain '.', got {arm!r}")
        run_spec = json.loads((Path(sweep_dir) / "logo_spec.json").read_text())
        mine = {v: d for v, d in run_spec["variants"].items() if v == recipe or v.startswith(recipe + ".minus-")}
        if recipe not in mine:
            raise SystemExit(f"{sweep_dir} has no variant {recipe!r} (it has {sorted(run_spec['variants'])})")
        spec = spec or run_spec
        with np.load(Path(sweep_dir) / "logo_scores.npz", allow_pickle=False) as z:
            for key in z.files:
                section, _, name = key.partition("/")
                if name in ("source", "split", "label"):
                    if key in data and not np.array_equal(data[key], z[key]):
                        raise SystemExit(f"{sweep_dir} scored other pictures than the runs before it ({key} differs)")
                    data[key] = z[key]
                elif name in mine:
                    data[f"{section}/{arm}{name[len(recipe):]}"] = z[key]
                elif section == "aux":  # aux/<regime>/<variant>: an auxiliary head's class probabilities
                    regime, _, variant = name.partition("/")
                    if variant in mine:
                        data[f"aux/{regime}/{arm}{variant[len(recipe):]}"] = z[key]
        variants.update({f"{arm}{v[len(recipe):]}": d for v, d in mine.items()})
        origin[arm] = {"recipe": recipe, "base": run_spec.get("base", {})}
        sweep_json = Path(sweep_dir) / "sweep.json"  # what actually ran: a time budget can cut the epochs
        if sweep_json.is_file():
            ran = json.loads(sweep_json.read_text())
            origin[arm].update({k: ran[k] for k in ("epochs", "seconds") if k in ran})
    assert spec is not None, "no runs"
    logo = {**spec["logo"], "recipes": list(runs), "controls": []}
    return data, {**spec, "variants": variants, "logo": logo, "merged_runs": origin}


def cmd_merge(args) -> None:
    runs = {}
    for it in args.runs or []:
        arm, _, rest = it.partition("=")
        sweep_dir, _, recipe = rest.rpartition(":")
        if not arm or not sweep_dir or not recipe:
            raise SystemExit(f"--runs wants ARM=SWEEP_DIR:RECIPE, got {it!r}")
        runs[arm] = (sweep_dir, recipe)
    if len(runs) < 2 or not args.scores or not args.logo_spec:
        raise SystemExit("merge needs two or more --runs ARM=SWEEP_DIR:RECIPE, --scores OUT.npz and --logo_spec OUT.json")
    data, spec = merge_runs(runs)
    save_scores(args.scores, data)
    write_spec(args.logo_spec, spec)
    print(f"wrote {args.scores} ({len(spec['variants'])} models) and {args.logo_spec}")


def cmd_ship(args) -> dict:
    """The variant trained on everything, calibrated class-balanced on the validation pictures of both regimes."""
    if not args.variant or not args.ship_out:
        raise SystemExit("ship needs --variant NAME and --ship_out PATH")
    trained, pool = unpooled(args.variant)  # a pooled arm (score --pools) ships its trained model with that pool
    if (Path(args.sweep) / args.variant).is_dir():  # a trained variant whose name only looks pooled
        trained, pool = args.variant, None
    ckpt = args.checkpoint or str(Path(args.sweep) / trained / "model_epoch_best.pth")
    rec = ship(args.scores or Path(args.sweep) / "logo_scores.npz", args.variant, ckpt, args.ship_out, args.description or "",
               real_target=args.real_target, pool=pool)
    print(f"wrote {args.ship_out}: T={rec['temperature']:.3f} b={rec['logit_bias']:+.3f} on {rec['n']} validation pictures "
          f"({', '.join(rec['regimes'])}); real {rec['val_real_accuracy_before']:.3f} -> {rec['val_real_accuracy_after']:.3f}, "
          f"fake {rec['val_fake_accuracy_before']:.3f} -> {rec['val_fake_accuracy_after']:.3f}")
    return rec


def _sweep_folder(args, logo) -> Path:
    """The folder ``train`` puts its sweep in, as ``cmd_train`` builds it: ``<checkpoints_dir>/<name>``,
    the spec's ``checkpoints_dir`` unless the command line names one. ``logo``: the spec as read
    once for both (the file read again could differ)."""
    from bitmind.training.config import DEFAULT_CHECKPOINTS_DIR

    base = logo.get("base") if isinstance(logo, dict) else None
    if not isinstance(base, dict):  # cmd_train says what is wrong with it
        base = {}
    return Path(args.checkpoints_dir or base.get("checkpoints_dir") or DEFAULT_CHECKPOINTS_DIR) / args.name


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=["train", "score", "analyse", "all", "ship", "merge"])
    p.add_argument("--spec", help="LOGO spec JSON (train, all)")
    p.add_argument("--runs", nargs="+", metavar="ARM=SWEEP_DIR:RECIPE",
                   help="merge: scored LOGO runs whose RECIPE (and its folds) become arm ARM of one scores file")
    p.add_argument("--data", nargs="+", help="crop pools (CLASS/SOURCE/*.jpg), aligned round trips included")
    p.add_argument("--challenge_data", nargs="+", help="ready-made validator challenges (sn34-validator)")
    p.add_argument("--train_data", nargs="+", help="extra training-only roots")
    p.add_argument("--name", default="logo")
    p.add_argument("--checkpoints_dir", default=None)
    p.add_argument("--sweep", help="the LOGO sweep folder (score, analyse); default <checkpoints_dir>/<name>")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--samples_per_epoch", type=int, default=None)
    p.add_argument("--max_steps_per_epoch", type=int, default=None)
    p.add_argument("--device", default=None)
    p.add_argument("--workers", type=int, default=None,
                   help=f"data-loading workers (0: in the main process); left out, the spec's for train, {SCORE_WORKERS} for score")
    p.add_argument("--overwrite", action="store_true", default=None,
                   help="train: replace the sweep already in <checkpoints_dir>/<name> (without it, or --resume, such a "
                        "folder is refused)")
    p.add_argument("--resume", action="store_true", default=None,
                   help="train: go on with the sweep in <checkpoints_dir>/<name> from its sweep_state.pt (stopped by "
                        "Ctrl-C or lost); a sweep that ran to its end is left as it is")
    p.add_argument("--seed", type=int, default=0, help="challenge draw of the crops regime")
    p.add_argument("--pools", nargs="*", default=[], metavar="topNN|cropNNN|flip",
                   help="score: also score every NPR with these views, as arms <recipe>_<view> with the same folds, "
                        "without training: topNN pools (mean of the NN %% highest location logits), cropNNN "
                        "(the central NNN px only, as center_crop serves it) and flip (the mean logit of the picture "
                        "and its mirror, as flip_mean serves it; bitmind.models.npr)")
    p.add_argument("--train_seed", type=int, default=None,
                   help="train: seed of weights, sampling and augmentation (default: the spec's); a replicate of a run")
    p.add_argument("--baseline", nargs="*", default=[], metavar="NAME=PATH[:fake/src,...]",
                   help="extra models scored per family, e.g. base_sd1x=mining_models/base_sd1x.pth:fake/sd1x (its training fakes)")
    p.add_argument("--ensemble", nargs="*", default=[], metavar="NAME=ARM+ARM",
                   help="analyse: also score the mean logit of these arms, fold by fold (no training)")
    p.add_argument("--recipe", default=None, help="the recipe the top-level summary describes (default: chosen by LOGO)")
    p.add_argument("--logo_spec", default=None, help="analyse: the sweep's logo_spec.json (default <sweep>/logo_spec.json); merge: where the merged spec goes")
    p.add_argument("--variant", default=None, help="ship: the sweep variant to ship (trained on everything)")
    p.add_argument("--checkpoint", default=None, help="ship: its checkpoint (default <sweep>/<variant>/model_epoch_best.pth)")
    p.add_argument("--ship_out", default=None, help="ship: where the calibrated model goes (e.g. mining_models/base.pth)")
    p.add_argument("--description", default=None, help="ship: a sentence stored in the model file")
    p.add_argument("--real_target", type=float, default=0.85,
                   help="ship: put the boundary where this share of the validation real photos is called real "
                        "(the shipped rule, docs/Generalisation.md); 0: the class-balanced Platt boundary")
    p.add_argument("--markdown", default=None, help="analyse: also write the per-fold and per-source tables as Markdown")
    p.add_argument("--scores", default=None, help="the scores .npz (default <sweep>/logo_scores.npz); merge: where the merged scores go")
    p.add_argument("--out", default=None,
                   help="analyse: the JSON (default: the committed benchmarks/results/generalisation.json)")
    p.add_argument("--figure", default=None,
                   help="analyse: the heat map (\"\" for none; default: beside --out, same stem, .png, when --out is "
                        "given, else the committed docs/figures/generalisation.png)")
    return p


def main(argv=None):
    """Run the command line ``argv``. A usage error exits 2 with one line; a sweep that stopped
    early exits with its status (130 after a first Ctrl-C, its state saved) before it is
    scored; a Ctrl-C that stops a command at once ends it with one line and exit status 130,
    whenever it comes, saying what is kept and how to go on."""
    try:
        p = build_parser()
        args = p.parse_args(argv)
        try:
            args.ensembles = parse_ensembles(args.ensemble)
            for pool in args.pools:
                view = view_of(pool)
                if view is None or (view[0] == "pool" and top_fraction(pool) == 1.0 and pool != "top100"):
                    raise ValueError(f"--pools takes topNN pools, cropNNN centre crops and flip, not {pool!r} "
                                     "('mean' of the whole picture is what every model is scored with anyway)")
                if view[0] == "center_crop":
                    check_center_crop(view[1])
        except ValueError as e:
            p.error(str(e))
        if args.command in ("analyse", "all"):
            out, figure = analyse_paths(args.out, args.figure)
            if figure is not None and figure.resolve() == out.resolve():
                p.error(f"--out {out} would be overwritten by the figure: give --out a .json name, or --figure another path")
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    except KeyboardInterrupt:
        exit_interrupted_while_starting()
    step = args.command  # what a Ctrl-C stops (train and score say more)
    try:
        if args.command == "merge":
            return cmd_merge(args)
        if args.command in ("train", "all"):
            if not args.spec:
                p.error("--spec is required for train/all")
            if args.resume and args.overwrite:
                p.error("--resume continues the sweep in the folder, --overwrite replaces it: pass one of them")
            from bitmind.training.run_folder import RunFolderError
            from bitmind.training.sweep import SpecError, interrupted_sweep_message, read_spec, sweep_marks
            from bitmind.training.trainer import TrainingDataError

            try:  # read once, for the sweep folder and the sweep
                logo = read_spec(args.spec)  # a SpecError (one line) for a file that cannot be read or is not JSON
            except SpecError as e:
                p.error(str(e))
            sweep_dir = _sweep_folder(args, logo)
            before = sweep_marks(sweep_dir)
            try:
                # SIGTERM (timeout, docker stop) as Ctrl-C from here on: one while the data is read and indexed ends in
                # one line, exit status 143, as one in the epochs (the sweep's own stop, the epoch finished) does
                with sigterm_as_interrupt():
                    run_dir = cmd_train(args, logo)
            except (RunFolderError, TrainingDataError, SpecError) as e:  # a usage error (exit 2), not a traceback
                p.error(str(e))
            except KeyboardInterrupt:  # a second Ctrl-C (the first finishes the epoch), or one before or after the epochs
                exit_interrupted(interrupted_sweep_message(sweep_dir, before, bool(args.resume), bool(args.overwrite)))
            args.sweep = args.sweep or str(run_dir)
        if not args.sweep:
            from bitmind.training.config import DEFAULT_CHECKPOINTS_DIR

            args.sweep = str(Path(args.checkpoints_dir or DEFAULT_CHECKPOINTS_DIR) / args.name)
        if args.command == "ship":
            return cmd_ship(args)
        if args.command in ("score", "all"):
            # as cmd_score names it; written once, at the end, and whole (save_scores: a temporary file renamed
            # over it): a Ctrl-C before the rename leaves it as it was, one after finds it complete
            scores = file_marks([args.scores or Path(args.sweep) / "logo_scores.npz"])
            try:
                cmd_score(args)
            except KeyboardInterrupt:
                again = ("run score again" if args.command == "score" else
                         "the sweep ran to its end: the same command with --resume"
                         + (" in place of --overwrite" if args.overwrite else "") + " scores it without training it again")
                written = written_since(scores)
                exit_interrupted(f"stopped (Ctrl-C) just after {written[0]} was written (it is whole); {again}" if written
                                 else f"stopped (Ctrl-C) while scoring: nothing of the scores was written; {again}")
        if args.command in ("analyse", "all"):
            step = "analyse"
            return cmd_analyse(args)
    except KeyboardInterrupt:
        exit_interrupted(f"stopped (Ctrl-C) during {step}: every file it writes is whole, but some may still be "
                         f"the previous run's; run {step} again")


if __name__ == "__main__":
    main()
