"""The package's log records reach a neuron's console even for modules imported before
bittensor, which sets every logger that exists at its import to CRITICAL."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

SCRIPT = """
import logging
import bitmind.miner.reload          # a module (and its logger) that exists before bittensor
import bittensor                      # silences every logger that exists now
from bitmind.common import route_library_logs
route_library_logs()
logging.getLogger("bitmind.miner.reload").warning("model refused: a test")
logging.getLogger("bitmind.miner.reload").debug("not shown at INFO")
"""


def test_a_module_imported_before_bittensor_still_logs_after_routing():
    res = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "model refused: a test" in res.stdout
    assert "not shown at INFO" not in res.stdout
