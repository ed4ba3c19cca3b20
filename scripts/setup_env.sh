#!/usr/bin/env bash
# Create the virtual environment (.venv) if missing and install bitmind into it.
# Sourced by run_tests.sh and run_local_demo.sh; sets VENV and PY.
#
#   PYTHON=python3.11 bash scripts/run_tests.sh   # choose the interpreter for a new venv
#   BITMIND_FORCE_INSTALL=1 ...                   # reinstall even if the venv looks complete
#   BITMIND_TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu bash scripts/setup_env.sh
#                                                 # CPU-only machine: torch/torchvision from PyTorch's
#                                                 # CPU index (no CUDA libraries; use it on a new .venv)
#
# By default torch comes from PyPI, whose Linux wheel pulls the CUDA libraries (nvidia-*,
# triton: about 4 GB of the 6.3 GB venv) whether or not there is a GPU.
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
want="$({ cat "$REPO/setup.py" "$REPO/requirements.txt"; printf '%s' "${BITMIND_TORCH_INDEX_URL:-}"; } | sha256sum | cut -d' ' -f1)"
if [ "${BITMIND_FORCE_INSTALL:-0}" = "1" ] || [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ] \
   || ! "$PY" -c "import bitmind, torch, torchvision, bittensor, pytest" >/dev/null 2>&1; then
  torch_index=()
  if [ -n "${BITMIND_TORCH_INDEX_URL:-}" ]; then torch_index=(--index-url "$BITMIND_TORCH_INDEX_URL"); fi
  echo "[setup] pip install ${torch_index[*]+${torch_index[*]} }torch==2.14.1 torchvision==0.29.1"
  "$PY" -m pip install ${torch_index[@]+"${torch_index[@]}"} torch==2.14.1 torchvision==0.29.1
  echo "[setup] pip install -e .[test]"
  "$PY" -m pip install -e "$REPO[test]"
  echo "$want" > "$stamp"
else
  echo "[setup] $VENV is up to date (BITMIND_FORCE_INSTALL=1 to reinstall)"
fi
