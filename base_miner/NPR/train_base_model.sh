#!/usr/bin/env bash
# The recipe of the shipped mining_models/base.pth, as one command (docs/Model.md, "Recipe"):
#   1. TAEF2 round trips of every real photo of the crop pools and of the validator challenges
#      (aligned fakes: a photo and its round trip differ only by the decoder's trace);
#   2. patch96aux01 on everything (base_miner/NPR/sweeps/ship_aux01.json: npr_hp input, no stem
#      pool, one random 96 px patch per picture, 135 epochs, family-balanced sampling, and an
#      auxiliary family head at weight 0.1 during training, which the shipped file drops; SPEC=
#      base_miner/NPR/sweeps/ship_base.json: the same without the head, the file shipped before;
#      ship_swa.json: that with weight averaging over the second half);
#   3. its checkpoint scored on both regimes (validator challenges as sent, crops through the
#      seeded validator pipeline);
#   4. class-balanced Platt calibration on the validation split of both regimes, the boundary
#      where 0.85 of the validation real photos pass (the rule for unseen sources,
#      docs/Generalisation.md), written to WORK_DIR/base.pth;
#   5. the sn34-validator test split as sent (WORK_DIR/accuracy_validator.json);
#   6. the same pictures scored by the shipped file too, with a paired bootstrap of the
#      difference (benchmarks/ship_paired.py: WORK_DIR/ship_paired.{json,md}).
#
#   bash base_miner/NPR/train_base_model.sh ../shared/data ../shared/models WORK_DIR
#
# DATA_ROOT holds sn34-mini, sn34-wide and sn34-validator; MODELS_ROOT holds taef2. On one
# H200 about 7 minutes: 135 epochs trained in 327 s (2.4 s per epoch; nineteenth session,
# benchmarks/results/train_base_model_h200_minigan.log), round trips 10-23 s, scores,
# calibration and test split about 30 s (the shipped file's own run, one H100 shared with a
# LOGO sweep: 405 s of training, 8 minutes in all; twenty-ninth session). The result
# is not copied anywhere: read WORK_DIR/ship_paired.md first (is the new file better than the
# shipped one by more than the split's noise?), then serve it as README step 7 says (into
# mining_models/local/, the served link re-pointed; the miner hot-reloads).
# GPU kernels are not bit-deterministic: a re-run gives a close model, not the same bytes.
# Env: PYTHON (default python3), WORKERS (data-loader processes; the spec says 14), SPEC (another
# ship spec with exactly one recipe, the model shipped: e.g. ship_swa.json, or a tiny one in
# tests), EPOCHS (override the spec's), DEVICE (auto | cpu | cuda), TRAIN_SEED (the training
# seed; default 1, the shipped file's), COMPARE_WITH (the file step 6 compares with; default
# mining_models/base.pth, empty to skip), TRAIN_DATA (extra training-only roots in the
# CLASS/SOURCE layout, space-separated, e.g. the small GANs of python -m
# bitmind.training.mini_gan; their train split is trained on, nothing of them is scored; the
# shipped file uses none: docs/Generalisation_record.md, "Small GAN fakes on the NPR"), OVERWRITE=1
# (replace the training an earlier run left in WORK_DIR; without it such a WORK_DIR is refused
# before training, so a finished run is never replaced silently), RESUME=1 (go on with a training
# stopped by Ctrl-C or a lost machine from its last saved state, then run the later steps; a
# training that ran to its end is kept, so RESUME=1 also re-runs only the steps after it).
# Exit status: 130 when Ctrl-C stopped the training (its state is saved: RESUME=1 goes on).
set -euo pipefail
DATA=${1:?usage: train_base_model.sh DATA_ROOT MODELS_ROOT WORK_DIR}
MODELS=${2:?usage: train_base_model.sh DATA_ROOT MODELS_ROOT WORK_DIR}
WORK=${3:?usage: train_base_model.sh DATA_ROOT MODELS_ROOT WORK_DIR}
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
SPEC=${SPEC:-base_miner/NPR/sweeps/ship_aux01.json}
COMPARE_WITH=${COMPARE_WITH-mining_models/base.pth}
CROPS=("$DATA/sn34-mini" "$DATA/sn34-wide")
CHALLENGES=("$DATA/sn34-validator")
for d in "${CROPS[@]}" "${CHALLENGES[@]}" "$MODELS/taef2"; do
  [ -d "$d" ] || { echo "error: $d not found (DATA_ROOT needs sn34-mini, sn34-wide, sn34-validator; MODELS_ROOT taef2)" >&2; exit 2; }
done
read -r -a EXTRA <<< "${TRAIN_DATA:-}"
for d in "${EXTRA[@]}"; do
  [ -d "$d" ] || { echo "error: TRAIN_DATA root $d not found" >&2; exit 2; }
done
# the model to calibrate and ship: the spec's one recipe (patch96aux01 in ship_aux01.json)
VARIANT=$($PY -c 'import json, sys; r = list(json.load(open(sys.argv[1]))["recipes"]); print(r[0] if len(r) == 1 else "")' "$SPEC") \
  || { echo "error: cannot read the recipes of $SPEC" >&2; exit 2; }
[ -n "$VARIANT" ] || { echo "error: $SPEC must name exactly one recipe (the model to ship)" >&2; exit 2; }
mkdir -p "$WORK"
OPTS=(${WORKERS:+--workers "$WORKERS"} ${DEVICE:+--device "$DEVICE"})

echo "== 1. aligned round trips ($(date +%T))"
# Unlike the LOGO run, no fallback: the shipped recipe trains on the round trips.
[ -d "$WORK/aligned/fake" ] || $PY -m bitmind.training.aligned_fakes --data "${CROPS[@]}" "${CHALLENGES[@]}" \
  --decoders "taef2=$MODELS/taef2" --out "$WORK/aligned" --batch_size 128 ${DEVICE:+--device "$DEVICE"}

echo "== 2. training ($SPEC) ($(date +%T))"
$PY benchmarks/generalisation.py train --spec "$SPEC" --data "${CROPS[@]}" "$WORK/aligned" \
  --challenge_data "${CHALLENGES[@]}" --checkpoints_dir "$WORK/checkpoints" --name ship \
  ${EXTRA[0]:+--train_data "${EXTRA[@]}"} --train_seed "${TRAIN_SEED:-1}" ${EPOCHS:+--epochs "$EPOCHS"} "${OPTS[@]}" \
  $([ "${OVERWRITE:-0}" = 1 ] && echo --overwrite) $([ "${RESUME:-0}" = 1 ] && echo --resume)

echo "== 3. scores on both regimes ($(date +%T))"
$PY benchmarks/generalisation.py score --sweep "$WORK/checkpoints/ship" "${OPTS[@]}"

echo "== 4. calibration, boundary at 0.85 of validation real -> $WORK/base.pth ($(date +%T))"
$PY benchmarks/generalisation.py ship --sweep "$WORK/checkpoints/ship" --variant "$VARIANT" \
  --real_target 0.85 --ship_out "$WORK/base.pth"

echo "== 5. sn34-validator test split as sent ($(date +%T))"
$PY benchmarks/accuracy.py --model "$WORK/base.pth" --data "${CHALLENGES[@]}" --as_sent --plots none \
  --out "$WORK/accuracy_validator.json" ${DEVICE:+--device "$DEVICE"}
if [ -n "$COMPARE_WITH" ] && [ -f "$COMPARE_WITH" ]; then
  echo "== 6. against $COMPARE_WITH on the same pictures, paired ($(date +%T))"
  $PY benchmarks/ship_paired.py --a "$COMPARE_WITH" --b "$WORK/base.pth" --data "${CHALLENGES[@]}" --as_sent \
    --out "$WORK/ship_paired.json" ${DEVICE:+--device "$DEVICE"}
fi
echo "== done ($(date +%T)): $WORK/base.pth"
