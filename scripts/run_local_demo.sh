#!/usr/bin/env bash
# The demo: create/update .venv, start the miner on a local mock chain, send it the
# sample images (tests/data/samples) through a real bt.Dendrite, print the answers,
# stop the miner.
#   bash scripts/run_local_demo.sh                       # the 4 shipped sample images
#   bash scripts/run_local_demo.sh --image photo.jpg     # your own image
#   bash scripts/run_local_demo.sh --model path/to.pth   # another model file
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup_env.sh
exec "$PY" -m bitmind.demo "$@"
