#!/usr/bin/env bash
# The exact recipe of the shipped mining_models/base.pth (see docs/Model.md).
#   bash base_miner/NPR/train_base_model.sh ../shared/data/sn34-mini
# On one H200: ~7 minutes of training (two runs shared the machine's 16 cores when it was made).
set -euo pipefail
DATA=${1:?usage: train_base_model.sh DATA_DIR [NAME]}
NAME=${2:-base_f2}
cd "$(dirname "$0")/../.."
python base_miner/NPR/train_detector.py --data "$DATA" --name "$NAME" --seed 0 \
  --epochs 100 --batch_size 64 --workers 7 --lr 2e-4 --lr_decay 0.9 --lr_decay_every 10 --early_stop_patience 40 \
  --dropout 0.5 --weight_decay 1e-4 --label_smoothing 0.1 \
  --aug_validator_prob 1.0 --aug_plain_share 0.2 --aug_jpeg_prob 1.0 --aug_jpeg_quality 65 90 \
  --aug_blur_prob 0.1 --aug_color_jitter_prob 0.2
# Platt calibration on six independent validator-challenge draws of the validation split.
python -m bitmind.calibrate --model "base_miner/checkpoints/$NAME/model_epoch_best.pth" --data "$DATA" \
  --split val --challenge --seeds 0 1 2 3 4 5 --out "base_miner/checkpoints/$NAME/model_calibrated.pth"
# Held-out test figures (docs/Model.md):
python benchmarks/accuracy.py --model "base_miner/checkpoints/$NAME/model_calibrated.pth" --data "$DATA" \
  --out "base_miner/checkpoints/$NAME/accuracy.json"
