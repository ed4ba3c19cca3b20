"""Start-up checks that used to let a run go on wrongly with a warning or without a word.

``--resume`` with another ``--data`` was only warned about: the resumed run kept its best score
and best epoch from the old validation set, compared the new epochs with them and calibrated the
best checkpoint on the new one, two experiments mixed in one folder. It is a usage error now,
naming both data sets and the ways out; the same roots spelt otherwise (``d/``, a relative path,
a link) and roots that moved since the run started (the saved one is not found) still resume.
``--patch_size 100000`` trained on whole pictures without a word (the single run checked the
side without the picture size the sweep checks it against). ``--aug_freq_mask_ratio`` without
``--aug_freq_mask_prob`` masks nothing: said in a warning.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import pytest
import torch

from bitmind.training import TrainConfig, parse_config, train
from bitmind.training.config import ConfigError
from bitmind.training.run_folder import RunFolderError, check_resume_matches
from conftest import hear
from train_helpers import tiny_config
from validator_synth import make_folder


@pytest.fixture(scope="module")
def roots(tmp_path_factory) -> dict:
    top = tmp_path_factory.mktemp("resume_data")
    return {"a": make_folder(top / "a", n_per_class=12, seed=1, size=32),
            "b": make_folder(top / "b", n_per_class=12, seed=2, size=32)}


def _run(folder: Path, **opts) -> list[str]:
    """A run folder ``folder/t`` whose ``opt.json`` records ``opts``; the command line that resumes it."""
    (folder / "t").mkdir(parents=True)
    cfg = tiny_config(Path(opts.pop("data")), folder, **opts)
    (folder / "t" / "opt.json").write_text(json.dumps(cfg.to_dict()))
    return ["--resume", "--checkpoints_dir", str(folder), "--name", "t"]


def test_resume_on_other_data_is_a_one_line_usage_error(roots, tmp_path, usage_error):
    resume = _run(tmp_path, data=str(roots["a"]))
    err = usage_error(parse_config, [*resume, "--data", str(roots["b"])])  # was a warning, and the run went on
    assert err.count("\n") == 1 and "error: --resume" in err, err
    assert f"--data {roots['a']}" in err and f"--data {roots['b']}" in err, err  # what differs, both sides
    assert "another --name" in err and "--overwrite" in err, err  # the two ways out
    err = usage_error(parse_config, [*resume, "--data", str(roots["a"]), str(roots["b"])])  # a root added
    assert "two validation sets" in err, err
    err = usage_error(parse_config, [*resume, "--challenge_data", str(roots["b"])])  # validated on too
    assert "--challenge_data (none)" in err, err


def test_resume_on_other_data_is_refused_by_train_before_the_data_is_read(roots, tmp_path):
    _run(tmp_path, data=str(roots["a"]))
    cfg = tiny_config(roots["b"], tmp_path, resume=True)  # a config built in code, without parse_config
    with pytest.raises(RunFolderError, match="validated on --data"):
        check_resume_matches(cfg)
    with pytest.raises(RunFolderError, match="validated on --data"):
        train(cfg)
    assert sorted(p.name for p in (tmp_path / "t").iterdir()) == ["opt.json"]  # nothing written


def test_the_same_roots_spelt_otherwise_resume(roots, tmp_path, monkeypatch):
    resume = _run(tmp_path, data=str(roots["a"]))
    link = tmp_path / "link"
    os.symlink(roots["a"], link)
    monkeypatch.chdir(roots["a"].parent)
    for spelt in (f"{roots['a']}/", os.path.relpath(roots["a"]), f"./{roots['a'].name}", str(link)):
        assert parse_config([*resume, "--data", spelt]).data == [spelt]
    assert parse_config([*resume, "--data", str(roots["a"]), str(roots["a"]) + "/"]).data  # read once: the same
    # training-only roots may change (logged, as --lr is): the validation set stays
    assert parse_config([*resume, "--train_data", str(roots["b"])]).train_data == [str(roots["b"])]


def test_roots_that_moved_since_the_run_started_resume_from_their_new_place(roots, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(roots["a"], old)
    resume = _run(tmp_path, data=str(old))
    shutil.move(old, tmp_path / "moved")  # opt.json's root is gone: the data cannot be compared, as the hint says
    assert parse_config([*resume, "--data", str(tmp_path / "moved")]).data == [str(tmp_path / "moved")]


@pytest.mark.parametrize("argv, says", [
    (["--patch_size", "100000"], "patch_size must be 0 (whole image) or in [16, 256], got 100000"),
    (["--patch_size", "258"], "got 258"),
    (["--tile_shuffle", "48"], "tile_shuffle 48 must divide the training image side 256"),  # no patch: the picture
])
def test_a_patch_larger_than_the_training_pictures_is_a_usage_error(argv, says, usage_error):
    err = usage_error(parse_config, ["--data", "/nonexistent", *argv])
    assert says in err and err.count("\n") == 1, err


def test_the_patch_is_checked_against_the_picture_side_in_code_too():
    with pytest.raises(ConfigError, match=r"in \[16, 256\]"):
        TrainConfig(patch_size=100000, device="cpu").check()
    with pytest.raises(ConfigError, match="patch_size"):
        train(TrainConfig(patch_size=100000, device="cpu", data=["/nonexistent"]))  # before the data
    assert TrainConfig(patch_size=256, device="cpu").check().patch_size == 256  # the whole side: allowed
    assert TrainConfig(tile_shuffle=32, device="cpu").check().tile_shuffle == 32


@pytest.fixture
def config_log(caplog):
    """``caplog``'s records of ``bitmind.training.config``, heard on the logger itself at WARNING
    (other tests' logging setup, bittensor's included, may raise its level or keep its records
    from the root logger); undone after the test."""
    undo = hear(caplog, "bitmind.training.config", logging.WARNING)
    yield caplog
    undo()


def test_a_frequency_mask_ratio_without_its_probability_is_warned_about(config_log):
    def warned(argv) -> list[str]:
        config_log.clear()
        parse_config(["--device", "cpu", *argv])
        # a set: heard twice where the root logger passes the record on to caplog too
        return sorted({r.getMessage() for r in config_log.records if "aug_freq_mask" in r.getMessage()})

    (line,) = warned(["--aug_freq_mask_ratio", "0.3"])
    assert "--aug_freq_mask_ratio 0.3 has no effect" in line and "--aug_freq_mask_prob" in line
    assert warned(["--aug_freq_mask_ratio", "0.3", "--aug_freq_mask_prob", "0.5"]) == []
    assert warned(["--aug_freq_mask_prob", "0.5"]) == []
    assert warned([]) == []


def test_a_resumed_run_on_the_same_data_still_trains(roots, tmp_path):
    """The check lets the run's own data through end to end (opt.json written by a real run)."""
    torch.set_num_threads(1)
    args = ["--data", str(roots["a"]), "--checkpoints_dir", str(tmp_path), "--name", "t", "--epochs", "1",
            "--batch_size", "4", "--layers", "1", "1", "--width", "8", "--workers", "0", "--progress", "false",
            "--device", "cpu", "--val_fraction", "0.25", "--test_fraction", "0.15", "--calibrate", "false",
            "--max_steps_per_epoch", "1"]
    train(parse_config(args))
    summary = train(parse_config([*args, "--resume", "--epochs", "2", "--data", str(roots["a"]) + "/"]))
    assert [h["epoch"] for h in summary["history"]] == [0, 1]
