"""Two operator audits.

A fine-tune (``--init_from``) of a file served with ``center_crop`` / ``flip_mean`` lost them:
it was trained, validated and saved as a whole-picture network, served whole pictures (slower,
and not what was validated), and ``model_info --serving`` said it could hot-swap over the crop
file. It now keeps them, says so in one line, and validates with them.

A stored calibration with ``logit_bias`` 50 (T 1) answers 1.0 to every picture, and passed the
miner's check (the bias bound was 1e4). A boundary beyond raw logit +-20 is now refused, by the
miner's hot reload (the old model keeps serving) and by ``model_info``."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from bitmind.checkpoint import (CheckpointError, check_calibration, load_model, model_file_problem,
                                model_meta, read_checkpoint, save_checkpoint)
from bitmind.cli.model_info import describe, hot_swap_check, main
from bitmind.models import build_model
from bitmind.training import TrainConfig, parse_config, train
from bitmind.training import trainer as trainer_mod
from bitmind.training.trainer import build_training_model
from validator_synth import make_folder

NET = dict(layers=[1, 1], width=8, input="npr_hp", stem_pool=False)
SERVING = dict(center_crop=32, flip_mean=True)


def _start(path, **serving):
    """A tiny checkpoint like ``base_crop192.pth``: a network with serve-time options in its config."""
    torch.manual_seed(0)
    model = build_model("npr", **NET, **serving)
    return save_checkpoint(model, path, model_meta(model, temperature=0.5, logit_bias=-0.2))


def _said(caplog, text: str) -> list[str]:
    """The messages logged that hold ``text``, each record once (``listen``'s handler and the root
    logger's may both have passed it to ``caplog``)."""
    return [r.getMessage() for r in {id(r): r for r in caplog.records}.values() if text in r.getMessage()]


# ---------------------------------------------------------------- --init_from keeps the serve-time options
def test_a_fine_tune_network_answers_with_the_files_centre_crop_and_flip_mean(tmp_path, caplog, listen):
    start = _start(tmp_path / "crop.pth", **SERVING)
    listen("bitmind.training.init_from")
    cfg = parse_config(["--init_from", str(start), "--data", "d", "--device", "cpu"])
    model = build_training_model(cfg, torch.device("cpu")).eval()
    assert (model.center_crop, model.flip_mean) == (32, True)
    assert model.config["center_crop"] == 32 and model.config["flip_mean"] is True  # what a saved checkpoint records
    served = load_model(start).model
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model(x), served(x), atol=1e-6)  # answers as the file it started from
    carried = _said(caplog, "carried over")
    assert len(carried) == 1 and "center_crop=32" in carried[0] and "flip_mean=True" in carried[0], carried
    # a file served as built carries nothing (and says nothing)
    caplog.clear()
    plain = build_training_model(TrainConfig(init_from=str(_start(tmp_path / "plain.pth")), **NET), torch.device("cpu"))
    assert (plain.center_crop, plain.flip_mean) == (0, False) and "center_crop" not in plain.config
    assert not _said(caplog, "carried over")


def test_the_serve_time_options_cannot_be_given_on_the_command_line_so_the_file_decides(tmp_path):
    """No training option sets them (the override case does not arise): the command line
    refuses them as unknown, and a fine-tune always carries the file's."""
    start = _start(tmp_path / "crop.pth", center_crop=32)
    with pytest.raises(SystemExit):
        parse_config(["--init_from", str(start), "--center_crop", "0"])
    assert not {"center_crop", "flip_mean"} & set(TrainConfig.__dataclass_fields__)


def test_a_fine_tune_run_validates_and_saves_with_the_files_centre_crop(tmp_path, monkeypatch, caplog, listen):
    """End to end: the per-epoch validation (the score reported, the logits the calibration is
    fitted on) runs the network with the crop, and every checkpoint saved serves it, so
    ``model_info --serving`` over the start file finds nothing changed."""
    data = make_folder(tmp_path / "data", n_per_class=12, seed=5, size=48)
    start = _start(tmp_path / "crop.pth", center_crop=32)
    seen = []
    real_validate = trainer_mod.validate

    def recording_validate(model, *args, **kwargs):
        seen.append((model.center_crop, model.flip_mean))
        return real_validate(model, *args, **kwargs)

    monkeypatch.setattr(trainer_mod, "validate", recording_validate)
    listen("bitmind.training.init_from")
    torch.set_num_threads(1)
    train(parse_config(["--init_from", str(start), "--data", str(data), "--checkpoints_dir", str(tmp_path), "--name", "ft",
                        "--epochs", "1", "--batch_size", "8", "--workers", "0", "--progress", "false", "--device", "cpu",
                        "--val_fraction", "0.25", "--test_fraction", "0.15", "--calibration_min_per_class", "0",
                        "--lr", "5e-5"]))
    assert seen == [(32, False)]
    for name in ("model_epoch_best.pth", "model_last.pth"):
        _, meta = read_checkpoint(tmp_path / "ft" / name)
        assert meta["config"]["center_crop"] == 32, (name, meta["config"])
    assert [m for m in _said(caplog, "carried over") if "center_crop=32" in m] == _said(caplog, "carried over") != []
    assert len(_said(caplog, "carried over")) == 1  # once, though parse_config checks the weights too
    swap = hot_swap_check(start)(load_model(tmp_path / "ft" / "model_epoch_best.pth"))
    assert swap["ok"] and swap["serve_time_change"] is None
    # resumed: the state holds weights only; the crop comes back from the run's last checkpoint
    train(parse_config(["--checkpoints_dir", str(tmp_path), "--name", "ft", "--resume", "--epochs", "2"]))
    assert seen == [(32, False), (32, False)]
    assert read_checkpoint(tmp_path / "ft" / "model_last.pth")[1]["config"]["center_crop"] == 32


def test_model_info_says_when_a_file_swaps_in_place_but_serves_with_other_options(tmp_path, capsys):
    crop, plain = _start(tmp_path / "crop.pth", center_crop=32), _start(tmp_path / "plain.pth")
    swap = hot_swap_check(crop)(load_model(plain))
    assert swap["ok"] and swap["serve_time_change"] == "center_crop 32 -> none"
    assert main([str(plain), "--serving", str(crop)]) == 0  # it does swap in place
    assert "yes (same network); it answers differently, serve-time options change: center_crop 32 -> none" in capsys.readouterr().out


# ---------------------------------------------------------------- calibration that answers one class to everything
def _calibrated(path, seed=0, **calibration):
    torch.manual_seed(seed)
    model = build_model("npr", layers=[1, 1], width=8)
    with torch.no_grad():
        model.fc1.bias.fill_(float(seed) * 0.5 - 0.25)
    return save_checkpoint(model, path, model_meta(model, **calibration))


@pytest.mark.parametrize("calibration, answer", [({"logit_bias": 50.0}, "1.0"), ({"logit_bias": -50.0}, "0.0"),
                                                 ({"logit_bias": 10.0, "temperature": 3.0}, "1.0")])
def test_a_boundary_no_network_reaches_is_refused_with_a_clear_message(tmp_path, calibration, answer, capsys):
    path = _calibrated(tmp_path / "m.pth", **calibration)
    with pytest.raises(CheckpointError, match=rf"decision boundary .* beyond \+-20: it would answer {answer}") as e:
        check_calibration(load_model(path).meta, path)
    assert str(path) in str(e.value) and "logit_bias" in str(e.value)
    assert "decision boundary" in model_file_problem(path)  # the demo's and the harness's up-front check
    assert describe(path)["error"].startswith("the miner would refuse it")
    assert main([str(path)]) == 1
    assert "decision boundary" in capsys.readouterr().out


def test_calibrations_a_fit_gives_still_pass(tmp_path):
    """Judged in raw logits, not by the bias alone: a sharp fit needs a large bias (T 0.05, bias
    100: boundary at raw logit -5, ``fit_platt``'s own clamps) and passes; the shipped files'
    boundaries lie within 0.25 of 0."""
    for cal in ({}, {"temperature": 0.05, "logit_bias": 100.0}, {"temperature": 0.4748, "logit_bias": -0.3921},
                {"temperature": 1.0, "logit_bias": 20.0}, {"temperature": 20.0, "logit_bias": -1.0}):
        path = _calibrated(tmp_path / "m.pth", **cal)
        check_calibration(load_model(path).meta, path)
        assert model_file_problem(path) is None


def test_the_shipped_files_calibration_passes():
    """Every file under mining_models/ (those there: some may be absent from a checkout) still serves."""
    shipped = sorted((Path(__file__).resolve().parents[1] / "mining_models").glob("*.pth"))
    if not shipped:
        pytest.skip("no mining_models/*.pth in this checkout")
    for path in shipped:
        check_calibration(load_model(path, detector_only=True).meta, path)


def test_hot_reload_to_a_file_that_answers_one_class_keeps_the_old_model_serving(tmp_path, image_factory, caplog, listen):
    from bitmind.miner.predict import Predictor

    path = _calibrated(tmp_path / "model.pth", temperature=2.0, logit_bias=0.1)
    listen("bitmind.miner.reload")
    p = Predictor(str(path), device="cpu", check_interval=0.0)
    try:
        img = image_factory(size=64, seed=3)
        before, sha = p.predict_image(img), p.status()["sha256"]
        new = tmp_path / "new.pth"
        _calibrated(new, seed=1, logit_bias=50.0)  # other weights too: a swap would show in the answer
        os.replace(new, path)
        assert p.check_reload(force=True) is False
        assert p.predict_image(img) == pytest.approx(before) and p.status()["sha256"] == sha
        refused = _said(caplog, "failed to load; still serving")
        assert len(refused) == 1 and "decision boundary" in refused[0] and "1.0 (AI-generated)" in refused[0], refused
        # the same weights with a calibration a fit gives swap in
        _calibrated(new, seed=1, temperature=0.5, logit_bias=-0.2)
        os.replace(new, path)
        assert p.check_reload(force=True) is True
        assert p.predict_image(img) != pytest.approx(before)
    finally:
        p.close()


def test_a_fit_whose_boundary_the_miner_would_refuse_is_not_stored():
    """The real-target rule puts the boundary at a quantile of the real photos' raw logits,
    with no limit: a network with logits near -30 / +30 got a calibration stored (bias +25.8)
    that the miner then refused. The fit refuses it instead, in one line, as it refuses too few
    pictures, so the trainer keeps what it had and ``bitmind.calibrate`` says why."""
    import numpy as np

    from bitmind.calibration import CalibrationDataError, calibrate_logits

    rng = np.random.default_rng(0)
    z = np.r_[rng.normal(-30, 3, 200), rng.normal(30, 3, 200)]
    y = np.r_[np.zeros(200), np.ones(200)]
    with pytest.raises(CalibrationDataError, match=r"raw logit -2\d\.\d, beyond the \+-20.*real median -(29|30)"):
        calibrate_logits(z, y, real_target=0.85)
    ok = calibrate_logits(z / 10, y, real_target=0.85)  # the same network at a tenth of the scale: served
    assert abs(ok["logit_bias"]) * ok["temperature"] <= 20
