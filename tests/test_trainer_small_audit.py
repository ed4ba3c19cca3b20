"""Four small operator-facing defects of the trainer, each reproduced on tiny CPU data.

1. ``--amp bf16`` on a CPU trained in fp32, without a word, while ``opt.json`` and the
   checkpoints' ``train_options`` said bf16: they now keep ``amp`` as asked (a resume asks it
   again) and add ``amp_resolved``, what ran, and the run says so in one line at its start.
2. A run that saved no best epoch (a non-finite loss in its first epoch) wrote a ``summary.json``
   naming ``model_epoch_best.pth``, a file that was not there: ``best_checkpoint`` is now null,
   and the command's end copes with it.
3. ``--init_from`` naming a folder (a run folder given for its model) was refused as
   "no such file"; now one line says it is a folder and names the model file inside it to give.
4. An ``--overwrite`` run that ended before saving an epoch, with a Ctrl-C held while the earlier
   run's files went back (``EarlierRun.restore``'s ``signals_deferred``), ended with "the same
   command with --resume goes on from there", which would resume the earlier run; it now says the
   earlier run's files are kept, as a Ctrl-C at any other moment of that run does.
"""
from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import signal
from pathlib import Path

import pytest
import torch

from bitmind.checkpoint import model_meta, read_checkpoint, save_checkpoint
from bitmind.models import build_model
from bitmind.training import TrainConfig, parse_config, train
from conftest import hear
from train_helpers import tiny_config
from validator_synth import make_folder

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    torch.set_num_threads(1)
    return make_folder(tmp_path_factory.mktemp("small_audit"), n_per_class=12, seed=5, size=48)


@pytest.fixture(scope="module")
def entry():
    """``base_miner/NPR/train_detector.py`` as a module (its ``main`` runs in this process)."""
    spec = importlib.util.spec_from_file_location("train_detector_small_audit",
                                                  REPO / "base_miner" / "NPR" / "train_detector.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _argv(data: Path, out: Path, *more: str) -> list[str]:
    return ["--data", str(data), "--checkpoints_dir", str(out), "--name", "t", "--epochs", "1", "--batch_size", "8",
            "--layers", "1", "1", "--width", "8", "--workers", "0", "--progress", "false", "--device", "cpu",
            "--val_fraction", "0.25", "--test_fraction", "0.15", "--calibration_min_per_class", "0", *more]


# ---------------------------------------------------------------------------- 1. --amp on a CPU
def test_amp_bf16_on_a_cpu_is_recorded_as_it_ran_and_said_once_at_the_start(data, tmp_path, caplog):
    undo = hear(caplog, "bitmind.training.trainer")
    try:
        summary = train(tiny_config(data, tmp_path, epochs=1, amp="bf16"))
    finally:
        undo()
    run = tmp_path / "t"
    best = run / "model_epoch_best.pth"  # (2.: a run that saved a best epoch still names it)
    assert summary["best_checkpoint"] == str(best) and best.is_file()
    assert json.loads((run / "summary.json").read_text())["best_checkpoint"] == str(best)
    opt = json.loads((run / "opt.json").read_text())
    assert opt["amp"] == "bf16" and opt["amp_resolved"] == "none"  # as asked, and as it ran (fp32)
    for name in ("model_epoch_best.pth", "model_last.pth"):
        options = read_checkpoint(run / name)[1]["train_options"]
        assert options["amp"] == "bf16" and options["amp_resolved"] == "none", name
    said = [r.getMessage() for r in {id(r): r for r in caplog.records}.values()  # heard twice: the logger, the root
            if "--amp bf16" in r.getMessage()]
    assert len(said) == 1 and "fp32" in said[0] and "amp_resolved 'none'" in said[0], said
    # the key that is no option does not disturb a resume, which reads opt.json back
    cfg = parse_config(["--resume", "--checkpoints_dir", str(tmp_path), "--name", "t", "--epochs", "2",
                        "--progress", "false", "--workers", "0"])
    assert cfg.amp == "bf16" and not hasattr(cfg, "amp_resolved")
    assert [h["epoch"] for h in train(cfg)["history"]] == [0, 1]
    assert json.loads((run / "opt.json").read_text())["amp_resolved"] == "none"


def test_amp_auto_on_a_cpu_records_what_it_resolved_to_without_a_warning(data, tmp_path, caplog):
    undo = hear(caplog, "bitmind.training.trainer")
    try:
        train(tiny_config(data, tmp_path, epochs=1, amp="auto"))
    finally:
        undo()
    assert json.loads((tmp_path / "t" / "opt.json").read_text())["amp_resolved"] == "none"
    assert not [r for r in caplog.records if "--amp" in r.getMessage() and r.levelno >= logging.WARNING]


# ---------------------------------------------------------------------------- 2. no best checkpoint
def test_a_run_that_saved_no_best_epoch_names_no_best_checkpoint(data, tmp_path, monkeypatch, entry, capsys, caplog):
    from bitmind.training import trainer

    monkeypatch.setattr(trainer, "epoch_failure", lambda done, learner: "non-finite")
    undo = hear(caplog, "bitmind.training.trainer")
    try:
        summary = train(tiny_config(data, tmp_path, epochs=2))
    finally:
        undo()
    run = tmp_path / "t"
    assert summary["stopped"] == "non-finite" and not (run / "model_epoch_best.pth").exists()
    assert summary["best_checkpoint"] is None
    assert json.loads((run / "summary.json").read_text())["best_checkpoint"] is None
    # the line it stops with does not claim checkpoints that were never saved
    stop = [r.getMessage() for r in caplog.records if "not finite numbers" in r.getMessage()]
    assert stop and "last good epoch" not in stop[0] and "no epoch of this run was saved" in stop[0], stop
    # the command's end: exit 1, no "checkpoint: None", no traceback
    with pytest.raises(SystemExit) as ended:
        entry.main(_argv(data, tmp_path / "cli"))
    out, err = capsys.readouterr()
    assert ended.value.code == 1 and "Traceback" not in err and "checkpoint: None" not in out
    assert json.loads((tmp_path / "cli" / "t" / "summary.json").read_text())["best_checkpoint"] is None


# ---------------------------------------------------------------------------- 3. --init_from a folder
def _model_file(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = build_model("npr", layers=[1, 1], width=8)
    return save_checkpoint(model, path, model_meta(model, train_options={"patch_size": 32}))


def test_init_from_a_run_folder_names_its_best_model_in_one_line(tmp_path, usage_error):
    run = tmp_path / "run"
    _model_file(run / "model_epoch_best.pth")
    _model_file(run / "model_last.pth")
    err = usage_error(parse_config, ["--init_from", str(run), "--data", "d"])
    assert err.count("\n") == 1, err
    assert err.strip().endswith(f"--init_from {run} is a folder, not a model file: give the model inside it, "
                                f"--init_from {run / 'model_epoch_best.pth'}"), err
    assert "no such file" not in err
    # a config made in code (a sweep's variant) says the same, not read_checkpoint's bare "is a folder"
    from bitmind.training.trainer import build_training_model

    with pytest.raises(IsADirectoryError, match="model_epoch_best.pth"):
        build_training_model(TrainConfig(init_from=str(run), layers=[1, 1], width=8), torch.device("cpu"))


def test_init_from_other_folders_names_the_models_inside_or_says_there_are_none(tmp_path, usage_error):
    one = tmp_path / "models"
    _model_file(one / "mine.pth")
    err = usage_error(parse_config, ["--init_from", str(one)])
    assert f"--init_from {one} is a folder, not a model file" in err and f"--init_from {one / 'mine.pth'}" in err, err
    empty = tmp_path / "empty"
    empty.mkdir()
    err = usage_error(parse_config, ["--init_from", str(empty)])
    assert f"--init_from {empty} is a folder, not a model file, and holds no .pth model" in err, err
    assert "no such file" in usage_error(parse_config, ["--init_from", str(tmp_path / "absent.pth")])  # as before


# ---------------------------------------------------------------------------- 4. Ctrl-C held by restore
@pytest.fixture(scope="module")
def earlier(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("earlier_run")
    train(tiny_config(data, out, epochs=1))
    return out / "t"


def _boom(*a, **kw):
    raise RuntimeError("boom")


@pytest.mark.parametrize("ending", ["a diverging lr", "a crash in epoch 0"])
def test_a_ctrl_c_held_while_the_earlier_run_goes_back_says_the_earlier_run_is_kept(ending, data, earlier, tmp_path,
                                                                                     monkeypatch, entry, capsys):
    from bitmind.training import run_folder, trainer

    run = tmp_path / "t"
    shutil.copytree(earlier, run)
    if ending == "a diverging lr":  # train returns, stopped; restore runs as the run's folder is let go
        monkeypatch.setattr(trainer, "epoch_failure", lambda done, learner: "non-finite")
    else:  # an exception leaves train; restore runs on its way out
        monkeypatch.setattr(trainer, "train_one_epoch", _boom)
    real, pressed = run_folder._move_back, []

    def move_back(run_dir, *kind):  # Ctrl-C while the earlier run's files go back: held, then raised as restore ends
        if not pressed:
            pressed.append(True)
            os.kill(os.getpid(), signal.SIGINT)
        return real(run_dir, *kind)

    monkeypatch.setattr(run_folder, "_move_back", move_back)
    with pytest.raises(SystemExit) as ended:
        entry.main(_argv(data, tmp_path, "--epochs", "3", "--overwrite"))
    err = capsys.readouterr().err
    assert pressed and ended.value.code == 130 and "Traceback" not in err, err
    assert err.rstrip("\n").splitlines()[-1] == (f"stopped (Ctrl-C) before this run saved an epoch: {run} holds the "
                                                 "earlier run's files as they were (--overwrite replaces them only once "
                                                 "an epoch is saved); run the command again")
    assert (run / "model_epoch_best.pth").read_bytes() == (earlier / "model_epoch_best.pth").read_bytes()
    assert not (run / run_folder.ASIDE).exists()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_earlier_run_marks_an_exception_raised_by_its_restore(tmp_path, monkeypatch):
    """The unit under the test above: whatever leaves ``EarlierRun``'s block from ``restore``
    carries ``earlier_run_kept`` once the earlier run's files are back."""
    from bitmind.training import run_folder

    run = tmp_path / "t"
    run.mkdir()
    for name in ("model_epoch_best.pth", "state_last.pt", "opt.json"):
        (run / name).write_bytes(b"earlier")
    real = run_folder._move_back

    def move_back(run_dir, *kind):
        real(run_dir, *kind)
        raise KeyboardInterrupt  # as ``signals_deferred`` raises a held Ctrl-C once the files are back

    monkeypatch.setattr(run_folder, "_move_back", move_back)
    with pytest.raises(KeyboardInterrupt) as stop:
        with run_folder.EarlierRun(run) as earlier:
            earlier.set_aside()
    assert stop.value.earlier_run_kept == run
    assert (run / "state_last.pt").read_bytes() == b"earlier"
