#!/usr/bin/env bash
# The generalisation run, as one command (docs/Generalisation.md):
#   1. train the decoder zoo on the pools' real training photos;
#   2. write aligned round trips (TAEF2 + every accepted zoo decoder) of every real photo
#      of the crop pools and of the ready-made validator challenges;
#   3. the leave-one-family-out sweep (base_miner/NPR/sweeps/logo.json): three recipes,
#      each trained on everything and once per held-out family, plus aligned controls,
#      all on one data stream; then every checkpoint scored on both regimes;
#   4. the analysis (JSON + heat map).
#
#   bash base_miner/NPR/run_generalisation.sh ../shared/data ../shared/models WORK_DIR
#
# The shipped mining_models/base.pth: its recipe (patch96nopool) was chosen by
#   LOGO_SPEC=base_miner/NPR/sweeps/logo_compare.json ZOO=0 WORKERS=14 \
#     bash base_miner/NPR/run_generalisation.sh ../shared/data ../shared/models WORK_DIR
# and trained longer with base_miner/NPR/sweeps/ship_long.json (docs/Model.md, "Recipe").
# WORKERS: data-loader processes for scoring (default 4). POOLS="top5 top25": also score every
# NPR with those top-k pools, as arms <recipe>_topNN (no training; bitmind.models.npr).
#
# On one H200 about 25 minutes: zoo ~7 min, round trips ~2 min, sweep ~11 min (the
# spec's time_budget_s fits the epochs to it), scoring ~1 min. Needs a GPU in practice;
# the same code runs on CPU (tests use tiny data).
set -euo pipefail
DATA=${1:?usage: run_generalisation.sh DATA_ROOT MODELS_ROOT WORK_DIR}
MODELS=${2:?usage: run_generalisation.sh DATA_ROOT MODELS_ROOT WORK_DIR}
WORK=${3:?usage: run_generalisation.sh DATA_ROOT MODELS_ROOT WORK_DIR}
ZOO_BUDGET=${ZOO_BUDGET:-420}  # 420 s on one H200: the first budget at which a zoo decoder passes the gate
ZOO=${ZOO:-1}  # ZOO=0: TAEF2 round trips only
cd "$(dirname "$0")/../.."
mkdir -p "$WORK"
PY=${PYTHON:-python3}
CROPS=("$DATA/sn34-mini" "$DATA/sn34-wide")
CHALLENGES=("$DATA/sn34-validator")

# A failed zoo or round-trip step is reported and the run goes on without it: the sweep
# then has fewer (or no) aligned sources, and the LOGO spec drops what it lacks.
echo "== 1. decoder zoo ($(date +%T))"
[ "$ZOO" = 0 ] || [ -f "$WORK/zoo/zoo.json" ] || $PY -m bitmind.training.decoder_zoo train --data "${CROPS[@]}" --out "$WORK/zoo" \
  --time_budget_s "$ZOO_BUDGET" || echo "!! decoder zoo failed; going on with TAEF2 alone"
DECODERS=("taef2=$MODELS/taef2")
[ "$ZOO" != 0 ] && [ -f "$WORK/zoo/zoo.json" ] && DECODERS+=("zoo=$WORK/zoo")

echo "== 2. aligned round trips ($(date +%T))"
[ -d "$WORK/aligned/fake" ] || $PY -m bitmind.training.aligned_fakes --data "${CROPS[@]}" "${CHALLENGES[@]}" \
  --decoders "${DECODERS[@]}" --out "$WORK/aligned" --batch_size 128 || echo "!! round trips failed"
ALIGNED=()
[ -d "$WORK/aligned/fake" ] && ALIGNED=("$WORK/aligned")

echo "== 3. leave-one-family-out sweep and scores ($(date +%T))"
$PY benchmarks/generalisation.py train --spec "${LOGO_SPEC:-base_miner/NPR/sweeps/logo.json}" \
  --data "${CROPS[@]}" "${ALIGNED[@]}" --challenge_data "${CHALLENGES[@]}" \
  --checkpoints_dir "$WORK/checkpoints" --name logo
$PY benchmarks/generalisation.py score --sweep "$WORK/checkpoints/logo" \
  --baseline base_sd1x=mining_models/base_sd1x.pth:fake/sd1x npr_f2=mining_models/npr_f2.pth:fake/sd1x ${WORKERS:+--workers $WORKERS} \
  ${POOLS:+--pools $POOLS}

echo "== 4. analysis ($(date +%T))"
$PY benchmarks/generalisation.py analyse --sweep "$WORK/checkpoints/logo" \
  --baseline base_sd1x=mining_models/base_sd1x.pth:fake/sd1x npr_f2=mining_models/npr_f2.pth:fake/sd1x \
  --out "$WORK/generalisation.json" --figure "$WORK/generalisation.png"
if [ -n "${SHIP_VARIANT:-}" ]; then
  echo "== 5. ship $SHIP_VARIANT -> $WORK/base.pth ($(date +%T))"
  $PY benchmarks/generalisation.py ship --sweep "$WORK/checkpoints/logo" --variant "$SHIP_VARIANT" --ship_out "$WORK/base.pth"
fi
echo "== done ($(date +%T))"
