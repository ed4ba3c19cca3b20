#!/usr/bin/env bash
# Create the virtual environment (.venv) if missing and install bitmind into it.
# Sourced by run_tests.sh and run_local_demo.sh; sets VENV and PY.
#
#   PYTHON=python3.11 bash scripts/run_tests.sh   # choose the interpreter for a new venv
#   BITMIND_FORCE_INSTALL=1 ...                   # reinstall even if the venv looks complete
#
# Installation order matters: torch/torchvision first (pinned), then the package with
# its test extras, so pip never picks another torch build to satisfy the requirements.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${BITMIND_VENV:-$REPO/.venv}"
PY="$VENV/bin/python"

if [ ! -x "$PY" ]; then
  echo "[setup] creating virtual environment $VENV (with ${PYTHON:-python3})"
  "${PYTHON:-python3}" -m venv "$VENV"
fi

# Skip the (slow) pip steps when nothing changed since the last successful install.
stamp="$VENV/.bitmind-install-stamp"
want="$(cat "$REPO/setup.py" "$REPO/requirements.txt" | sha256sum | cut -d' ' -f1)"
if [ "${BITMIND_FORCE_INSTALL:-0}" = "1" ] || [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ] \
   || ! "$PY" -c "import bitmind, torch, torchvision, bittensor, pytest" >/dev/null 2>&1; then
  echo "[setup] pip install torch==2.14.1 torchvision==0.29.1"
  "$PY" -m pip install torch==2.14.1 torchvision==0.29.1
  echo "[setup] pip install -e .[test]"
  "$PY" -m pip install -e "$REPO[test]"
  echo "$want" > "$stamp"
else
  echo "[setup] $VENV is up to date (BITMIND_FORCE_INSTALL=1 to reinstall)"
fi
