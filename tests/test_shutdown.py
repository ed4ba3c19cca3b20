"""Neurons stop gracefully on SIGINT/SIGTERM (bitmind.shutdown)."""


def test_stop_event_on_signals_sets_the_event_and_reports_the_signal():
    import os
    import signal

    from bitmind.shutdown import stop_event_on_signals

    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    seen = []
    try:
        stop = stop_event_on_signals(seen.append)
        assert not stop.is_set()
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.wait(5) and seen == [signal.SIGTERM]
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def test_a_miner_closed_right_after_a_hot_reload_exits_cleanly(tmp_path):
    """A reload prepares the new model for the CPU in a background thread; a process that
    closed its predictor and exited while that ran aborted in native code (exit 134,
    "terminate called without an active exception"), three times out of three with the
    shipped model. ``Predictor.close`` now waits for it."""
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    shutil.copy(repo / "mining_models" / "base.pth", tmp_path / "m.pth")
    script = f"""
import os
from bitmind.checkpoint import read_checkpoint, save_checkpoint
from bitmind.miner.predict import Predictor
path = {str(tmp_path / 'm.pth')!r}
p = Predictor(path, device="cpu", check_interval=0.0)
state, meta = read_checkpoint(path)
save_checkpoint(state, path + ".tmp", meta={{**meta, "note": "v2"}})
os.replace(path + ".tmp", path)
assert p.check_reload(force=True)
p.close()
print("closed")
"""
    env = {**os.environ, "BITMIND_CPU_BF16": "0"}
    done = subprocess.run([sys.executable, "-c", script], cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith("closed")


def test_a_ctrl_c_while_a_command_imports_is_one_line_only_when_it_runs_as_that_command(monkeypatch, capsys):
    import sys
    from types import SimpleNamespace

    import pytest

    from bitmind.shutdown import STARTING_INTERRUPTED, interrupt_while_importing

    monkeypatch.setitem(sys.modules, "__main__", SimpleNamespace(__spec__=SimpleNamespace(name="bitmind.calibrate")))
    with pytest.raises(SystemExit) as stopped:
        with interrupt_while_importing("bitmind.calibrate", "bitmind.cli.calibrate"):
            raise KeyboardInterrupt
    assert stopped.value.code == 130 and STARTING_INTERRUPTED in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "__main__", SimpleNamespace(__spec__=None))  # imported by a script or a test
    with pytest.raises(KeyboardInterrupt):
        with interrupt_while_importing("bitmind.calibrate", "bitmind.cli.calibrate"):
            raise KeyboardInterrupt
