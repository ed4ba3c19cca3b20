"""neurons/validator.py end to end on the local chain: a separate validator process
challenges in-process miners through chain.json, survives kill -9 with its scores, and
resumes them on restart."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bitmind.validator.harness import LocalNetwork
from bitmind.validator.scores import ScoreBook
from validator_synth import constant_npr, make_folder, train_tiny_npr

# These tests open their own local chains; MockSubtensor keeps one chain per process, so
# put the session chain of the other test modules back afterwards (tests/conftest.py).
pytestmark = [pytest.mark.usefixtures("reopen_session_chain"), pytest.mark.slow, pytest.mark.process]

NEURON = Path(__file__).resolve().parents[1] / "neurons" / "validator.py"


def _read_step(path: Path) -> int:
    try:
        return json.loads(path.read_text())["step"]
    except (FileNotFoundError, ValueError, KeyError):
        return -1


def test_validator_neuron_kill9_and_restart(tmp_path):
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    data = make_folder(tmp_path / "data", n_per_class=3)
    state = tmp_path / "scores.json"
    log = tmp_path / "validator.log"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    try:
        with LocalNetwork(tmp_path / "chain") as net:
            t = net.add_model_miner("trained", train_tiny_npr(tmp_path / "trained.pth"))
            c = net.add_model_miner("const", constant_npr(tmp_path / "const.pth", prob=0.9))
            base = [sys.executable, str(NEURON), "--mock", "--local.root", str(net.root), "--netuid", str(net.netuid),
                    "--wallet.name", "validator", "--neuron.data", str(data), "--neuron.plain_share", "1.0",
                    "--neuron.state_path", str(state), "--neuron.epoch_length", "2", "--neuron.timeout", "9"]
            with open(log, "w") as f:
                proc = subprocess.Popen(base + ["--neuron.round_interval", "0.2", "--neuron.seed", "1"], stdout=f,
                                        stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
                try:
                    deadline = time.monotonic() + 90
                    while _read_step(state) < 3 and proc.poll() is None and time.monotonic() < deadline:
                        time.sleep(0.1)
                    assert proc.poll() is None, log.read_text()[-3000:]
                    os.kill(proc.pid, signal.SIGKILL)  # no chance to clean up
                    proc.wait(timeout=10)
                finally:
                    if proc.poll() is None:
                        proc.kill()
            out = log.read_text()
            assert _read_step(state) >= 3, out[-3000:]
            killed = ScoreBook.load(state)  # the file is whole: the atomic save never exposes half a write
            assert killed.step >= 3 and not list(tmp_path.glob(".scores.json.*"))
            assert "set_weights ok" in out
            assert killed.scores[t] > killed.scores[c] >= 0

            res = subprocess.run(base + ["--neuron.rounds", "2", "--neuron.round_interval", "0", "--neuron.seed", "2"],
                                 capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
            assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
            assert f"restored step {killed.step}" in res.stdout
            resumed = ScoreBook.load(state)
            assert resumed.step == killed.step + 2
            assert resumed.hotkeys == killed.hotkeys
            assert resumed.scores[t] >= 0.81 * killed.scores[t]  # decayed by at most two rounds of alpha = 0.1
    finally:
        torch.set_num_threads(threads)

