"""``--resume`` from any working folder, with the run's own runtime options.

The guide runs the trainer from the repository root and from ``base_miner/NPR``, and says
that ``--resume`` reads the options the command line leaves out back from the run's
``opt.json``. Two ways that failed: ``opt.json`` held ``--data`` as given (relative), so a run
started in one folder and resumed from another read its data from the wrong place (``data
folder not found``); and where and how fast the run ran (``--workers 2``) was never read
back, so a resumed run went on with the default 4 workers and rewrote ``opt.json`` with them.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from bitmind.training import parse_config, train
from validator_synth import make_folder

TINY = ["--epochs", "1", "--batch_size", "8", "--layers", "1", "1", "--width", "8", "--progress", "false",
        "--device", "cpu", "--val_fraction", "0.25", "--test_fraction", "0.15", "--max_steps_per_epoch", "2"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_folder(tmp_path_factory.mktemp("resume_paths"), n_per_class=12, seed=5, size=48)


@pytest.fixture
def folders(data, tmp_path) -> dict:
    """A work tree: ``top/d`` (the data), ``top/a`` (where runs start), ``top/a/b`` (another working folder)."""
    top = tmp_path / "top"
    (top / "a" / "b").mkdir(parents=True)
    os.symlink(data, top / "d")
    return {"top": top, "a": top / "a", "b": top / "a" / "b", "ck": top / "ck"}


def test_a_run_started_in_one_folder_resumes_from_another(folders, monkeypatch):
    torch.set_num_threads(1)
    monkeypatch.chdir(folders["a"])
    train(parse_config(["--data", "../d", "--checkpoints_dir", "../ck", "--name", "t", "--workers", "0", *TINY]))
    opt = json.loads((folders["ck"] / "t" / "opt.json").read_text())
    assert opt["data"] == [os.path.abspath(folders["top"] / "d")]  # absolute: read alike from any folder
    assert Path(opt["checkpoints_dir"]).is_absolute()
    monkeypatch.chdir(folders["b"])  # where ../d is not the data
    cfg = parse_config(["--resume", "--checkpoints_dir", str(folders["ck"]), "--name", "t", "--epochs", "2"])
    assert Path(cfg.data[0]).is_dir()
    summary = train(cfg)
    assert [h["epoch"] for h in summary["history"]] == [0, 1]  # epoch 0 restored, epoch 1 trained on the same data


def test_an_old_opt_json_with_relative_paths_resumes_from_its_folder_and_says_so_elsewhere(folders, monkeypatch, capsys):
    """An ``opt.json`` written before paths were stored absolute holds ``../d`` relative to the
    folder the run started in, which it does not record: from elsewhere the resume stops with one
    line saying so (not "data folder not found"), from that folder it resumes as it always did."""
    run = folders["ck"] / "t"
    run.mkdir(parents=True)
    monkeypatch.chdir(folders["a"])
    old = {**parse_config(["--data", "../d", "--workers", "0", *TINY]).to_dict(), "checkpoints_dir": str(folders["ck"]),
           "name": "t"}
    (run / "opt.json").write_text(json.dumps(old))
    monkeypatch.chdir(folders["b"])
    with pytest.raises(SystemExit) as e:
        parse_config(["--resume", "--checkpoints_dir", str(folders["ck"]), "--name", "t"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "--data ../d" in err and "relative to the folder the run was started in" in err, err
    monkeypatch.chdir(folders["a"])
    assert parse_config(["--resume", "--checkpoints_dir", str(folders["ck"]), "--name", "t"]).data == \
        [os.path.abspath(folders["top"] / "d")]


def test_resume_keeps_the_runs_workers_and_the_command_lines(folders, monkeypatch):
    torch.set_num_threads(1)
    monkeypatch.chdir(folders["a"])
    start = ["--data", "../d", "--checkpoints_dir", "../ck", "--name", "t"]
    train(parse_config([*start, "--workers", "1", *TINY]))
    resume = ["--resume", "--checkpoints_dir", "../ck", "--name", "t", "--epochs", "2"]
    # left out: the run's own --workers 1, not the default 4 (as the guide says of every option left out)
    cfg = parse_config(resume)
    assert (cfg.workers, cfg.device, cfg.progress) == (1, "cpu", False)
    # given: the command line's, in the config and in the opt.json the resumed run writes
    cfg = parse_config([*resume, "--workers", "0", "--progress", "false"])
    assert cfg.workers == 0
    train(cfg)
    assert json.loads((folders["ck"] / "t" / "opt.json").read_text())["workers"] == 0
    # a structural option that contradicts the run is still refused
    with pytest.raises(SystemExit):
        parse_config([*resume, "--width", "16"])
    if not torch.cuda.is_available():  # a run's device this machine lacks: the command line's, not a usage error
        opt_path = folders["ck"] / "t" / "opt.json"
        opt_path.write_text(json.dumps({**json.loads(opt_path.read_text()), "device": "cuda"}))
        assert parse_config(resume).device == "auto"
