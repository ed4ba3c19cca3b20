"""``parse_config`` reports only the typed errors as usage errors (one ``error:`` line, exit 2):
``ConfigError`` (an option value, or an ``--init_from`` file that contradicts the options),
``RunFolderError`` (``--resume``), ``OSError`` (a missing file) and ``CheckpointError`` (an
unreadable file). Any other exception, a plain ValueError included, is a bug and keeps its
traceback: it used to end as a one-line usage error that hid where it came from."""
from __future__ import annotations

import json

import pytest
import torch

from bitmind.checkpoint import model_meta, save_checkpoint
from bitmind.models import build_model
from bitmind.training import TrainConfig, parse_config
from bitmind.training import init_from as init_from_mod
from bitmind.training import run_folder
from bitmind.training.config import ConfigError
from bitmind.training.init_from import (adopt_checkpoint_options, check_matches_checkpoint, checkpoint_options,
                                        load_weights)

NET = dict(layers=[1, 1], width=8, input="npr_hp", stem_pool=False)


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model("npr", **NET)
    return save_checkpoint(model, tmp_path_factory.mktemp("ck") / "tiny.pth", model_meta(model))


def _boom(*args, **kwargs):
    raise ValueError("boom")


def test_a_plain_value_error_in_the_checks_keeps_its_traceback(monkeypatch):
    monkeypatch.setattr(TrainConfig, "check", _boom)
    with pytest.raises(ValueError, match="boom") as e:  # was SystemExit(2), "error: boom"
        parse_config(["--device", "cpu"])
    assert type(e.value) is ValueError


def test_a_plain_value_error_reading_init_from_keeps_its_traceback(monkeypatch, tiny_ckpt):
    monkeypatch.setattr(init_from_mod, "adopt_checkpoint_options", _boom)
    with pytest.raises(ValueError, match="boom") as e:
        parse_config(["--init_from", str(tiny_ckpt)])
    assert type(e.value) is ValueError


def test_a_plain_value_error_resuming_keeps_its_traceback(monkeypatch, tmp_path):
    monkeypatch.setattr(run_folder, "resumed_options", _boom)
    with pytest.raises(ValueError, match="boom") as e:
        parse_config(["--resume", "--checkpoints_dir", str(tmp_path)])
    assert type(e.value) is ValueError


def test_init_from_problems_are_config_errors(tiny_ckpt, tmp_path, checkpoint_factory):
    from bitmind.cli.ensemble import build_ensemble_checkpoint

    _, meta = init_from_mod.read_init_from(tiny_ckpt)
    with pytest.raises(ConfigError, match="stem_pool=False.*stem_pool=True"):
        adopt_checkpoint_options(TrainConfig(init_from=str(tiny_ckpt), stem_pool=True), {"stem_pool"}, meta)
    with pytest.raises(ConfigError, match="the checkpoint was built with"):
        check_matches_checkpoint(TrainConfig(init_from=str(tiny_ckpt), **{**NET, "width": 16}), meta)
    with pytest.raises(ConfigError, match="do not fit the network"):
        load_weights(build_model("npr", layers=[1, 1], width=16), build_model("npr", **NET).state_dict(), "--init_from x")
    ens = build_ensemble_checkpoint([checkpoint_factory(tmp_path / f"m{i}.pth", seed=i) for i in range(2)],
                                    tmp_path / "ens.pth")
    with pytest.raises(ConfigError, match="an ensemble file"):
        checkpoint_options(ens)
    with pytest.raises(ConfigError, match="architecture 'nope'"):
        checkpoint_options("x.pth", {"arch": "nope"})  # was config_defaults' KeyError, a traceback
    with pytest.raises(ConfigError, match="config is a list"):
        checkpoint_options("x.pth", {"arch": "npr", "config": [1, 2]})  # was a TypeError, a traceback


def test_unreadable_or_foreign_init_from_files_are_usage_errors(tmp_path, usage_error):
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"not a checkpoint at all")
    err = usage_error(parse_config, ["--init_from", str(corrupt)])  # CheckpointError
    assert str(corrupt) in err and "not a model file" in err, err
    foreign = save_checkpoint(build_model("npr", **NET), tmp_path / "foreign.pth", {"arch": "nope"})
    assert "architecture 'nope'" in usage_error(parse_config, ["--init_from", str(foreign)])
    assert "no such file" in usage_error(parse_config, ["--init_from", str(tmp_path / "absent.pth")])  # OSError


def test_a_resumed_run_with_another_network_is_a_usage_error(tmp_path, usage_error):
    run = tmp_path / "t"
    run.mkdir()
    (run / "opt.json").write_text(json.dumps(TrainConfig(width=8).to_dict()))
    err = usage_error(parse_config, ["--resume", "--checkpoints_dir", str(tmp_path), "--name", "t", "--width", "16"])
    assert "--resume" in err and "width=8" in err and "width=16" in err  # RunFolderError


def _alternatives(value):
    """Other values of an option's type to try (strings: none; the few string options that shape
    the network are listed apart)."""
    if isinstance(value, bool):
        return [not value]
    if isinstance(value, int):
        return [value + 2, 2 if value == 0 else value // 2]
    if isinstance(value, float):
        return [0.5 if value == 0 else value * 0.5]
    return []


def test_every_option_that_shapes_the_saved_weights_is_fixed_on_resume():
    """A resumed run loads its saved weights into the network its options build; an option that
    changes the weights' shapes and is not in ``FIXED_ON_RESUME`` is found only once ``opt.json``
    has been rewritten with it, after which the plain ``--resume`` fails too (``--history_weight``
    was such an option). Every option is tried at other values on a small network; whichever
    changes a weight's shape must be listed. (The family head's rows come from the data, so
    ``aux_weight`` is listed without being found here.)"""
    import dataclasses

    from bitmind.training.trainer import build_training_model

    def shapes(cfg):
        return {k: tuple(v.shape) for k, v in build_training_model(cfg, torch.device("cpu")).state_dict().items()}

    base = TrainConfig(**NET, device="cpu")
    reference = shapes(base)
    tries = {f.name: _alternatives(getattr(base, f.name)) for f in dataclasses.fields(TrainConfig)}
    tries.update(layers=[[1, 2], [2, 1, 1]], input=["npr", "rgb"], pool=["top10"], arch=["ensemble"])
    found, tried = set(), 0
    for name, values in tries.items():
        for value in values:
            try:
                cfg = dataclasses.replace(base, **{name: value})
                cfg.check()
                got = shapes(cfg)
            except Exception:  # a value the option refuses, or one no network is built from: nothing to compare
                continue
            tried += 1
            if got != reference:
                found.add(name)
    assert tried > 50 and {"width", "layers", "history_weight"} <= found  # the search reaches the known ones
    assert found <= set(run_folder.FIXED_ON_RESUME), sorted(found - set(run_folder.FIXED_ON_RESUME))


def test_a_usage_error_is_one_line_without_the_usage_block(capsys):
    """A value the command line parsed but no run can use ends as ``PROG: error: ...`` alone
    (exit 2): argparse's usage block before it is forty-odd lines that push it off the screen."""
    with pytest.raises(SystemExit) as e:
        parse_config(["--lr", "-1e-3", "--device", "cpu"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].endswith("error: --lr must be positive (and finite), got -0.001")


def test_a_sweep_spec_error_is_one_line(tmp_path, capsys):
    from bitmind.training import sweep

    spec = tmp_path / "empty.json"
    spec.write_text(json.dumps({"base": {"epochs": 1}, "variants": {}}))
    with pytest.raises(SystemExit) as e:
        sweep.main(["--spec", str(spec)])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].endswith("error: a sweep needs at least one variant")
