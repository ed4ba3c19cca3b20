"""Validate a trained NPR detector on the held-out split of local data.

    python base_miner/NPR/validate.py --model base_miner/checkpoints/my_run/model_epoch_best.pth --data ../shared/data/sn34-mini
    python base_miner/NPR/validate.py --model ... --data ../shared/data/sn34-mini ../shared/data/sn34-wide
    cd base_miner/NPR && python validate.py --model ... --data ../../../shared/data/sn34-mini --split val --challenge

A thin front end to ``bitmind.eval`` with one different default: ``--split test``
(the pictures the trainer never saw, split by stem with ``--split_seed``, as
``train_detector.py`` splits them). Pass ``--split`` another split name to change it.
Everything else, options, metrics, JSON and plots included, is ``bitmind.eval``.
Works from any folder: it imports only the installed ``bitmind`` package.
"""
from __future__ import annotations

import argparse
import sys

from bitmind.cli.eval import EPILOG, add_eval_arguments, run_from_args


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="validate.py", description=__doc__.split("\n\n")[0], epilog=EPILOG,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_eval_arguments(ap, split_default="test")
    return run_from_args(ap.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
