#!/usr/bin/env bash
# The generalisation run, as one command (docs/Generalisation.md):
#   1. write aligned round trips (TAEF2) of every real photo of the crop pools and of the
#      ready-made validator challenges;
#   2. the leave-one-family-out sweep (base_miner/NPR/sweeps/logo.json by default): recipes,
#      each trained on everything and once per held-out family, plus aligned controls,
#      all on one data stream; then every checkpoint scored on both regimes;
#   3. the analysis (JSON + heat map).
#
#   bash base_miner/NPR/run_generalisation.sh ../shared/data ../shared/models WORK_DIR
#
# The shipped mining_models/base.pth: its recipe (patch96nopool) was chosen by
#   LOGO_SPEC=base_miner/NPR/sweeps/logo_compare.json WORKERS=14 \
#     bash base_miner/NPR/run_generalisation.sh ../shared/data ../shared/models WORK_DIR
# its length by logo_longer.json (78 epochs) and logo_fixed_s1_150.json (135 epochs tied 78 by LOGO
# and fitted the pools better); the shipped file is the model trained on everything of that run, with
# the training pipeline fixed, training seed 1 (its 900 s guard stopped it at 135 epochs):
#   LOGO_SPEC=base_miner/NPR/sweeps/logo_fixed_s1_150.json POOLS=crop192 WORKERS=14 SHIP_VARIANT=patch96nopool \
#     bash base_miner/NPR/run_generalisation.sh ../shared/data ../shared/models WORK_DIR
# (docs/Model.md, "Recipe"; the same recipe at a fixed length, calibrated and scored, is one command:
# base_miner/NPR/train_base_model.sh).
# TRAIN_SEED: the training seed of every model (default: the spec's; a second seed of the same run).
# EPOCHS, DEVICE: override the spec's epochs and device (tiny runs, tests).
# SHIP_VARIANT: also write WORK_DIR/base.pth from that variant (the one trained on everything),
# calibrated with the shipped rule (boundary at 0.85 of validation real photos).
# BASELINES_DIR: where the baselines base_sd1x.pth and npr_f2.pth are (default mining_models); a
# missing one is not scored (a device copy of the tree may leave the model files behind).
# OVERWRITE=1: replace the sweep an earlier run left in WORK_DIR/checkpoints/logo (without it a WORK_DIR
# that holds one is refused before training: a finished sweep is never replaced silently).
# RESUME=1: go on with a sweep stopped by Ctrl-C or a lost machine from its sweep_state.pt (a sweep
# that ran to its end is kept, and the steps after it run again).
# WORKERS: data-loader processes for scoring (default 4). POOLS="top5 top25 crop192": also score every
# NPR with those top-k pools and centre crops, as arms <recipe>_topNN / <recipe>_cropNNN (no training;
# bitmind.models.npr; crop192 is how mining_models/base_crop192.pth serves).
# SYNTHETIC=1: step 1 also writes synthetic up-sampling fakes of every real photo
# (aligned_fakes --synthetic, source fake/aligned-synth-upsampling; logo_synth.json compares with and without).
# SYNTHETIC=crops: the synthetic fakes of the crop pools' photos only (WORK/synthetic), not of the
# validator challenges, whose photos were already down-scaled by the validator: there a trace at the
# native pixel period is one no validator-sent fake carries (docs/Generalisation.md).
# SYNTHETIC_RMS="LO HI": their strength in 8-bit levels (aligned_fakes --synthetic_rms; default 1.5 6).
# MINIGAN=1: step 1 also trains two small GANs on the crop pools' training photos and writes their
# pictures to WORK/minigan (python -m bitmind.training.mini_gan; fake/minigan-*), which every model then
# trains on as --train_data (never scored, so the scores hold the same pictures as a run without them;
# logo_minigan_s1.json). MINIGAN_ARGS: more options for it (default: --size 128 --steps 6000).
# (ZOO=0, in older commands, is accepted and changes nothing: the decoder zoo was removed.)
#
# On one H200 about 15 minutes: round trips under a minute, sweep ~11 min (the spec's
# time_budget_s fits the epochs to it), scoring 1-3 min. Needs a GPU in practice; the same
# code runs on CPU (tests use tiny data).
set -euo pipefail
DATA=${1:?usage: run_generalisation.sh DATA_ROOT MODELS_ROOT WORK_DIR}
MODELS=${2:?usage: run_generalisation.sh DATA_ROOT MODELS_ROOT WORK_DIR}
WORK=${3:?usage: run_generalisation.sh DATA_ROOT MODELS_ROOT WORK_DIR}
cd "$(dirname "$0")/../.."
# the checkout's own package, also where it is not installed (a copy of the tree on a device machine)
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$WORK"
PY=${PYTHON:-python3}
CROPS=("$DATA/sn34-mini" "$DATA/sn34-wide")
CHALLENGES=("$DATA/sn34-validator")

# A failed round-trip step is reported and the run goes on without it: the sweep then has
# no aligned sources, and the LOGO spec drops what it lacks.
echo "== 1. aligned round trips ($(date +%T))"
SYN=(--synthetic)  # with SYNTHETIC_RMS="LO HI": --synthetic --synthetic_rms LO HI
[ -n "${SYNTHETIC_RMS:-}" ] && SYN+=(--synthetic_rms $SYNTHETIC_RMS)
WITH_ROUND_TRIPS=()
[ "${SYNTHETIC:-0}" = 1 ] && WITH_ROUND_TRIPS=("${SYN[@]}")
[ -d "$WORK/aligned/fake" ] || $PY -m bitmind.training.aligned_fakes --data "${CROPS[@]}" "${CHALLENGES[@]}" \
  --decoders "taef2=$MODELS/taef2" "${WITH_ROUND_TRIPS[@]}" \
  --out "$WORK/aligned" --batch_size 128 || echo "!! round trips failed"
if [ "${SYNTHETIC:-0}" = crops ] && [ ! -d "$WORK/synthetic/fake" ]; then
  $PY -m bitmind.training.aligned_fakes --data "${CROPS[@]}" "${SYN[@]}" \
    --out "$WORK/synthetic" --batch_size 128 || echo "!! synthetic fakes failed"
fi
ALIGNED=()
[ -d "$WORK/aligned/fake" ] && ALIGNED=("$WORK/aligned")
[ -d "$WORK/synthetic/fake" ] && ALIGNED+=("$WORK/synthetic")
TRAIN_ONLY=()
if [ "${MINIGAN:-0}" = 1 ]; then
  [ -f "$WORK/minigan/minigan.json" ] || $PY -m bitmind.training.mini_gan --data "${CROPS[@]}" --out "$WORK/minigan" \
    ${MINIGAN_ARGS:---size 128 --steps 6000} ${DEVICE:+--device "$DEVICE"} || echo "!! small GANs failed"
  [ -f "$WORK/minigan/minigan.json" ] && TRAIN_ONLY=(--train_data "$WORK/minigan")
fi

# The committed baselines, scored beside the sweep where their files are here (a device copy
# of the tree may leave the model files behind to make room for data).
BASELINES=()
for b in base_sd1x npr_f2; do
  f="${BASELINES_DIR:-mining_models}/$b.pth"
  if [ -f "$f" ]; then BASELINES+=("$b=$f:fake/sd1x"); else echo "(no $f: baseline $b not scored)"; fi
done

echo "== 2. leave-one-family-out sweep and scores ($(date +%T))"
$PY benchmarks/generalisation.py train --spec "${LOGO_SPEC:-base_miner/NPR/sweeps/logo.json}" \
  --data "${CROPS[@]}" "${ALIGNED[@]}" --challenge_data "${CHALLENGES[@]}" \
  --checkpoints_dir "$WORK/checkpoints" --name logo "${TRAIN_ONLY[@]}" \
  ${TRAIN_SEED:+--train_seed "$TRAIN_SEED"} ${EPOCHS:+--epochs "$EPOCHS"} ${DEVICE:+--device "$DEVICE"} \
  $([ "${OVERWRITE:-0}" = 1 ] && echo --overwrite) $([ "${RESUME:-0}" = 1 ] && echo --resume)
$PY benchmarks/generalisation.py score --sweep "$WORK/checkpoints/logo" \
  --baseline "${BASELINES[@]}" ${WORKERS:+--workers $WORKERS} \
  ${POOLS:+--pools $POOLS} ${DEVICE:+--device "$DEVICE"}

echo "== 3. analysis ($(date +%T))"
$PY benchmarks/generalisation.py analyse --sweep "$WORK/checkpoints/logo" \
  --baseline "${BASELINES[@]}" \
  --out "$WORK/generalisation.json" --figure "$WORK/generalisation.png"
if [ -n "${SHIP_VARIANT:-}" ]; then
  echo "== 4. ship $SHIP_VARIANT -> $WORK/base.pth ($(date +%T))"
  $PY benchmarks/generalisation.py ship --sweep "$WORK/checkpoints/logo" --variant "$SHIP_VARIANT" --ship_out "$WORK/base.pth"
fi
echo "== done ($(date +%T))"
