#!/usr/bin/env python3
"""Which small-GAN pictures teach a detector unseen GANs, per held-out GAN source, at what cost?

Why: ``bitmind.training.mini_gan`` makes GAN fakes with several up-sampling designs; the CPU
proxy (``benchmarks/residual_logo.py``: a linear model on fixed residual statistics, LOGO)
compares a model trained with each set of them against one trained without, paired on the
same pictures (``benchmarks/logo_paired.py``, once per fold and once ``--by_source``). The GAN
fold holds out four GAN sources at once, and the pictures cost other families something, so
one number per arm hides both. This script gathers those paired comparisons into one table
and one figure: per arm, the GAN fold's held-out AUC difference in each regime, the
difference for each held-out GAN source (as validators send them), and the cost column, the
sources outside the GAN fold whose difference is most negative across the arms.

Each ``--arm LABEL=PREFIX`` names the files ``PREFIX.json`` (the per-fold comparison) and
``PREFIX_by_source.json`` (the per-source one); all arms must share their reference run A.

    R=benchmarks/results/residual_logo_paired_minigan_cpu
    python benchmarks/minigan_designs.py --arm "transposed=$R" "nearest=${R}_n1k" "pair=${R}_both" \\
        --out benchmarks/results/minigan_designs.json --figure docs/figures/minigan_designs.png

Writes the JSON (``--out``), a markdown table beside it (``.md``) and the figure.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from bitmind.report import report_path, write_report

GAN_FOLD = "gans"


def _short(row: str) -> str:
    """``FOLD:SOURCE`` (a ``logo_paired --by_source`` row) -> ``SOURCE``."""
    return row.split(":", 1)[1]


def load_arm(prefix: str) -> tuple[dict, dict]:
    """The per-fold and per-source comparisons of one arm (``PREFIX.json``, ``PREFIX_by_source.json``)."""
    folds = json.loads(Path(f"{prefix}.json").read_text())
    sources = json.loads(Path(f"{prefix}_by_source.json").read_text())
    if not sources.get("by_source"):
        raise ValueError(f"{prefix}_by_source.json is not a --by_source comparison")
    return folds, sources


def arm_row(folds: dict, sources: dict) -> dict:
    """GAN fold difference per regime, and every held-out source's difference as sent
    (``{"diff", "ci95", "a"}`` each)."""
    def pick(m):
        return {"a": m["auc"]["a"], "diff": m["auc"]["diff"], "ci95": m["auc"]["ci95"]}

    row = {"gan_fold": {r: pick(v["folds"][GAN_FOLD]) for r, v in folds["regimes"].items() if GAN_FOLD in v["folds"]},
           "sources": {}}
    for name, m in sources["regimes"].get("validator", {}).get("folds", {}).items():
        row["sources"][name] = pick(m)
    return row


def cost_sources(rows: dict[str, dict], k: int = 2) -> list[str]:
    """The ``k`` sources outside the GAN fold with the lowest mean difference over the arms."""
    names = {n for r in rows.values() for n in r["sources"] if not n.startswith(GAN_FOLD + ":")}
    mean = {n: np.mean([r["sources"][n]["diff"] for r in rows.values() if n in r["sources"]]) for n in names}
    return sorted(mean, key=mean.get)[:k]


def markdown(result: dict) -> str:
    gans, costs = result["gan_sources"], result["cost_sources"]
    regimes = result["regimes"]
    head = ["arm", *[f"GAN fold, {r}" for r in regimes], *[_short(n) for n in [*gans, *costs]]]
    lines = [f"Held-out AUC difference against `{result['reference']}` (B - A, 95 % interval; as validators send "
             "them unless the column says otherwise). Reference levels: "
             + ", ".join(f"{k} {v:.3f}" for k, v in result["reference_levels"].items()), "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def cell(m):
        return f"{m['diff']:+.3f} [{m['ci95'][0]:+.3f}, {m['ci95'][1]:+.3f}]" if m else "-"

    for label, row in result["arms"].items():
        cells = [cell(row["gan_fold"].get(r)) for r in regimes] + [cell(row["sources"].get(n)) for n in [*gans, *costs]]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def figure(result: dict, path: str | Path) -> Path:
    """Grouped bars: per arm, the difference of each held-out GAN source and of the cost
    sources, with 95 % intervals."""
    from bitmind.plots import new_figure

    cols = [*result["gan_sources"], *result["cost_sources"]]
    arms = list(result["arms"])
    fig, (ax,) = new_figure(size=(max(6.0, 1.3 * len(cols) + 2), 4.2))
    width = 0.8 / max(1, len(arms))
    x = np.arange(len(cols))
    for i, label in enumerate(arms):
        ms = [result["arms"][label]["sources"].get(c) for c in cols]
        d = np.array([m["diff"] if m else np.nan for m in ms])
        lo = np.array([m["diff"] - m["ci95"][0] if m else 0 for m in ms])
        hi = np.array([m["ci95"][1] - m["diff"] if m else 0 for m in ms])
        ax.bar(x + (i - (len(arms) - 1) / 2) * width, d, width, yerr=[lo, hi], capsize=2, label=label)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(x, [_short(c) for c in cols], rotation=20)
    ax.set_ylabel("held-out AUC difference (with GAN fakes - without)")
    ax.set_title("Small-GAN fakes in training, CPU proxy, per held-out source (as sent)")
    ax.legend(fontsize=7, ncol=2)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arm", nargs="+", required=True, help="LABEL=PREFIX (PREFIX.json and PREFIX_by_source.json)")
    p.add_argument("--cost_sources", type=int, default=2, help="how many of the most-hurt other sources to show")
    p.add_argument("--out", type=report_path, required=True, help="JSON; the markdown table goes beside it (.md)")
    p.add_argument("--figure", default="", help="PNG path ('' for none)")
    a = p.parse_args(argv)
    rows, reference = {}, None
    for spec in a.arm:
        label, sep, prefix = spec.partition("=")
        if not sep or not label or not prefix:
            p.error(f"--arm wants LABEL=PREFIX, got {spec!r}")
        try:
            folds, sources = load_arm(prefix)
        except (OSError, ValueError) as e:
            p.error(str(e))
        reference = reference or folds["a"]
        if folds["a"] != reference or sources["a"] != reference:
            p.error(f"arm {label!r} is compared against {folds['a']}, not {reference}: the arms need one reference")
        rows[label] = arm_row(folds, sources)
    first = next(iter(rows.values()))
    gans = sorted({n for r in rows.values() for n in r["sources"] if n.startswith(GAN_FOLD + ":")})
    costs = cost_sources(rows, a.cost_sources)
    levels = {f"GAN fold {r}": m["a"] for r, m in first["gan_fold"].items()}
    levels.update({_short(n): first["sources"][n]["a"] for n in [*gans, *costs] if n in first["sources"]})
    regimes = sorted({r for row in rows.values() for r in row["gan_fold"]}, key=lambda r: (r != "validator", r))
    result = {"reference": reference, "reference_levels": levels, "regimes": regimes, "gan_sources": gans,
              "cost_sources": costs, "arms": rows}
    write_report(a.out, result, markdown(result))
    if a.figure:
        result["figure"] = str(figure(result, a.figure))
    print(markdown(result))
    return result


if __name__ == "__main__":
    main()
