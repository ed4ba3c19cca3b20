#!/usr/bin/env python3
"""Do aligned round trips help held-out generators? Issue #13's tables, side by side.

The arms come from different LOGO runs (each its own ``generalisation*.json``, written by
``benchmarks/generalisation.py analyse``); one column per ``LABEL=JSON:ARM``. For each
held-out family: its detection by the fold model that never saw it (validator regime),
then per real kind: the real-photo accuracy on the test split, averaged over the fold
models (the kinds are small; see the per-fold tables for the counts).

    python benchmarks/aligned_effect.py \\
      "patch96, none=benchmarks/results/generalisation.json:patch96.noaligned" \\
      "patch96, TAEF2=benchmarks/results/generalisation.json:patch96" \\
      "patch96nopool, TAEF2=benchmarks/results/generalisation_controls.json:patch96nopool" \\
      "patch96nopool, TAEF2 + zoo=benchmarks/results/generalisation_zoo.json:patch96nopool" \\
      --out benchmarks/results/aligned_effect.md
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def column(path: str, arm: str, regime: str) -> tuple[dict, dict]:
    """(held-out detection per family, mean real accuracy per real kind) of one arm's folds."""
    folds = json.loads(Path(path).read_text())["regimes"][regime]["folds"][arm]
    detection = {fam: f["heldout_detection"] for fam, f in folds.items()}
    kinds: dict[str, list[float]] = {}
    for f in folds.values():
        for kind, acc in f["per_real_kind"].items():
            if acc is not None:
                kinds.setdefault(kind, []).append(acc)
    return detection, {k: sum(v) / len(v) for k, v in kinds.items()}


def table(title: str, rows: list[str], cols: dict[str, dict]) -> list[str]:
    fmt = lambda v: "–" if v is None else f"{v:.3f}"  # noqa: E731
    out = [f"| {title} | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    out += [f"| {r} | " + " | ".join(fmt(c.get(r)) for c in cols.values()) + " |" for r in rows]
    means = [sum(c.values()) / len(c) if c else None for c in cols.values()]
    out.append("| **mean** | " + " | ".join(f"**{fmt(m)}**" for m in means) + " |")
    return out


def main(argv=None) -> str:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("arms", nargs="+", help="LABEL=JSON:ARM (a generalisation*.json and an arm with folds in it)")
    p.add_argument("--regime", default="validator", choices=("validator", "crops"))
    p.add_argument("--out", default="", help="also write the markdown here")
    a = p.parse_args(argv)
    det, real = {}, {}
    for spec in a.arms:
        label, _, rest = spec.partition("=")
        path, _, arm = rest.rpartition(":")
        if not (label and path and arm):
            p.error(f"expected LABEL=JSON:ARM, got {spec!r}")
        det[label], real[label] = column(path, arm, a.regime)
    families = sorted({f for c in det.values() for f in c})
    kinds = sorted({k for c in real.values() for k in c})
    md = "\n".join(table(f"held-out family ({a.regime} regime): detection", families, det) + [""]
                   + table("real kind: accuracy (test split, mean over folds)", [k.removeprefix("real/") for k in kinds],
                           {lab: {k.removeprefix("real/"): v for k, v in c.items()} for lab, c in real.items()})) + "\n"
    print(md, end="")
    if a.out:
        Path(a.out).write_text(md)
    return md


if __name__ == "__main__":
    main()
