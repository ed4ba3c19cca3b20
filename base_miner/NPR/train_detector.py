#!/usr/bin/env python3
"""Train the NPR detector (single process, or DDP under torchrun).

    cd base_miner/NPR/ && python train_detector.py --data ../../../shared/data/sn34-mini
    python base_miner/NPR/train_detector.py --data ../shared/data/sn34-mini --epochs 30
    torchrun --nproc_per_node=2 base_miner/NPR/train_detector.py --data DIR

Best model: base_miner/checkpoints/<name>/model_epoch_best.pth (to serve it, copy it into
mining_models/local/ and re-point the served link: README, step 7; the miner hot-reloads). All options: --help.
A run folder that already holds a run is refused unless ``--resume`` (continue it) or
``--overwrite`` (replace it). Exit status: 0 done, 1 stopped on a loss that is not a
number, no picture readable any more or a run folder that cannot be written any more (a
full disk), 2 a usage error (options, data, run folder), 130 stopped by Ctrl-C (after an
epoch was saved, resumable; a second Ctrl-C, or one while it starts, stops at once with one line).
The code lives in ``bitmind.training``; this file is only the entry point.
"""
import sys

# light (the package root and bitmind.shutdown import nothing heavy), so it is in place before
# the slow imports below: a Ctrl-C before the run began (torch and the rest import for ~2 s, then
# the options and an ``--init_from`` file are read) ends with one line, nothing was written yet
from bitmind.shutdown import exit_interrupted, exit_interrupted_while_starting

try:  # the imports take seconds (torch): a Ctrl-C here is the start-up's
    import logging

    from bitmind.training import parse_config, train
    from bitmind.training.run_folder import RunFolderError
    from bitmind.training.trainer import EXIT_STATUS, RunWriteError, TrainingDataError, interrupted_message
except KeyboardInterrupt:
    if __name__ != "__main__":  # imported (a test, a notebook): the importer's Ctrl-C
        raise
    exit_interrupted_while_starting()


def main(argv=None) -> dict:
    """Train per the command line ``argv``; returns the run's summary. A usage error (bad
    data, a run folder that may not be used) exits 2 with one line; a run stopped early exits
    with ``EXIT_STATUS`` after its best checkpoint is calibrated and its summary written; a
    Ctrl-C exits 130 with one line, whenever it comes."""
    try:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        cfg = parse_config(argv)
    except KeyboardInterrupt:
        exit_interrupted_while_starting()
    try:
        summary = train(cfg)
    except (TrainingDataError, RunFolderError) as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    except RunWriteError as e:  # a full disk mid-run: not a usage error
        print(f"error: {e}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None
    except KeyboardInterrupt:  # a second Ctrl-C (the first finishes the epoch), or one while the data is read
        exit_interrupted(interrupted_message(cfg))
    if summary.get("best"):
        print(f"best: {summary['best']}\ncheckpoint: {summary['best_checkpoint']}", flush=True)
    if summary.get("stopped") in EXIT_STATUS:
        raise SystemExit(EXIT_STATUS[summary["stopped"]])
    return summary


if __name__ == "__main__":
    main()
