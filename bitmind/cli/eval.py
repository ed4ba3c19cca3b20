"""Evaluate a detector file on local data, as plain images or as validator challenges.

    python -m bitmind.eval --model mining_models/base.pth --data DIR [DIR2 ...]
                           [--split test --split_seed 0] [--challenge --seed 0]
                           [--json OUT.json] [--plots OUT_DIR]

``--data`` takes one or more data roots, as the trainer's does (``--data A B C``;
``--data A --data B`` works too), each split by picture stem with the trainer's rule
(``bitmind.evaluation``), with the split seed and fractions the model was trained with
(its stored training options; ``--split_seed``, ``--val_fraction``, ``--test_fraction``
override them). ``bitmind.calibrate``, ``base_miner/NPR/validate.py`` and
``benchmarks/accuracy.py`` take ``--data`` the same way (``add_data_argument``).
"""
from __future__ import annotations

from bitmind.shutdown import interrupt_while_importing

with interrupt_while_importing("bitmind.eval", "bitmind.cli.eval"):  # torch loads here (~2 s): a Ctrl-C then is one line
    import argparse
    import os
    import sys
    from pathlib import Path
    from typing import Any

    from bitmind.common import output_path_problem
    from bitmind.data.sources import split_hf_spec
    from bitmind.data.splits import SPLITS
    from bitmind.evaluation import evaluate
    from bitmind.metrics import format_metrics_table


def format_report(report: dict[str, Any]) -> str:
    """The short table ``python -m bitmind.eval`` prints."""
    opts = report.get("options", {})
    mode = "validator challenges (seed %s)" % opts.get("seed") if opts.get("challenge") else "plain images"
    where = f"split {opts['split']!r} (seed {opts['split_seed']})" if opts.get("split") else "all images"
    if opts.get("split") and opts.get("split_fractions"):
        where += " of train/val/test " + "/".join(f"{f:.3g}" for f in opts["split_fractions"])
    title = (f"model {report['model']['path']} ({report['model']['arch']}, T={report['model']['temperature']:.3g}, "
             f"b={report['model']['logit_bias']:+.3g}) "
             f"on {', '.join(report['data'])}: {where}, {mode}")
    if opts.get("precision"):
        title += f", {opts['precision']}"
    text = format_metrics_table(report, title=title)
    if report.get("skipped"):
        text += f"\nskipped {report['skipped']} unreadable file(s)"
    scored = set(report.get("per_source") or {})
    lost = {src: n for src, n in (report.get("skipped_by_source") or {}).items() if src not in scored}
    if lost:
        text += "\nno picture of " + ", ".join(f"{src} ({n} unreadable)" for src, n in lost.items()) + " could be read: not in the table"
    one_class = one_class_note(report)
    if one_class:
        text += "\n" + one_class
    return text


def one_class_note(report: dict[str, Any]) -> str | None:
    """A warning when the pictures evaluated are of one class only: balanced accuracy is then
    that class's accuracy (answering that class to everything would score 1.0, not 0.5), and
    there is no ROC AUC."""
    n_real, n_fake = report.get("n_real") or 0, report.get("n_fake") or 0
    if n_real and n_fake:
        return None
    only = "real photos" if n_real else "fakes"
    return (f"note: only {only} were evaluated: accuracy and balanced accuracy are the {only}' share called "
            f"{'real' if n_real else 'fake'}, and AUC needs both classes")


DATA_HELP = ("one or more data roots, each a folder DIR/{real,fake}/SOURCE/*.jpg or hf:NAME[:real|fake] "
             "(--data A B C, or --data A --data B). Every root is split by picture stem as the trainer splits; "
             "with several roots, per-source figures are keyed ROOT:CLASS/SOURCE")


def add_amp_argument(ap: argparse.ArgumentParser) -> None:
    """``--amp``: the forward's arithmetic (``bitmind.evaluation.collect_predictions``). Why an
    option: on a CPU that runs bf16 natively "auto" serves bf16 only where a timing says it is
    faster, so two evaluations (two models compared, or one run again on a busy machine) could
    score in different arithmetic; the shipped file's numbers moved by 0.002-0.01 between them."""
    ap.add_argument("--amp", choices=("auto", "none", "bf16"), default="auto",
                    help="forward arithmetic: auto = what the miner serves (on a CPU with native bf16, bf16 where "
                         "measured faster, so runs may differ); none = fp32 on every machine (numbers to compare or "
                         "commit); bf16 = always. The report's options.precision says which ran")


def add_data_argument(ap: argparse.ArgumentParser, required: bool = True, help: str = DATA_HELP) -> argparse.ArgumentParser:
    """``--data`` as every evaluation command line takes it: one or more roots after one
    flag (``--data A B C``, like the trainer), and the flag may be repeated (the lists
    are joined). The value is a list of specs, or None when absent and not required."""
    ap.add_argument("--data", nargs="+", action="extend", required=required, metavar="DIR", help=help)
    return ap


def add_split_arguments(ap: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The split options of ``bitmind.eval`` and ``bitmind.calibrate``: each defaults to what
    the model's checkpoint stores of its training run (``bitmind.evaluation.trained_split``)."""
    ap.add_argument("--split_seed", type=int, default=None,
                    help="seed of the split (the trainer's --split_seed; default: the checkpoint's, else 0)")
    ap.add_argument("--val_fraction", type=float, default=None,
                    help="share of stems in the val split (the trainer's --val_fraction; default: the checkpoint's, else 0.1)")
    ap.add_argument("--test_fraction", type=float, default=None,
                    help="share of stems in the test split (the trainer's --test_fraction; default: the checkpoint's, else 0.1)")
    return ap


def add_eval_arguments(ap: argparse.ArgumentParser, split_default: str | None = None) -> argparse.ArgumentParser:
    """The options of ``bitmind.eval``, shared with ``base_miner/NPR/validate.py``."""
    ap.add_argument("--model", required=True, help="model file (.pth or .safetensors written by bitmind, or a bare NPR state dict)")
    add_data_argument(ap)
    ap.add_argument("--split", choices=SPLITS, default=split_default,
                    help="evaluate only this split (by picture stem, as the trainer splits)"
                    + (f"; default {split_default}" if split_default else "; default: all images"))
    add_split_arguments(ap)
    ap.add_argument("--challenge", action="store_true", help="pass images through the validator pipeline (aug + JPEG 75) first")
    ap.add_argument("--seed", type=int, default=0, help="seed of the challenge transformations")
    ap.add_argument("--uncalibrated", action="store_true",
                    help="score raw sigmoid(logit), ignoring the checkpoint's temperature and logit bias")
    ap.add_argument("--batch_size", type=int, default=32)
    ap.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    ap.add_argument("--workers", type=int, default=0, help="data loader worker processes")
    add_amp_argument(ap)
    ap.add_argument("--json", metavar="OUT.json", help="write the report as JSON")
    ap.add_argument("--plots", metavar="OUT_DIR", help="write roc.png, scores.png, confusion.png")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    return ap


EPILOG = """several data roots:
  %(prog)s --model M.pth --data ../shared/data/sn34-mini ../shared/data/sn34-wide --split test
  Each root is split by picture stem with the trainer's rule, at the split seed and
  fractions the model was trained with (stored in the checkpoint; --split_seed,
  --val_fraction, --test_fraction override them); the report's
  per-source figures are keyed ROOT:CLASS/SOURCE (e.g. sn34-wide:fake/sdxl), and "data"
  lists the roots."""


#: Suffixes a report is never written over: a typo such as ``--json M.pth`` would replace the
#: model (or a picture) with the report.
PROTECTED_SUFFIXES = (".pth", ".pt", ".safetensors", ".ckpt", ".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff",
                      ".parquet", ".arrow")


def _picture_folders(data) -> list[str]:
    """The local folders a run reads pictures from: ``ROOT/real`` and ``ROOT/fake`` of each
    folder root (a report or plots beside them, at the root, are never read), and the path of
    an ``hf:`` dataset saved on disk."""
    out = []
    for d in map(str, data or []):
        hf = split_hf_spec(d)
        if hf:
            if os.path.exists(hf[0]):
                out.append(hf[0])
        elif os.path.isdir(d):
            out += [os.path.join(d, c) for c in ("real", "fake") if os.path.isdir(os.path.join(d, c))]
    return out


def _inside(path: str, root: str) -> bool:
    """Whether ``path`` lies in folder ``root``, by the names given and by where links lead."""
    for p, r in ((os.path.abspath(path), os.path.abspath(root)), (os.path.realpath(path), os.path.realpath(root))):
        if os.path.commonpath([p, r]) == r:
            return True
    return False


def picture_folder_holding(path: str | None, data) -> str | None:
    """The folder pictures are read from (``_picture_folders`` of ``data``) that ``path`` lies
    in, else None (also for no ``path``): an output written there sits among the pictures the
    next run reads (``report_path_problem``; ``bitmind.calibrate --out``)."""
    return next((r for r in _picture_folders(data) if path and _inside(path, r)), None)


def report_path_problem(args: argparse.Namespace) -> str | None:
    """Why the ``--json`` / ``--plots`` outputs would be wrong places to write, else None,
    checked before inference: not writable (``output_path_problem``, and an existing read-only
    report), the model file itself, a model, picture or dataset file, or inside a folder the
    pictures are read from (``picture_folder_holding``: plots there would be read as pictures by
    the next run; a report there could replace one)."""
    problem = output_path_problem(args.json, "--json") or output_path_problem(args.plots, "--plots", folder=True)
    if problem:
        return problem
    if args.json:
        if os.path.exists(args.json) and os.path.exists(args.model) and os.path.samefile(args.json, args.model):
            return f"--json {args.json} is the model file; name another file for the report"
        if Path(args.json).suffix.lower() in PROTECTED_SUFFIXES:
            return f"--json {args.json} names a model, picture or dataset file; a report is JSON (e.g. report.json)"
        if os.path.isfile(args.json) and not os.access(args.json, os.W_OK):
            return f"--json {args.json} exists and is read-only"
    for flag, out in (("--json", args.json), ("--plots", args.plots)):
        inside = picture_folder_holding(out, args.data)
        if inside:
            return f"{flag} {out} is inside {inside}, where the pictures are read from; write results elsewhere"
    return None


def run_from_args(args: argparse.Namespace) -> int:
    """Run an evaluation from parsed ``add_eval_arguments`` options; print the table, then
    write the report (a failed write loses no result: the table is already printed)."""
    from bitmind.checkpoint import CheckpointError
    from bitmind.evaluation import write_report_json

    problem = report_path_problem(args)
    if problem:  # before minutes of inference, not after
        print(f"error: {problem}", file=sys.stderr)
        return 2
    try:
        report = evaluate(args.model, args.data, challenge=args.challenge, seed=args.seed, split=args.split,
                          split_seed=args.split_seed, val_fraction=args.val_fraction, test_fraction=args.test_fraction,
                          batch_size=args.batch_size, device=args.device, workers=args.workers, amp=args.amp,
                          temperature=1.0 if args.uncalibrated else None, logit_bias=0.0 if args.uncalibrated else None,
                          progress=not args.quiet, plots_dir=args.plots)
    except (CheckpointError, OSError, ValueError) as e:  # OSError: a file or a hub dataset that cannot be read
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: no report written", file=sys.stderr)
        return 130
    print(format_report(report))
    if args.json:
        try:
            write_report_json(report, args.json)
        except OSError as e:
            print(f"error: the report could not be written to {args.json}: {e}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:  # the write is a rename of a whole file: the old report stays whole
            print(f"interrupted: {args.json} not written (the table above is the result)", file=sys.stderr)
            return 130
        print(f"report: {args.json}")
    if args.plots:
        print(f"plots: {', '.join(report['plots'].values())}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bitmind.eval", description=__doc__.split("\n\n")[0],
                                 epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_eval_arguments(ap)
    return run_from_args(ap.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
