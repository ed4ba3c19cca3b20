"""Ctrl-C while ``base_miner/NPR/train_detector.py`` starts (torch and the rest import for
~2 s, then the options are read and checked) ends as a later Ctrl-C does: one line on stderr
and exit status 130, not a KeyboardInterrupt traceback."""
from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from bitmind.training.config import TrainConfig

REPO = Path(__file__).resolve().parents[1]
ENTRY = REPO / "base_miner" / "NPR" / "train_detector.py"
LINE = "stopped (Ctrl-C) while starting, before the run began: nothing was written; run the command again"

def _run_entry(ctrl_c_env, tmp_path: Path, at_import: str, *argv: str) -> subprocess.CompletedProcess:
    """``train_detector.py *argv`` in ``tmp_path``, Ctrl-C pressed (a real SIGINT, handled by
    Python's own handler: ``ctrl_c_env``) the moment ``at_import`` is first imported."""
    return subprocess.run([sys.executable, str(ENTRY), *argv], env=ctrl_c_env(at_import=at_import), capture_output=True,
                          text=True, timeout=300, cwd=tmp_path)


@pytest.mark.slow
@pytest.mark.process
@pytest.mark.parametrize("module", ["torch", "bitmind.training.trainer"])
def test_ctrl_c_while_the_entry_point_imports_is_one_line_and_130(ctrl_c_env, tmp_path, module):
    r = _run_entry(ctrl_c_env, tmp_path, module, "--data", str(tmp_path / "no_data"), "--checkpoints_dir", str(tmp_path))
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 130, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr and "KeyboardInterrupt" not in r.stderr, r.stderr
    assert lines == [LINE], r.stderr
    assert not any(tmp_path.glob("npr_experiment*")), "a Ctrl-C before the run wrote a run folder"


@pytest.mark.slow
@pytest.mark.process
def test_the_hook_does_nothing_without_a_ctrl_c(ctrl_c_env, tmp_path):
    """The hook itself leaves the command alone: a module never imported presses nothing."""
    r = _run_entry(ctrl_c_env, tmp_path, "no.such.module", "--lr", "-1")
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].endswith("--lr must be positive (and finite), got -1.0"), r.stderr


@pytest.fixture
def entry():
    """``train_detector.py`` as a module (``main`` runs in this process)."""
    spec = importlib.util.spec_from_file_location("train_detector_start", ENTRY)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_ctrl_c_while_the_options_are_checked_is_one_line_and_130(entry, monkeypatch, capsys):
    def check(self):  # the check asks CUDA for the device: a second or so where a Ctrl-C lands
        os.kill(os.getpid(), signal.SIGINT)
        raise AssertionError("no KeyboardInterrupt")

    monkeypatch.setattr(TrainConfig, "check", check)
    try:
        entry.main(["--device", "cpu"])
    except SystemExit as ex:
        code = ex.code
    except KeyboardInterrupt:  # escaping, it would end the test session: a failure instead
        pytest.fail("KeyboardInterrupt escaped main (a traceback for the operator)")
    else:
        pytest.fail("main returned")
    err = capsys.readouterr().err
    assert code == 130 and err.strip() == LINE, err
