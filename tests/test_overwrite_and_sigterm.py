"""``--overwrite`` keeps the earlier run until the new one has saved an epoch, and SIGTERM stops
a training as a first Ctrl-C does.

Why: ``--overwrite`` removed the earlier run's files as soon as the data was listed, so a new run
that failed in its first epoch (no picture readable, a diverging --lr, Ctrl-C) left neither the
old model nor a new one; they are now set aside in ``.previous_run`` inside the run folder, put
back if the new run ends before saving an epoch (or by the next run, if it was killed), removed
once it has. And SIGTERM (``timeout``, ``docker stop``, ``systemctl stop``) ended the trainer at
once: the epoch in progress was lost and ``model_epoch_best.pth`` stayed uncalibrated; now the
epoch is finished and saved, the best checkpoint calibrated and the summary written, then the
trainer exits 143."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
import torch

from bitmind.checkpoint import read_checkpoint
from bitmind.training import train
from bitmind.training.run_folder import (ASIDE, ASIDE_KIND, ASIDE_MOVING, SWEEP, SWEEP_STATE, RunFolderError,
                                         recover_earlier_run)
from bitmind.training.trainer import TrainingDataError
from train_helpers import in_epoch_0, kill_when_it_says, looking_aside, tiny_config, tree
from validator_synth import make_folder

REPO = Path(__file__).resolve().parents[1]
TRAIN = [sys.executable, str(REPO / "base_miner" / "NPR" / "train_detector.py")]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_folder(tmp_path_factory.mktemp("overwrite_data"), n_per_class=12, seed=5, size=48)


@pytest.fixture(scope="module")
def earlier(data, tmp_path_factory) -> Path:
    """A finished one-epoch run (``<dir>/t``), copied by each test that overwrites it."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("earlier")
    train(tiny_config(data, out, epochs=1))
    return out / "t"


@pytest.fixture
def run(earlier, tmp_path) -> Path:
    """A copy of the earlier run at ``tmp_path/t``."""
    shutil.copytree(earlier, tmp_path / "t")
    return tmp_path / "t"


def _in_epoch_0(action):
    """The trainer's ``train_one_epoch`` running ``action()`` as its first epoch starts."""
    from bitmind.training import trainer

    return in_epoch_0(trainer.train_one_epoch, action)


def _press_ctrl_c_twice():
    for _ in range(2):
        os.kill(os.getpid(), signal.SIGINT)


def _boom():
    raise RuntimeError("boom")


# how a new run ends before its first epoch is saved: (patch of the trainer, what ``train`` raises or None)
ENDINGS = {
    "ctrl-c twice in epoch 0": (lambda tr, mp: mp.setattr(tr, "train_one_epoch", _in_epoch_0(_press_ctrl_c_twice)),
                                KeyboardInterrupt),
    "a crash in epoch 0": (lambda tr, mp: mp.setattr(tr, "train_one_epoch", _in_epoch_0(_boom)), RuntimeError),
    "no picture readable": (lambda tr, mp: mp.setattr(tr, "epoch_failure", lambda done, learner: "no-images"),
                            TrainingDataError),
    "a diverging lr": (lambda tr, mp: mp.setattr(tr, "epoch_failure", lambda done, learner: "non-finite"), None),
}


@pytest.mark.parametrize("ending", list(ENDINGS))
def test_an_overwrite_run_that_ends_before_saving_an_epoch_keeps_the_earlier_run(ending, data, run, monkeypatch,
                                                                               run_folder_logs):
    from bitmind.training import trainer

    before = tree(run)
    best = (run / "model_epoch_best.pth").read_bytes()
    patch, raised = ENDINGS[ending]
    patch(trainer, monkeypatch)
    cfg = tiny_config(data, run.parent, epochs=3, lr=1e-3, overwrite=True)
    if raised is None:
        assert train(cfg)["stopped"] == "non-finite"
    else:
        with pytest.raises(raised):
            train(cfg)
    assert (run / "model_epoch_best.pth").read_bytes() == best  # the earlier best model, byte for byte
    assert tree(run) == before  # and all of the earlier run, nothing of the new one (no .previous_run left)
    assert "the earlier run's files are back in" in run_folder_logs.text
    monkeypatch.undo()
    if ending == "ctrl-c twice in epoch 0":  # the earlier run goes on with --resume, the folder's lock long released
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
        resumed = train(tiny_config(data, run.parent, epochs=2, resume=True))
        assert [h["epoch"] for h in resumed["history"]] == [0, 1] and "stopped" not in resumed


def test_an_overwrite_run_keeps_the_earlier_run_until_its_first_epoch_is_saved_then_leaves_no_trace_of_it(
        data, run, monkeypatch, run_folder_logs):
    from bitmind.training import trainer

    old = tree(run)
    seen, look = looking_aside(run)  # as the new run's first epoch starts: the earlier best is aside, not gone
    monkeypatch.setattr(trainer, "train_one_epoch", _in_epoch_0(look))
    summary = train(tiny_config(data, run.parent, epochs=2, lr=1e-3, seed=1, overwrite=True))
    assert seen["aside"].get("model_epoch_best.pth") == old["model_epoch_best.pth"]
    assert "model_epoch_best.pth" not in seen["top"] and "state_last.pt" not in seen["top"]  # nothing mixed in
    assert [h["epoch"] for h in summary["history"]] == [0, 1] and "calibration" in summary
    now = tree(run)
    assert not any(name.startswith(ASIDE) for name in now) and not (run / ASIDE_MOVING).exists()
    assert not set(now.values()) & set(old.values())  # no file of the earlier run, under any name
    assert json.loads((run / "opt.json").read_text())["lr"] == 1e-3
    assert "removed the earlier run's files" in run_folder_logs.text


def test_two_sigterms_in_an_overwrite_runs_first_epoch_end_in_one_line_143_and_the_earlier_run(data, run, monkeypatch,
                                                                                                  capsys):
    import importlib.util

    from bitmind.training import trainer

    spec = importlib.util.spec_from_file_location("train_detector_sigterm", REPO / "base_miner" / "NPR" / "train_detector.py")
    entry = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(entry)
    before = tree(run)
    monkeypatch.setattr(trainer, "train_one_epoch",
                        _in_epoch_0(lambda: [os.kill(os.getpid(), signal.SIGTERM) for _ in range(2)]))
    with pytest.raises(SystemExit) as ended:
        entry.main(["--data", str(data), "--checkpoints_dir", str(run.parent), "--name", "t", "--epochs", "3",
                    "--batch_size", "8", "--layers", "1", "1", "--width", "8", "--workers", "0", "--progress", "false",
                    "--device", "cpu", "--val_fraction", "0.25", "--test_fraction", "0.15", "--overwrite"])
    err = capsys.readouterr().err
    assert ended.value.code == 143 and "Traceback" not in err, err
    assert err.rstrip("\n").splitlines()[-1] == (f"stopped (SIGTERM) before this run saved an epoch: {run} holds the "
                                                 "earlier run's files as they were (--overwrite replaces them only once "
                                                 "an epoch is saved); run the command again")
    assert tree(run) == before
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


_KILLED_RUN = """
import sys, time
from pathlib import Path
from bitmind.training import train, trainer
from bitmind.training.run_folder import EarlierRun
from train_helpers import tiny_config

def killed_here(*a, **kw):  # never returns: the test kills this process (SIGKILL) here
    print("killed here", flush=True)
    time.sleep(120)

if sys.argv[3] == "in epoch 0":
    trainer.train_one_epoch = killed_here
else:  # after saving epoch 0: its files are written, the earlier run's not yet removed
    EarlierRun.drop = killed_here
train(tiny_config(Path(sys.argv[1]), Path(sys.argv[2]), epochs=3, lr=1e-3, overwrite=True))
"""


def _killed_in_epoch_0(data: Path, run: Path, when: str = "in epoch 0") -> None:
    """An --overwrite run of ``run`` killed (SIGKILL: no clean-up at all) in its first epoch, or
    ``when`` "after saving epoch 0" (before it removed the earlier run's files)."""
    kill_when_it_says([sys.executable, "-c", textwrap.dedent(_KILLED_RUN), str(data), str(run.parent), when],
                      "killed here", cwd=REPO,
                      env={**os.environ, "PYTHONPATH": str(REPO / "tests"), "OMP_NUM_THREADS": "1"})
    assert (run / ASIDE / "model_epoch_best.pth").is_file() and (run / "opt.json").is_file()  # what it left


def test_a_killed_overwrite_run_is_settled_by_the_next_run_never_mixed_in(data, run, run_folder_logs):
    before = tree(run)
    _killed_in_epoch_0(data, run)
    # the next run in the folder puts the earlier run back first, then finds it there: refused as usual
    with pytest.raises(RunFolderError, match="already holds a run"):
        train(tiny_config(data, run.parent, epochs=2))
    assert tree(run) == before and "killed before it saved an epoch" in run_folder_logs.text
    # --resume read the killed run's opt.json before the earlier run was back: it says to run it again
    _killed_in_epoch_0(data, run)
    with pytest.raises(RunFolderError, match="run it again to resume the earlier run"):
        train(tiny_config(data, run.parent, epochs=2, resume=True))
    assert tree(run) == before
    resumed = train(tiny_config(data, run.parent, epochs=2, resume=True))
    assert [h["epoch"] for h in resumed["history"]] == [0, 1]


def test_a_resume_from_the_command_line_reads_the_earlier_runs_options_after_a_killed_overwrite(data, run, run_folder_logs):
    """``parse_config --resume`` read ``opt.json`` before the trainer settled the folder: after an
    --overwrite run was killed it read the killed run's options (its lr 1e-3 here) and the run then
    stopped to be started again. The command line's resume settles the folder first."""
    from bitmind.training.config import parse_config

    earlier_lr = json.loads((run / "opt.json").read_text())["lr"]
    assert earlier_lr != 1e-3
    _killed_in_epoch_0(data, run)
    cfg = parse_config(["--checkpoints_dir", str(run.parent), "--name", run.name, "--resume", "--epochs", "2"])
    assert cfg.lr == earlier_lr and not (run / ASIDE).exists()
    assert "killed before it saved an epoch" in run_folder_logs.text
    assert [h["epoch"] for h in train(cfg)["history"]] == [0, 1]


def test_what_a_killed_overwrite_run_leaves_is_finished_the_way_it_had_got_to(tmp_path):
    # killed after saving its first epoch (before removing the earlier files): they go, as it would have done
    run = tmp_path / "saved"
    (run / ASIDE).mkdir(parents=True)
    (run / ASIDE / "model_epoch_best.pth").write_text("earlier")
    (run / "state_last.pt").write_text("new")
    assert recover_earlier_run(run) == "removed"
    assert sorted(p.name for p in run.iterdir()) == ["state_last.pt"]
    # killed while setting them aside: what was moved goes back, what was not moved stays
    run = tmp_path / "moving"
    (run / ASIDE_MOVING).mkdir(parents=True)
    (run / ASIDE_MOVING / "model_epoch_best.pth").write_text("earlier best")
    (run / "state_last.pt").write_text("earlier state")
    assert recover_earlier_run(run) == "restored"
    assert {p.name: p.read_text() for p in run.iterdir()} == {"model_epoch_best.pth": "earlier best",
                                                              "state_last.pt": "earlier state"}
    assert recover_earlier_run(run) is None  # nothing left to settle


def test_a_sweep_settles_a_killed_overwrite_run_that_had_saved_an_epoch_by_the_runs_files(data, run, run_folder_logs):
    """A sweep started in the folder of an --overwrite run killed after saving its first epoch (before
    it removed the earlier run's files). Why: ``recover_earlier_run`` judged the folder by its
    caller's kind: the sweep looked for its own ``sweep_state.pt`` / ``sweep.json``, found none, and
    put the earlier run's best model, state and history back over the new run's (the reviewer's
    reproduction, kill -9). ``.previous_run`` now says who set it aside (``ASIDE_KIND``), and the
    new run's ``state_last.pt`` counts as it would for the next training."""
    earlier = tree(run)
    _killed_in_epoch_0(data, run, "after saving epoch 0")
    new = {k: v for k, v in tree(run).items() if not k.startswith(f"{ASIDE}/")}
    assert all(new[f] != earlier[f] for f in ("state_last.pt", "model_epoch_best.pth", "opt.json"))  # its epoch 0
    assert recover_earlier_run(run, SWEEP) == "removed"
    assert tree(run) == new  # the new run as it was killed, and nothing of the earlier one
    assert json.loads((run / "opt.json").read_text())["lr"] == 1e-3  # (the new run's options)
    assert "killed after saving its first epoch" in run_folder_logs.text and "--overwrite run " in run_folder_logs.text
    resumed = train(tiny_config(data, run.parent, epochs=2, resume=True))  # and it goes on from its epoch 0
    assert [h["epoch"] for h in resumed["history"]] == [0, 1]


@pytest.mark.parametrize("note", [None, "not json", '{"kind": "notebook"}'])
def test_a_previous_run_without_a_readable_note_of_its_kind_is_settled_by_the_callers_kind(note, tmp_path):
    """A ``.previous_run`` left by a version that wrote no ``ASIDE_KIND`` (or a note that cannot be
    read) is judged by the caller's kind, as it always was: a run's by its ``state_last.pt``, a
    sweep's by its state and summary. The note is never put back among the earlier files."""
    def files(folder: Path) -> dict[str, str]:
        return {str(p.relative_to(folder)): p.read_text() for p in folder.rglob("*") if p.is_file()}

    def leave(folder: Path, earlier: dict[str, str], new: dict[str, str]) -> Path:
        for name, text in [*((f"{ASIDE}/{k}", v) for k, v in earlier.items()), *new.items()]:
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_text(text)
        if note is not None:
            (folder / ASIDE / ASIDE_KIND).write_text(note)
        return folder

    # a training run's, killed after saving its first epoch: the earlier files go, as it would have done
    run = leave(tmp_path / "run", {"model_epoch_best.pth": "earlier"}, {"state_last.pt": "new"})
    assert recover_earlier_run(run) == "removed"
    assert files(run) == {"state_last.pt": "new"}
    # a sweep's, killed before saving one: its new variant and spec go, the earlier sweep comes back
    earlier = {"a/model_epoch_best.pth": "earlier", "sweep.json": "earlier", "spec.json": "earlier"}
    out = leave(tmp_path / "sweep", earlier, {"b/history.json": "new", "spec.json": "new"})
    assert recover_earlier_run(out, SWEEP) == "restored"
    assert files(out) == earlier


def test_sigterm_asks_for_the_same_stop_as_a_first_ctrl_c(capsys):
    from bitmind.shutdown import GracefulStop, StopSignal, exit_interrupted, sigterm_as_interrupt

    before = signal.getsignal(signal.SIGTERM)
    with sigterm_as_interrupt():
        outer = signal.getsignal(signal.SIGTERM)
        stop = GracefulStop(signals=(signal.SIGINT, signal.SIGTERM)).install()
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            assert stop.requested and stop.signum == signal.SIGTERM and stop.name == "SIGTERM"
            with pytest.raises(StopSignal) as second:  # a second one: at once, as a second Ctrl-C
                os.kill(os.getpid(), signal.SIGTERM)
            assert isinstance(second.value, KeyboardInterrupt)
        finally:
            stop.uninstall()
        assert signal.getsignal(signal.SIGTERM) is outer and signal.getsignal(signal.SIGINT) is signal.default_int_handler
        with pytest.raises(StopSignal):  # outside the loop a SIGTERM raises where it comes, as Ctrl-C does
            os.kill(os.getpid(), signal.SIGTERM)
    assert signal.getsignal(signal.SIGTERM) is before  # put back
    assert "SIGTERM: stopping after this epoch is saved" in capsys.readouterr().err
    try:
        raise StopSignal(signal.SIGTERM)
    except KeyboardInterrupt:
        with pytest.raises(SystemExit) as ended:
            exit_interrupted("stopped")
    assert ended.value.code == 143


def _sigterm_to_group_when(cmd: list[str], stream: str, ready) -> tuple[subprocess.Popen, str]:
    """Run ``cmd`` in its own process group, send SIGTERM to the whole group (as ``timeout`` and
    ``systemctl stop`` do: the loader's worker gets one too) at the first line of its ``stream``
    ("stdout" or "stderr") that ``ready`` accepts, and wait for it; killed after 240 s (the test
    fails, never hangs). Returns the process and its whole stderr."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, start_new_session=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"})
    guard = threading.Timer(240, os.killpg, (proc.pid, signal.SIGKILL))
    guard.start()
    said = []
    try:
        for line in getattr(proc, stream):
            said.append(line)
            if ready(line):
                os.killpg(proc.pid, signal.SIGTERM)
                break
        _, err = proc.communicate(timeout=240)
    finally:
        guard.cancel()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc, ("".join(said) if stream == "stderr" else "") + err


def test_sigterm_finishes_the_epoch_calibrates_the_best_and_exits_143(data, tmp_path):
    """A real SIGTERM to the whole process group (as ``timeout`` and ``systemctl stop`` send it: the
    loader's worker gets one too) while the trainer runs on the CPU."""
    args = ["--data", str(data), "--checkpoints_dir", str(tmp_path), "--name", "t", "--epochs", "50", "--batch_size", "8",
            "--layers", "1", "1", "--width", "8", "--workers", "1", "--progress", "false", "--device", "cpu",
            "--val_fraction", "0.25", "--test_fraction", "0.15", "--calibration_min_per_class", "0"]
    # the run's log (stderr): signal once its first epoch is done, during the second
    proc, err = _sigterm_to_group_when([*TRAIN, *args], "stderr", lambda line: "epoch=0 " in line)
    assert proc.returncode == 143 and "Traceback" not in err, (proc.returncode, err[-3000:])
    run = tmp_path / "t"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["stopped"] == "terminated" and "calibration" in summary
    history = json.loads((run / "history.json").read_text())
    assert 1 <= len(history) < 50  # the epoch in progress was finished and saved, no more
    state = torch.load(run / "state_last.pt", map_location="cpu", weights_only=True)
    assert state["epoch"] == history[-1]["epoch"]
    meta = read_checkpoint(run / "model_epoch_best.pth")[1]
    assert meta["metrics"]["calibration"]["split"] == "val" and "temperature" in meta and "logit_bias" in meta
    assert f"stopped after epoch {history[-1]['epoch']} (SIGTERM)" in err


_REENTRANT = """
import io, os, signal, sys, threading, time
from bitmind.shutdown import GracefulStop
r, w = os.pipe()  # a buffered stderr, held by long writes (a log line) when the signal comes
stream = io.TextIOWrapper(io.BufferedWriter(io.FileIO(w, "w"), buffer_size=8), line_buffering=True)
sys.stderr = stream
stop = GracefulStop(signals=(signal.SIGTERM,)).install()
threading.Thread(target=lambda: [None for _ in iter(lambda: os.read(r, 65536), b"")], daemon=True).start()
threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGTERM)).start()
t, errors = time.time(), 0
while time.time() - t < 0.5:
    try:
        stream.write("x" * 100000 + "\\n")
    except RuntimeError:
        errors += 1
print(stop.requested, errors, file=sys.__stdout__)
"""


def test_the_stop_line_of_a_signal_that_lands_inside_a_log_write_breaks_no_write():
    """The handler ran ``print`` to the buffered stderr the trainer was writing a log line to:
    "reentrant call", out of the interrupted write, a "--- Logging error ---" traceback in the
    run's log (seen once in CI with a real SIGTERM). The stop is still asked, and no write fails."""
    p = subprocess.run([sys.executable, "-c", _REENTRANT], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.split() == ["True", "0"], p.stdout


def test_sigterm_stops_a_sweep_after_its_epoch_calibrated_and_resumable(data, tmp_path):
    """A sweep took SIGTERM (timeout, docker stop) as its default: dead at once, the epoch lost,
    no variant calibrated. Now as a first Ctrl-C: the epoch and the state saved, the variants'
    best checkpoints calibrated, sweep.json saying ``terminated``, exit 143; --resume goes on."""
    spec = {"base": {"data": [str(data)], "checkpoints_dir": str(tmp_path), "name": "s", "epochs": 50, "batch_size": 8,
                     "workers": 1, "progress": False, "device": "cpu", "val_fraction": 0.25, "test_fraction": 0.15,
                     "layers": [1, 1], "width": 8, "calibration_min_per_class": 0},
            "val_seeds": [0], "variants": {"plain": {}}}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    # the sweep's epoch lines (stdout): signal during its second epoch
    proc, err = _sigterm_to_group_when([sys.executable, "-m", "bitmind.training.sweep", "--spec", str(tmp_path / "spec.json")],
                                       "stdout", lambda line: line.startswith("epoch 0 "))
    assert proc.returncode == 143 and "Traceback" not in err, (proc.returncode, err[-3000:])
    assert "SIGTERM: stopping after this epoch is saved" in err and "(SIGTERM)" in err
    run = tmp_path / "s"
    summary = json.loads((run / "sweep.json").read_text())
    assert summary["stopped"] == "terminated" and 1 <= summary["epochs_run"] < 50
    assert (run / SWEEP_STATE).exists()
    assert "temperature" in read_checkpoint(run / "plain" / "model_epoch_best.pth")[1]
