"""Ctrl-C that stops a sweep command at once ends it as it ends ``train_detector.py``: one
line on stderr saying what is kept and how to go on, exit status 130, no KeyboardInterrupt
traceback. For ``python -m bitmind.training.sweep`` and ``benchmarks/generalisation.py``:
a second Ctrl-C mid-run (the first asks to finish the epoch), one while they start (imports)
and, for ``generalisation.py score``, one while the pictures are scored.

The presses are real SIGINTs, handled by Python's own handler and the sweep's
``GracefulStop``, made inside the command (``ctrl_c_env``: a ``sitecustomize`` first on
PYTHONPATH, see ``conftest.py``) at a known point, so that no test waits on the clock: when a
named module is first imported, or when a named function is called for the n-th time
(``train_one_epoch``: the n-th epoch)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bitmind.shutdown import STARTING_INTERRUPTED
from bitmind.training.run_folder import SWEEP_STATE
from bitmind.training.sweep import SweepSpec, interrupted_sweep_message, run_sweep, sweep_marks
from validator_synth import make_folder

REPO = Path(__file__).resolve().parents[1]
GENERALISATION = REPO / "benchmarks" / "generalisation.py"
#: The second of three epochs: epoch 0 was validated and, a first best, wrote the state.
SECOND_EPOCH = "bitmind.training.loop:train_one_epoch:2"


def _run(ctrl_c_env, *argv, at_import: str = "", at_call: str = "") -> subprocess.CompletedProcess:
    """``python *argv`` in the repository, this repository's ``bitmind`` first, the Ctrl-C hook set."""
    env = {**ctrl_c_env(at_import, at_call, path=[REPO]), "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, *map(str, argv)], env=env, capture_output=True, text=True, timeout=300,
                          cwd=REPO)


def _the_line(r: subprocess.CompletedProcess) -> str:
    """The line a command stopped by Ctrl-C ended with: its status 130, no traceback, the only
    "(Ctrl-C)" line on stderr and its last (the sweep's own log lines also go to stderr)."""
    assert r.returncode == 130, (r.returncode, r.stdout[-2000:], r.stderr[-3000:])
    assert "Traceback" not in r.stderr and "KeyboardInterrupt" not in r.stderr, r.stderr[-3000:]
    said = [line for line in r.stderr.splitlines() if "(Ctrl-C)" in line]
    assert len(said) == 1 and r.stderr.rstrip("\n").splitlines()[-1] == said[0], r.stderr[-3000:]
    return said[0]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_folder(tmp_path_factory.mktemp("sweep_ctrl_c_data"), n_per_class=8, seed=3, size=48)


def _base(data: Path, out: Path) -> dict:
    """Three epochs of a tiny network on 16 small pictures: a second or two on a CPU."""
    return {"data": [str(data)], "checkpoints_dir": str(out), "name": "s", "epochs": 3, "batch_size": 8, "workers": 0,
            "progress": False, "device": "cpu", "val_fraction": 0.25, "test_fraction": 0.15, "layers": [1, 1],
            "width": 8}


@pytest.mark.slow
@pytest.mark.process
def test_a_second_ctrl_c_stops_a_sweep_in_one_line_and_resume_goes_on(ctrl_c_env, data, tmp_path, capsys):
    spec = {"base": _base(data, tmp_path), "val_seeds": [0], "variants": {"plain": {}}}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    r = _run(ctrl_c_env, "-m", "bitmind.training.sweep", "--spec", tmp_path / "spec.json", at_call=SECOND_EPOCH + ":2")
    assert "Ctrl-C: stopping after this epoch is saved" in r.stderr and "Ctrl-C" not in r.stdout  # the first press
    line = _the_line(r)
    out = tmp_path / "s"
    assert line == (f"stopped at once (Ctrl-C): what was trained since sweep_state.pt was last written is lost; {out} "
                    "keeps that state and every variant's best checkpoint (calibrated when the sweep ends); the same "
                    "command with --resume (RESUME=1 for the scripts) goes on from there")
    assert (out / "sweep_state.pt").exists() and not (out / "sweep.json").exists()
    # what the line says: --resume goes on from the state (after epoch 0) to the sweep's end (here, in this process)
    torch.set_num_threads(1)
    summary = run_sweep(SweepSpec.from_dict(spec, resume=True))
    assert f"resumed {out} after epoch 0 of 3" in capsys.readouterr().out
    assert "stopped" not in summary and summary["epochs"] == 3 and not (out / "sweep_state.pt").exists()


@pytest.mark.slow
@pytest.mark.process
def test_ctrl_c_while_the_sweep_command_imports_is_one_line(ctrl_c_env, data, tmp_path):
    """Late in sweep.py's imports (``bitmind.training.sweep_state``, after torch; the next test
    presses it while torch imports)."""
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"base": _base(data, tmp_path), "variants": {"plain": {}}}))
    r = _run(ctrl_c_env, "-m", "bitmind.training.sweep", "--spec", spec, at_import="bitmind.training.sweep_state")
    assert _the_line(r) == STARTING_INTERRUPTED and r.stderr.strip() == STARTING_INTERRUPTED
    assert not (tmp_path / "s").exists()


@pytest.mark.slow
@pytest.mark.process
def test_ctrl_c_while_the_sweep_command_imports_torch_is_one_line(ctrl_c_env, tmp_path):
    """runpy imports the package ``bitmind.training`` before sweep.py runs, where sweep.py cannot
    catch a Ctrl-C: the package is lazy (imports no torch), so torch loads in sweep.py's imports."""
    r = _run(ctrl_c_env, "-m", "bitmind.training.sweep", "--spec", tmp_path / "spec.json", at_import="torch")
    assert _the_line(r) == STARTING_INTERRUPTED and r.stderr.strip() == STARTING_INTERRUPTED


@pytest.fixture(scope="module")
def logo_stopped(ctrl_c_env, data, tmp_path_factory):
    """``generalisation.py train`` of a one-recipe LOGO spec, stopped by a second Ctrl-C in its
    second epoch: (the command's result, its sweep folder)."""
    tmp = tmp_path_factory.mktemp("logo_ctrl_c")
    spec = tmp / "logo.json"
    spec.write_text(json.dumps({"base": _base(data, tmp), "recipes": {"a": {}}, "folds": [], "ensemble_members": 0}))
    r = _run(ctrl_c_env, GENERALISATION, "train", "--spec", spec, "--checkpoints_dir", tmp, "--name", "logo",
             at_call=SECOND_EPOCH + ":2")
    return r, tmp / "logo"


@pytest.mark.slow
@pytest.mark.process
def test_a_second_ctrl_c_stops_generalisation_train_in_one_line(logo_stopped):
    r, out = logo_stopped
    assert _the_line(r) == (f"stopped at once (Ctrl-C): what was trained since sweep_state.pt was last written is "
                            f"lost; {out} keeps that state and every variant's best checkpoint (calibrated when the "
                            "sweep ends); the same command with --resume (RESUME=1 for the scripts) goes on from there")
    assert (out / "sweep_state.pt").exists() and (out / "a" / "model_epoch_best.pth").exists()


@pytest.mark.slow
@pytest.mark.process
def test_ctrl_c_while_generalisation_scores_writes_nothing_and_says_so(ctrl_c_env, logo_stopped):
    _, out = logo_stopped
    r = _run(ctrl_c_env, GENERALISATION, "score", "--sweep", out, "--workers", "0", "--device", "cpu",
             at_call="bitmind.inference:forward_outputs:1")  # the first batch of pictures
    assert _the_line(r) == "stopped (Ctrl-C) while scoring: nothing of the scores was written; run score again"
    assert not (out / "logo_scores.npz").exists()


@pytest.mark.slow
@pytest.mark.process
def test_ctrl_c_while_generalisation_imports_is_one_line(ctrl_c_env, tmp_path):
    r = _run(ctrl_c_env, GENERALISATION, "score", "--sweep", tmp_path, at_import="torch")
    assert _the_line(r) == STARTING_INTERRUPTED and r.stderr.strip() == STARTING_INTERRUPTED


def test_the_line_says_what_the_folder_keeps(tmp_path):
    """Read from the folder as the stopped sweep left it; files found there when the command
    started are an earlier sweep's (``--overwrite`` removes them only once the data is read)."""
    out = tmp_path / "s"
    fresh = sweep_marks(out)
    not_begun = "stopped (Ctrl-C) before the sweep began training: nothing to resume was saved; run the command again"
    assert interrupted_sweep_message(out, fresh) == not_begun  # (while the data is read)
    out.mkdir()
    (out / "spec.json").write_text("{}")  # an earlier sweep that ran to its end
    (out / "sweep.json").write_text('{"variants": {}}')
    earlier = sweep_marks(out)
    assert interrupted_sweep_message(out, earlier, overwrite=True) == not_begun
    (out / "sweep.json").unlink()  # replaced: this sweep's spec and a best checkpoint, no state yet
    (out / "spec.json").write_text('{"base": {}}')
    (out / "a").mkdir()
    (out / "a" / "model_epoch_best.pth").write_bytes(b"best")
    no_state = f"stopped (Ctrl-C) before the sweep wrote sweep_state.pt: {out} holds nothing to resume; run the command again"
    assert interrupted_sweep_message(out, earlier, overwrite=True) == no_state
    assert interrupted_sweep_message(out, fresh) == no_state + " with --overwrite"  # or it is refused
    (out / SWEEP_STATE).write_bytes(b"state")
    kept = interrupted_sweep_message(out, earlier, overwrite=True)
    assert kept.startswith("stopped at once (Ctrl-C): what was trained since sweep_state.pt was last written is lost; ")
    assert kept.endswith("the same command with --resume in place of --overwrite (RESUME=1 for the scripts) goes on from there")
    assert interrupted_sweep_message(out, sweep_marks(out), resume=True) == kept.replace(" in place of --overwrite", "")
    (out / SWEEP_STATE).unlink()  # ran to its end: the summary written, the state removed
    (out / "sweep.json").write_text('{"variants": {}}')
    ended = f"stopped (Ctrl-C) after the sweep ran to its end: {out / 'sweep.json'} holds its results"
    assert interrupted_sweep_message(out, fresh) == ended
