"""A training state is not a model: ``state_last.pt`` (a run's) and ``sweep_state.pt`` (a
sweep's) are refused by every model loader in one line naming the model file to serve, while
``--resume`` still reads them; weights that do not fit a network name the keys that differ."""
from __future__ import annotations

import os
import re
import shutil
import signal
from pathlib import Path

import pytest
import torch

from bitmind.checkpoint import (CheckpointError, build_network, load_model, model_file_problem, read_checkpoint,
                                save_checkpoint)
from bitmind.models import build_model
from bitmind.training import sweep as sweep_mod
from bitmind.training import train
from bitmind.training.run_folder import SWEEP_STATE
from bitmind.training.sweep import SweepSpec, run_sweep
from bitmind.training.sweep_state import load_sweep_state
from bitmind.training.trainer import read_run_state
from train_helpers import tiny_config
from validator_synth import make_folder

TINY = dict(layers=[1, 1], width=8)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_folder(tmp_path_factory.mktemp("state_not_a_model"), n_per_class=10, seed=7, size=48)


def test_a_runs_state_is_refused_as_a_model_and_still_resumes(data, tmp_path):
    torch.set_num_threads(1)
    train(tiny_config(data, tmp_path, epochs=1))
    run = tmp_path / "t"
    state, best = run / "state_last.pt", run / "model_epoch_best.pth"
    assert state.is_file() and best.is_file()
    want = (rf"^{re.escape(str(state))} is a training run's resumable state \(for --resume\), not a model: "
            rf"use {re.escape(str(best))} instead \(or model_last\.pth for the last epoch\)$")
    with pytest.raises(CheckpointError, match=want):
        load_model(state)
    with pytest.raises(CheckpointError, match=want):  # the hot reloader's way: the bytes it hashed
        load_model(state, data=state.read_bytes(), detector_only=True)
    assert "resumable state" in model_file_problem(state)  # the miner's start-up check
    # told by what it holds, not by its name: a renamed copy elsewhere is refused too
    elsewhere = tmp_path / "copy" / "weights.pth"
    elsewhere.parent.mkdir()
    shutil.copy(state, elsewhere)
    with pytest.raises(CheckpointError, match=r"resumable state .*: use the model_epoch_best.pth of the run that wrote it instead \(not beside this copy\)$"):
        load_model(elsewhere)
    # a reference checkpoint saved with its optimiser (NPR's model, optimizer, total_steps) is still a model
    sd = read_checkpoint(best)[0]
    torch.save({"model": sd, "optimizer": {"state": {}, "param_groups": []}, "total_steps": 7}, tmp_path / "ref.pth")
    assert read_checkpoint(tmp_path / "ref.pth")[0].keys() == sd.keys()
    # the model file beside it loads, and --resume reads the state and goes on from it
    assert load_model(best).meta["config"]["width"] == 8
    assert read_run_state(state)["epoch"] == 0
    summary = train(tiny_config(data, tmp_path, epochs=2, resume=True))
    assert [h["epoch"] for h in summary["history"]] == [0, 1]


def test_a_sweeps_state_is_refused_as_a_model_and_still_resumes(data, tmp_path, monkeypatch):
    torch.set_num_threads(1)
    real = sweep_mod.train_one_epoch

    def ctrl_c_in_epoch_0(learners, loader, cfg, epoch, *a, **kw):  # stops after epoch 0, its state saved
        if epoch == 0:
            os.kill(os.getpid(), signal.SIGINT)
        return real(learners, loader, cfg, epoch, *a, **kw)

    monkeypatch.setattr(sweep_mod, "train_one_epoch", ctrl_c_in_epoch_0)
    spec = {"base": {"data": [str(data)], "checkpoints_dir": str(tmp_path), "name": "s", "epochs": 2, "batch_size": 8,
                     "workers": 0, "progress": False, "device": "cpu", "val_fraction": 0.25, "test_fraction": 0.15, **TINY},
            "val_seeds": [0], "variants": {"plain": {}}}
    assert run_sweep(SweepSpec.from_dict(spec))["stopped"] == "interrupted"
    monkeypatch.undo()
    out = tmp_path / "s"
    state, best = out / SWEEP_STATE, out / "plain" / "model_epoch_best.pth"
    assert state.is_file() and best.is_file()
    with pytest.raises(CheckpointError, match=rf"^{re.escape(str(state))} is a sweep's resumable state \(for --resume\), not a "
                                              rf"model: use a variant's model_epoch_best\.pth instead \({re.escape(str(best))}\)$"):
        load_model(state)
    assert load_model(best).meta["config"]["width"] == 8
    assert load_sweep_state(out, ["plain"])["epoch"] == 0  # what --resume reads


def test_weights_that_do_not_fit_name_the_keys(tmp_path):
    model = build_model("npr", **TINY)
    state = {k: v for k, v in model.state_dict().items() if k != "fc1.bias"}
    state["extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"^x\.pth does not fit architecture 'npr' .*: missing fc1\.bias; unexpected extra\.weight$"):
        build_network("npr", state, {"config": TINY}, path="x.pth")
    # another width: the tensors of another shape are named, through load_model as every consumer loads
    path = save_checkpoint(model.state_dict(), tmp_path / "wide.pth", {"arch": "npr", "config": {**TINY, "width": 16}})
    with pytest.raises(CheckpointError, match=r"does not fit architecture 'npr' .*: other shapes: \S+ \(8, "):
        load_model(path)
