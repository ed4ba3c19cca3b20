#!/usr/bin/env python3
"""Does training longer help unseen generators? One recipe's LOGO runs side by side, by length.

Most LOGO runs trained their folds 10-15 epochs (one session's device time holds many
folds only if each is short); the shipped model trains far longer. This table puts the runs
of one recipe next to each other with the number of epochs each actually ran, so the
seed-to-seed spread of the short runs is visible beside the long ones (``--long_from``,
and ``--longer_from`` for a third group). Each arm is ``LABEL=JSON:ARM``, a
``generalisation*.json`` (``benchmarks/generalisation.py analyse``) and an arm with
generator folds in it. The epochs come from the run's spec beside the JSON
(``<stem>_spec.json``): the epochs a merged arm or a budgeted run recorded as run, else the
spec's fixed epochs when no time budget could cut them; ``--ran STEM=N`` names the epochs of
an older budgeted run that did not record them (from its log or docs/Generalisation.md).

    python benchmarks/logo_by_length.py \\
      "patch96nopool=benchmarks/results/generalisation_capacity.json:patch96nopool" \\
      "patch96nopool=benchmarks/results/generalisation_long.json:patch96nopool" \\
      --ran generalisation_capacity=10 --out benchmarks/results/logo_by_length.json
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from bitmind.report import report_path, write_report

METRICS = ("mean_heldout_detection_generators", "mean_heldout_detection_at_real90", "mean_heldout_auc",
           "worst_heldout_detection", "real_accuracy")


def epochs_run(result_path: Path, arm: str, ran: dict[str, int]) -> int | None:
    """The epochs ``arm`` of this run actually trained, or None where nothing says."""
    stem = result_path.stem
    if stem in ran:
        return ran[stem]
    spec_path = result_path.with_name(f"{stem}_spec.json")
    if not spec_path.is_file():
        return None
    spec = json.loads(spec_path.read_text())
    merged = (spec.get("merged_runs") or {}).get(arm)
    if merged is not None:
        if "epochs" in merged:
            return int(merged["epochs"])
        return int(merged["base"]["epochs"]) if not spec.get("time_budget_s") and "epochs" in merged.get("base", {}) else None
    if "ran" in spec:
        return int(spec["ran"]["epochs"])
    return int(spec["base"]["epochs"]) if not spec.get("time_budget_s") else None


def row(label: str, path: str, arm: str, ran: dict[str, int]) -> dict:
    p = Path(path)
    arms = json.loads(p.read_text())["summary"]["arms"]
    if arm not in arms:
        raise SystemExit(f"{path} has no arm {arm!r} (it has {sorted(arms)})")
    out = {"label": label, "run": p.stem, "arm": arm, "epochs": epochs_run(p, arm, ran)}
    for regime in ("validator", "crops"):
        s = arms[arm].get(regime) or {}
        if not s.get("folds"):
            raise SystemExit(f"{path}:{arm} has no generator folds in the {regime} regime")
        out[regime] = {m: s.get(m) for m in METRICS}
    return out


def length_name(epochs: int | None, long_from: int, longer_from: int | None) -> str | None:
    """'short' below ``long_from`` epochs, 'long' from there, 'longer' from ``longer_from`` (if set)."""
    if epochs is None:
        return None
    if epochs < long_from:
        return "short"
    return "longer" if longer_from is not None and epochs >= longer_from else "long"


def groups(rows: list[dict], long_from: int, longer_from: int | None = None) -> list[dict]:
    """Per label and length (``length_name``): the runs, their mean and range."""
    out = []
    for label in dict.fromkeys(r["label"] for r in rows):
        for name in ("short", "long", "longer"):
            sel = [r for r in rows if r["label"] == label and length_name(r["epochs"], long_from, longer_from) == name]
            if not sel:
                continue
            g = {"label": label, "length": name, "runs": len(sel), "epochs": sorted({r["epochs"] for r in sel})}
            for regime in ("validator", "crops"):
                g[regime] = {}
                for m in METRICS:
                    vals = [r[regime][m] for r in sel if r[regime][m] is not None]
                    g[regime][m] = {"mean": sum(vals) / len(vals), "min": min(vals), "max": max(vals)} if vals else None
            out.append(g)
    return out


def markdown(rows: list[dict], grouped: list[dict]) -> str:
    f = lambda v: "–" if v is None else f"{v:.3f}"  # noqa: E731
    lines = ["| recipe | run / arm | epochs | held-out det. | det. at real 0.90 | held-out AUC | worst | crops: det. at real 0.90 |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        v, c = r["validator"], r["crops"]
        lines.append(f"| {r['label']} | {r['run']}:{r['arm']} | {r['epochs'] if r['epochs'] is not None else '?'} | "
                     f"{f(v['mean_heldout_detection_generators'])} | {f(v['mean_heldout_detection_at_real90'])} | "
                     f"{f(v['mean_heldout_auc'])} | {f(v['worst_heldout_detection'])} | {f(c['mean_heldout_detection_at_real90'])} |")
    lines += ["", "| recipe | length | runs | epochs | held-out det. | det. at real 0.90 | held-out AUC | crops: det. at real 0.90 |",
              "|---|---|---|---|---|---|---|---|"]
    rng = lambda s: "–" if s is None else (f"{s['mean']:.3f}" if s["min"] == s["max"] else  # noqa: E731
                                          f"{s['mean']:.3f} ({s['min']:.3f}-{s['max']:.3f})")
    for g in grouped:
        v, c = g["validator"], g["crops"]
        lines.append(f"| {g['label']} | {g['length']} | {g['runs']} | {', '.join(map(str, g['epochs']))} | "
                     f"{rng(v['mean_heldout_detection_generators'])} | {rng(v['mean_heldout_detection_at_real90'])} | "
                     f"{rng(v['mean_heldout_auc'])} | {rng(c['mean_heldout_detection_at_real90'])} |")
    return "\n".join(lines) + "\n"


PANELS = (("validator", "mean_heldout_detection_at_real90", "held-out detection at real 0.90\n(validator regime)"),
          ("crops", "mean_heldout_detection_at_real90", "held-out detection at real 0.90\n(crops regime)"),
          ("validator", "mean_heldout_auc", "held-out ROC AUC\n(validator regime)"))


def figure(rows: list[dict], path: Path) -> None:
    """Each run as a point at the epochs it trained, one colour per recipe, a line through the
    recipe's mean at each epoch count: what training longer does to unseen generators at a glance."""
    from bitmind.plots import new_figure

    fig, axes = new_figure(ncols=len(PANELS), size=(4.2, 3.6))
    labels = list(dict.fromkeys(r["label"] for r in rows))
    for ax, (regime, metric, title) in zip(axes, PANELS):
        for i, label in enumerate(labels):
            pts = sorted((r["epochs"], r[regime][metric]) for r in rows
                         if r["label"] == label and r["epochs"] is not None and r[regime][metric] is not None)
            if not pts:
                continue
            ax.scatter([e for e, _ in pts], [v for _, v in pts], color=f"C{i}", s=18, alpha=0.7, label=label)
            by_epoch: dict[int, list[float]] = {}
            for e, v in pts:
                by_epoch.setdefault(e, []).append(v)
            if len(by_epoch) > 1:
                es = sorted(by_epoch)
                ax.plot(es, [sum(by_epoch[e]) / len(by_epoch[e]) for e in es], color=f"C{i}", lw=1, alpha=0.8)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("epochs the folds trained")
        ax.grid(alpha=0.3)
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="outside lower center", ncol=min(len(names), 6), fontsize=7)
    fig.savefig(path, dpi=110)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("arms", nargs="+", help="LABEL=JSON:ARM (a generalisation*.json and an arm with generator folds)")
    p.add_argument("--ran", nargs="*", default=[], metavar="STEM=N",
                   help="epochs an older budgeted run trained, where its spec does not say (e.g. generalisation_capacity=10)")
    p.add_argument("--long_from", type=int, default=30, help="runs of at least this many epochs are 'long'")
    p.add_argument("--longer_from", type=int, default=None,
                   help="runs of at least this many epochs are 'longer' (default: no third group)")
    p.add_argument("--out", type=report_path, default="", help="JSON of the rows and groups; the markdown goes beside it (.md)")
    p.add_argument("--figure", default="", help="PNG: every run by the epochs it trained, per recipe")
    a = p.parse_args(argv)
    if a.longer_from is not None and a.longer_from <= a.long_from:
        p.error(f"--longer_from ({a.longer_from}) must be above --long_from ({a.long_from})")
    ran = {}
    for item in a.ran:
        stem, _, n = item.partition("=")
        if not stem or not n.isdigit():
            p.error(f"--ran wants STEM=N, got {item!r}")
        ran[stem] = int(n)
    rows = []
    for item in a.arms:
        label, _, rest = item.partition("=")
        path, _, arm = rest.rpartition(":")
        if not (label and path and arm):
            p.error(f"expected LABEL=JSON:ARM, got {item!r}")
        rows.append(row(label, path, arm, ran))
    grouped = groups(rows, a.long_from, a.longer_from)
    md = markdown(rows, grouped)
    print(md)
    result = {"rows": rows, "groups": grouped, "long_from": a.long_from, "longer_from": a.longer_from}
    if a.out:
        write_report(a.out, result, md)
    if a.figure:
        figure(rows, Path(a.figure))
    return result


if __name__ == "__main__":
    main()
