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


def test_a_graceful_stop_says_once_what_the_summary_calls_it(capsys):
    """``GracefulStop.reason`` (``stop_reason``): ``terminated`` for SIGTERM, ``interrupted`` for
    Ctrl-C, the summary's ``stopped`` that maps to the exit status (143, 130). Why: the trainer and
    the sweep each wrote the mapping out; both now read it from here."""
    import os
    import signal

    from bitmind.shutdown import GracefulStop, stop_reason
    from bitmind.training.trainer import EXIT_STATUS

    for signum, reason, status in ((signal.SIGTERM, "terminated", 143), (signal.SIGINT, "interrupted", 130)):
        stop = GracefulStop(signals=(signal.SIGINT, signal.SIGTERM)).install()
        try:
            os.kill(os.getpid(), signum)  # a first one: asks for the stop, raises nothing
        finally:
            stop.uninstall()
        assert stop.requested and stop.signum == signum
        assert stop.reason == stop_reason(signum) == reason and EXIT_STATUS[reason] == status
    assert stop_reason(None) == "interrupted"  # a stop no signal asked for is read as Ctrl-C's, as ``name`` does
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    capsys.readouterr()  # (the lines the handler wrote)
