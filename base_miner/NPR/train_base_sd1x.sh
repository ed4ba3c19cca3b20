#!/usr/bin/env bash
# The exact recipe of an earlier shipped model, now mining_models/base_sd1x.pth (see docs/Model_history.md;
# the current mining_models/base.pth comes from base_miner/NPR/train_base_model.sh):
# a two-member ensemble (an NPR+high-pass residual model and a raw-pixel model), chosen
# on the validation split from one sweep that trains five variants on one data stream.
#   bash base_miner/NPR/train_base_sd1x.sh ../shared/data/sn34-mini
# On one H200: ~6.5 minutes for the sweep (96 epochs x 5 variants; the GPU, not the
# loader, is the limit with five models), then a few CPU minutes for calibration and eval.
set -euo pipefail
DATA=${1:?usage: train_base_sd1x.sh DATA_DIR}
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
OUT=base_miner/checkpoints/sweep_final
# 1. Five variants (raw-pixel, NPR+high-pass and high-pass inputs; two seeds), one data stream.
$PY -m bitmind.training.sweep --spec base_miner/NPR/sweeps/final.json --data "$DATA"
# 2. Every pair on the pooled validation challenges (6 draws), best first -> sweep_report.json.
$PY -m bitmind.training.sweep --report "$OUT" --max_members 2
# 3. The best pair by validation accuracy (npr_hp + rgb_seed1 in the shipped run) as one model file.
MEMBERS=$($PY -c "import json; print(' '.join('$OUT/%s/model_epoch_best.pth' % m for m in json.load(open('$OUT/sweep_report.json'))['ensembles'][0]['members']))")
$PY -m bitmind.ensemble --members $MEMBERS --out "$OUT/ensemble.pth"
# 4. Platt calibration on six independent validator-challenge draws of the validation split.
$PY -m bitmind.calibrate --model "$OUT/ensemble.pth" --data "$DATA" \
  --split val --challenge --seeds 0 1 2 3 4 5 --out "$OUT/ensemble_calibrated.pth"
# 5. Held-out test figures (docs/Model_history.md):
$PY benchmarks/accuracy.py --model "$OUT/ensemble_calibrated.pth" --data "$DATA" --out "$OUT/accuracy.json"
# The previous single NPR model (mining_models/npr_f2.pth) came from:
#   python base_miner/NPR/train_detector.py --data "$DATA" --name base_f2 --seed 0 \
#     --epochs 100 --batch_size 64 --workers 7 --lr 2e-4 --lr_decay 0.9 --lr_decay_every 10 --early_stop_patience 40 \
#     --dropout 0.5 --weight_decay 1e-4 --label_smoothing 0.1 \
#     --aug_validator_prob 1.0 --aug_plain_share 0.2 --aug_jpeg_prob 1.0 --aug_jpeg_quality 65 90 \
#     --aug_blur_prob 0.1 --aug_color_jitter_prob 0.2
