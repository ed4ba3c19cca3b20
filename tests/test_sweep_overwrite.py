"""A sweep's ``--overwrite`` keeps the earlier sweep until the new one has saved an epoch, as the
trainer keeps an earlier run (``bitmind.training.run_folder.EarlierRun``); a sweep records the
mixed precision it ran in (``amp_resolved``); ``generalisation.py train`` ends a SIGTERM that comes
while it reads its data in one line, exit status 143.

Why: a sweep's ``--overwrite`` removed the earlier sweep's variant folders and summary as soon as
the data was read, so a new sweep that crashed, read no picture, diverged or was stopped in its first
epoch left the operator neither sweep (and ``generalisation.py`` replaced the earlier
``logo_spec.json`` before even that); ``sweep.json`` said nothing of ``--amp bf16`` training in fp32
on a CPU; and a SIGTERM (``timeout``, ``docker stop``) before ``generalisation.py train``'s first
epoch killed it without a word. The signals are real: sent in the process (``os.kill``), or inside the
command at a known point (``ctrl_c_env``, ``sig="SIGTERM"``), so no test waits on the clock."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bitmind.checkpoint import read_checkpoint
from bitmind.shutdown import sigterm_as_interrupt
from bitmind.training import sweep as sweep_mod
from bitmind.training import train
from bitmind.training.run_folder import (ASIDE, ASIDE_KIND, ASIDE_MOVING, SWEEP, SWEEP_STATE, RunFolderError,
                                         recover_earlier_run, settle_earlier_run)
from bitmind.training.sweep import SweepSpec, run_sweep
from bitmind.training.trainer import TrainingDataError
from conftest import hear
from train_helpers import in_epoch_0, kill_when_it_says, looking_aside, tiny_config, tree
from validator_synth import make_folder

REPO = Path(__file__).resolve().parents[1]
GENERALISATION = REPO / "benchmarks" / "generalisation.py"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_folder(tmp_path_factory.mktemp("sweep_overwrite_data"), n_per_class=12, seed=5, size=48)


def _spec_dict(data: Path, out: Path, epochs: int = 1, variants: dict | None = None, **base) -> dict:
    """A sweep of a tiny network (``out/s``) on the CPU, validated on one draw: a second or two an epoch."""
    return {"base": {"data": [str(data)], "checkpoints_dir": str(out), "name": "s", "epochs": epochs, "batch_size": 8,
                     "workers": 0, "progress": False, "device": "cpu", "val_fraction": 0.25, "test_fraction": 0.15,
                     "layers": [1, 1], "width": 8, "calibration_min_per_class": 0, **base},
            "val_seeds": [0], "ensemble_members": 0, "variants": variants or {"a": {}}}


def _overwrite(data: Path, out: Path, epochs: int = 3) -> SweepSpec:
    """An ``--overwrite`` sweep into ``out/s`` with another variant beside ``a``, whose folder must go too
    when the earlier sweep comes back."""
    return SweepSpec.from_dict(_spec_dict(data, out, epochs, {"a": {"seed": 1}, "b": {"seed": 2}}), overwrite=True)


@pytest.fixture(scope="module")
def earlier(data, tmp_path_factory) -> Path:
    """A finished one-epoch sweep (``<dir>/s``, one variant ``a``), copied by each test that overwrites it."""
    out = tmp_path_factory.mktemp("earlier_sweep")
    run_sweep(SweepSpec.from_dict(_spec_dict(data, out)))
    return out / "s"


@pytest.fixture
def sweep_dir(earlier, tmp_path) -> Path:
    """A copy of the earlier sweep at ``tmp_path/s``, with the ``logo_spec.json`` of a LOGO sweep."""
    shutil.copytree(earlier, tmp_path / "s")
    (tmp_path / "s" / "logo_spec.json").write_text('{"earlier": true}')
    return tmp_path / "s"


def _in_epoch_0(action):
    """The sweep's ``train_one_epoch`` running ``action()`` as its first epoch starts."""
    return in_epoch_0(sweep_mod.train_one_epoch, action)


def _signal_twice(signum: int):
    def send():
        for _ in range(2):  # the first asks to finish the epoch, the second stops at once
            os.kill(os.getpid(), signum)
    return send


def _boom():
    raise RuntimeError("boom")


# how a new sweep ends before it saves an epoch: (patch of the sweep, what ``run_sweep`` raises or None)
ENDINGS = {
    "ctrl-c twice in epoch 0": (lambda mp: mp.setattr(sweep_mod, "train_one_epoch", _in_epoch_0(_signal_twice(signal.SIGINT))),
                                KeyboardInterrupt),
    "sigterm twice in epoch 0": (lambda mp: mp.setattr(sweep_mod, "train_one_epoch", _in_epoch_0(_signal_twice(signal.SIGTERM))),
                                 KeyboardInterrupt),  # (StopSignal)
    "a crash in epoch 0": (lambda mp: mp.setattr(sweep_mod, "train_one_epoch", _in_epoch_0(_boom)), RuntimeError),
    "no picture readable": (lambda mp: mp.setattr(sweep_mod, "train_one_epoch",
                                                  lambda *a, **kw: {"images": 0, "skipped": 9, "seconds": 0.0}),
                            TrainingDataError),
    "every variant diverging": (lambda mp: mp.setattr(sweep_mod._Variant, "diverged", lambda self: True), None),
}


@pytest.mark.parametrize("ending", list(ENDINGS))
def test_an_overwrite_sweep_that_ends_before_saving_an_epoch_keeps_the_earlier_sweep(ending, data, sweep_dir, monkeypatch,
                                                                                     run_folder_logs):
    before = tree(sweep_dir)
    assert {"sweep.json", "spec.json", "logo_spec.json", "a/model_epoch_best.pth", "a/history.json"} <= set(before)
    patch, raised = ENDINGS[ending]
    patch(monkeypatch)
    with sigterm_as_interrupt():  # as the command runs it: a SIGTERM outside the epochs stops as Ctrl-C does
        if raised is None:
            summary = run_sweep(_overwrite(data, sweep_dir.parent))
            assert summary["stopped"] == "non-finite" and summary["earlier_sweep_kept"] == str(sweep_dir)
        else:
            with pytest.raises(raised):
                run_sweep(_overwrite(data, sweep_dir.parent))
    assert tree(sweep_dir) == before  # the earlier sweep, byte for byte, and nothing of the new one (no b/, no .previous_run)
    assert "the earlier sweep's files are back in" in run_folder_logs.text
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_generalisation_train_overwrite_that_saves_no_epoch_leaves_the_earlier_logo_spec(data, sweep_dir, monkeypatch,
                                                                                        capsys):
    """Every variant diverging in its first epoch: ``run_sweep`` returns (stopped, exit status 1), and
    ``cmd_train`` wrote what ran into ``logo_spec.json`` after it, into the earlier sweep put back."""
    from conftest import load_script

    gen = load_script("benchmarks/generalisation.py")
    before = tree(sweep_dir)
    monkeypatch.setattr(sweep_mod._Variant, "diverged", lambda self: True)
    with pytest.raises(SystemExit) as ended:
        gen.main(["train", "--spec", str(_logo_spec(data, sweep_dir.parent)), "--checkpoints_dir", str(sweep_dir.parent),
                  "--name", sweep_dir.name, "--overwrite"])
    assert ended.value.code == 1
    assert tree(sweep_dir) == before
    capsys.readouterr()


@pytest.mark.parametrize("epochs", [1, 2])  # saved at its end (sweep.json), or with its state after epoch 0
def test_an_overwrite_sweep_keeps_the_earlier_sweep_aside_until_it_saves_an_epoch_then_removes_it(epochs, data, sweep_dir,
                                                                                                  monkeypatch,
                                                                                                  run_folder_logs):
    old = tree(sweep_dir)
    seen, look = looking_aside(sweep_dir)  # as the new sweep's first epoch starts: the earlier sweep is aside, not gone
    monkeypatch.setattr(sweep_mod, "train_one_epoch", _in_epoch_0(look))
    summary = run_sweep(SweepSpec.from_dict(_spec_dict(data, sweep_dir.parent, epochs, {"b": {"seed": 2}}), overwrite=True))
    for name in ("sweep.json", "a/model_epoch_best.pth", "logo_spec.json"):
        assert seen["aside"].get(name) == old[name], name
    assert seen["top"] == [ASIDE, "b", "spec.json"]  # nothing of the earlier sweep mixed in
    assert "stopped" not in summary and list(summary["variants"]) == ["b"]
    assert sorted(p.name for p in sweep_dir.iterdir()) == ["b", "spec.json", "sweep.json"]  # the earlier sweep is gone
    assert list(json.loads((sweep_dir / "sweep.json").read_text())["variants"]) == ["b"]
    assert "removed the earlier sweep's files" in run_folder_logs.text


_KILLED_SWEEP = """
import json, sys, time
from bitmind.training import sweep

def epoch(*a, **kw):  # the first epoch never ends: the test kills this process (SIGKILL) here
    print("in epoch 0", flush=True)
    time.sleep(120)

sweep.train_one_epoch = epoch
sweep.run_sweep(sweep.SweepSpec.from_dict(json.loads(sys.argv[1]), overwrite=True))
"""


def _killed_in_epoch_0(spec: dict, out: Path) -> None:
    """An ``--overwrite`` sweep of ``spec`` killed (SIGKILL: no clean-up at all) in its first epoch."""
    kill_when_it_says([sys.executable, "-c", textwrap.dedent(_KILLED_SWEEP), json.dumps(spec)], "in epoch 0", cwd=REPO,
                      env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert (out / ASIDE / "a" / "model_epoch_best.pth").is_file() and (out / "spec.json").is_file()  # what it left


def test_a_killed_overwrite_sweep_is_settled_by_the_next_sweep_never_mixed_in(data, sweep_dir, run_folder_logs):
    before = tree(sweep_dir)
    new = _spec_dict(data, sweep_dir.parent, 3, {"a": {"seed": 1}, "b": {"seed": 2}})
    _killed_in_epoch_0(new, sweep_dir)
    # the next sweep in the folder puts the earlier sweep back first, then finds it there: refused as usual
    with pytest.raises(RunFolderError, match="already holds a sweep"):
        run_sweep(SweepSpec.from_dict(new))
    assert tree(sweep_dir) == before and "killed before it saved an epoch" in run_folder_logs.text
    # --resume of the earlier (finished) sweep finds it as it was: its results, nothing trained
    _killed_in_epoch_0(new, sweep_dir)
    resumed = run_sweep(SweepSpec.from_dict(_spec_dict(data, sweep_dir.parent), resume=True))
    assert resumed == json.loads((sweep_dir / "sweep.json").read_text()) and tree(sweep_dir) == before


@pytest.mark.parametrize("by", ["the trainer's --resume", "settle_earlier_run (a command line's --resume)"])
def test_a_trainer_settles_a_killed_overwrite_sweep_by_the_sweeps_files(by, data, sweep_dir, run_folder_logs):
    """A training run (``train``, which settles the folder as a run's) or a command line's --resume
    (``parse_config`` settles it before reading ``opt.json``) in the folder of an --overwrite sweep
    killed before it saved an epoch. Why: judged by the caller's kind, nothing of the new sweep is a
    run's file, so the earlier sweep came back with the new sweep's variant folder ``b`` beside it
    and its spec replaced. ``.previous_run`` now says a sweep set it aside (``ASIDE_KIND``): what the
    new sweep wrote goes, and the earlier sweep is back as it was."""
    before = tree(sweep_dir)
    _killed_in_epoch_0(_spec_dict(data, sweep_dir.parent, 3, {"b": {"seed": 2}}), sweep_dir)
    assert (sweep_dir / "b").is_dir() and (sweep_dir / ASIDE / ASIDE_KIND).is_file()
    if by == "the trainer's --resume":  # the earlier sweep is back, and it is no run to resume
        with pytest.raises(RunFolderError, match="run it again to resume the earlier run"):
            train(tiny_config(data, sweep_dir.parent, name=sweep_dir.name, epochs=2, resume=True))
    else:
        settle_earlier_run(sweep_dir)
    assert tree(sweep_dir) == before
    assert "an --overwrite sweep was killed before it saved an epoch" in run_folder_logs.text


def test_what_a_killed_overwrite_sweep_leaves_is_finished_the_way_it_had_got_to(tmp_path):
    # killed after saving its state (before removing the earlier files): they go, as it would have done
    out = tmp_path / "saved"
    (out / ASIDE / "a").mkdir(parents=True)
    (out / ASIDE / "a" / "model_epoch_best.pth").write_text("earlier")
    (out / ASIDE / "sweep.json").write_text("earlier")
    (out / "b").mkdir()
    (out / "b" / "history.json").write_text("new")
    (out / SWEEP_STATE).write_text("new")
    assert recover_earlier_run(out, SWEEP) == "removed"
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == ["b", "b/history.json", SWEEP_STATE]
    # killed while setting them aside: what was moved goes back, what was not moved stays
    out = tmp_path / "moving"
    (out / ASIDE_MOVING / "a").mkdir(parents=True)
    (out / ASIDE_MOVING / "a" / "model_epoch_best.pth").write_text("earlier best")
    (out / "sweep.json").write_text("earlier summary")
    assert recover_earlier_run(out, SWEEP) == "restored"
    assert {str(p.relative_to(out)): p.read_text() for p in out.rglob("*") if p.is_file()} == {
        "a/model_epoch_best.pth": "earlier best", "sweep.json": "earlier summary"}
    assert recover_earlier_run(out, SWEEP) is None  # nothing left to settle


def test_a_sweep_records_the_mixed_precision_it_ran_in_and_says_it_once(data, tmp_path, caplog):
    """``--amp bf16`` on a CPU trains in fp32 (autocast is used on CUDA only): ``sweep.json`` and the
    variants' checkpoints keep ``amp`` as asked and add ``amp_resolved``, as the trainer's opt.json does."""
    undo = hear(caplog, "bitmind.training.trainer")
    try:
        summary = run_sweep(SweepSpec.from_dict(_spec_dict(data, tmp_path, amp="bf16")))
    finally:
        undo()
    out = tmp_path / "s"
    written = json.loads((out / "sweep.json").read_text())
    assert summary["amp"] == written["amp"] == "bf16" and summary["amp_resolved"] == written["amp_resolved"] == "none"
    options = read_checkpoint(out / "a" / "model_epoch_best.pth")[1]["train_options"]
    assert options["amp"] == "bf16" and options["amp_resolved"] == "none"
    said = [r.getMessage() for r in {id(r): r for r in caplog.records}.values() if "--amp bf16" in r.getMessage()]
    assert len(said) == 1 and "fp32" in said[0] and "sweep.json" in said[0] and "amp_resolved 'none'" in said[0], said


# ---------------------------------------------------------------------------- generalisation.py train and SIGTERM
def _run(ctrl_c_env, *argv, at_call: str) -> subprocess.CompletedProcess:
    """``python *argv`` in the repository, SIGTERM sent inside it at ``at_call`` (``ctrl_c_env``)."""
    env = {**ctrl_c_env(at_call=at_call, path=[REPO], sig="SIGTERM"), "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *map(str, argv)], env=env, capture_output=True, text=True, timeout=300,
                          cwd=REPO)


def _the_line(r: subprocess.CompletedProcess) -> str:
    """The line a command stopped by SIGTERM ended with: exit status 143 (128 + 15), no traceback,
    the only "(SIGTERM)" line on stderr and its last."""
    assert r.returncode == 143, (r.returncode, r.stdout[-2000:], r.stderr[-3000:])
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    said = [line for line in r.stderr.splitlines() if "(SIGTERM)" in line]
    assert len(said) == 1 and r.stderr.rstrip("\n").splitlines()[-1] == said[0], r.stderr[-3000:]
    return said[0]


def _logo_spec(data: Path, folder: Path) -> Path:
    spec = folder / "logo.json"
    spec.write_text(json.dumps({"base": _spec_dict(data, folder, 3)["base"], "recipes": {"a": {}}, "folds": [],
                                "ensemble_members": 0}))
    return spec


#: Where the data is read before training: the LOGO spec indexing its roots, the sweep reading them.
READING = {"indexing the roots": "bitmind.data.sources:open_source:1",
           "reading the data": "bitmind.training.trainer:build_datasets:1"}


@pytest.mark.slow
@pytest.mark.process
@pytest.mark.parametrize("when", list(READING))
def test_sigterm_while_generalisation_train_reads_its_data_ends_in_one_line_143(when, ctrl_c_env, data, tmp_path):
    r = _run(ctrl_c_env, GENERALISATION, "train", "--spec", _logo_spec(data, tmp_path), "--checkpoints_dir", tmp_path,
             "--name", "logo", at_call=READING[when])
    assert _the_line(r) == ("stopped (SIGTERM) before the sweep began training: nothing to resume was saved; run the "
                            "command again")
    assert not (tmp_path / "logo").exists()


@pytest.mark.slow
@pytest.mark.process
@pytest.mark.parametrize("when", ["reading the data", "twice in epoch 0"])
def test_sigterm_stopping_generalisation_train_overwrite_keeps_the_earlier_sweep_and_its_logo_spec(when, ctrl_c_env, data,
                                                                                                   sweep_dir):
    before = tree(sweep_dir)
    at_call = READING[when] if when in READING else "bitmind.training.loop:train_one_epoch:1:2"
    r = _run(ctrl_c_env, GENERALISATION, "train", "--spec", _logo_spec(data, sweep_dir.parent), "--checkpoints_dir",
             sweep_dir.parent, "--name", sweep_dir.name, "--overwrite", at_call=at_call)
    assert _the_line(r) == (f"stopped (SIGTERM) before this sweep saved an epoch: {sweep_dir} holds the earlier sweep's "
                            "files as they were (--overwrite replaces them only once an epoch is saved); run the command "
                            "again")
    assert tree(sweep_dir) == before  # logo_spec.json too: written only once the earlier sweep's is aside
