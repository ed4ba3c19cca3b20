#!/usr/bin/env bash
# The demo: create/update .venv, start the miner on a local mock chain, send it one
# image through a real bt.Dendrite, print the answer, stop the miner.
#   bash scripts/run_local_demo.sh                       # generated sample image
#   bash scripts/run_local_demo.sh --image photo.jpg     # your own image
#   bash scripts/run_local_demo.sh --model path/to.pth   # another model file
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup_env.sh
exec "$PY" -m bitmind.demo "$@"
