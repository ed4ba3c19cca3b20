#!/usr/bin/env python3
"""Train the NPR detector (single process, or DDP under torchrun).

    cd base_miner/NPR/ && python train_detector.py --data ../../../shared/data/sn34-mini
    python base_miner/NPR/train_detector.py --data ../shared/data/sn34-mini --epochs 30
    torchrun --nproc_per_node=2 base_miner/NPR/train_detector.py --data DIR

Best model: base_miner/checkpoints/<name>/model_epoch_best.pth (copy it over
mining_models/base.pth to serve it; the miner hot-reloads). All options: --help.
The code lives in ``bitmind.training``; this file is only the entry point.
"""
import logging

from bitmind.training import parse_config, train


def main(argv=None) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = parse_config(argv)
    summary = train(cfg)
    if summary.get("best"):
        print(f"best: {summary['best']}\ncheckpoint: {summary['best_checkpoint']}", flush=True)
    return summary


if __name__ == "__main__":
    main()
