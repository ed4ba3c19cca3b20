#!/usr/bin/env bash
# The test command: create/update .venv, then run the whole test suite.
#   bash scripts/run_tests.sh            # everything
#   bash scripts/run_tests.sh -k miner   # extra arguments go to pytest
#   bash scripts/run_tests.sh -m "not slow"   # fast inner loop: no notebooks, torchrun, subprocess miners, hot swap under load
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup_env.sh
exec "$PY" -m pytest -q tests "$@"
