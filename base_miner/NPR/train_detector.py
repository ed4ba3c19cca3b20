#!/usr/bin/env python3
"""Train the NPR detector (single process, or DDP under torchrun).

    cd base_miner/NPR/ && python train_detector.py --data ../../../shared/data/sn34-mini
    python base_miner/NPR/train_detector.py --data ../shared/data/sn34-mini --epochs 30
    torchrun --nproc_per_node=2 base_miner/NPR/train_detector.py --data DIR

Best model: base_miner/checkpoints/<name>/model_epoch_best.pth (copy it over
mining_models/base.pth to serve it; the miner hot-reloads). All options: --help.
A run folder that already holds a run is refused unless ``--resume`` (continue it) or
``--overwrite`` (replace it). Exit status: 0 done, 1 stopped on a loss that is not a
number, no picture readable any more or a run folder that cannot be written any more (a
full disk), 2 a usage error (options, data, run folder), 130 stopped by Ctrl-C (after an
epoch was saved, resumable; a second Ctrl-C stops at once).
The code lives in ``bitmind.training``; this file is only the entry point.
"""
import logging
import sys

from bitmind.training import parse_config, train
from bitmind.training.run_folder import RunFolderError
from bitmind.training.trainer import EXIT_STATUS, RunWriteError, TrainingDataError, interrupted_message


def main(argv=None) -> dict:
    """Train per the command line ``argv``; returns the run's summary. A usage error (bad
    data, a run folder that may not be used) exits 2 with one line; a run stopped early exits
    with ``EXIT_STATUS`` after its best checkpoint is calibrated and its summary written."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = parse_config(argv)
    try:
        summary = train(cfg)
    except (TrainingDataError, RunFolderError) as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    except RunWriteError as e:  # a full disk mid-run: not a usage error
        print(f"error: {e}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None
    except KeyboardInterrupt:  # a second Ctrl-C (the first finishes the epoch), or one while the data is read
        print(f"\n{interrupted_message(cfg)}", file=sys.stderr, flush=True)
        raise SystemExit(130) from None
    if summary.get("best"):
        print(f"best: {summary['best']}\ncheckpoint: {summary['best_checkpoint']}", flush=True)
    if summary.get("stopped") in EXIT_STATUS:
        raise SystemExit(EXIT_STATUS[summary["stopped"]])
    return summary


if __name__ == "__main__":
    main()
