"""Fine-tuning (``--init_from``): the network comes from the checkpoint, and patch
training (``--patch_size``) works in a single run as in a sweep."""
from __future__ import annotations

import json
import re

import pytest
import torch

from bitmind.checkpoint import model_meta, read_checkpoint, save_checkpoint
from bitmind.models import build_model
from bitmind.training import TrainConfig, parse_config, train
from bitmind.training.init_from import checkpoint_options
from bitmind.training.loop import Learner, check_patch_size
from bitmind.training.trainer import build_training_model
from conftest import needs_cxx
from validator_synth import make_folder

NET = dict(layers=[1, 1], width=8, dropout=0.25, input="npr_hp", stem_pool=False)


@pytest.fixture(scope="module")
def nopool_ckpt(tmp_path_factory):
    """A tiny network like the shipped one: npr_hp input, no stem pool, trained on 32 px patches."""
    torch.manual_seed(0)
    model = build_model("npr", **NET)
    path = tmp_path_factory.mktemp("ck") / "nopool.pth"
    return save_checkpoint(model, path, model_meta(model, train_options={"patch_size": 32, "lr": 1e-3}))


def test_checkpoint_options_read_network_and_patch_size(nopool_ckpt, tmp_path):
    opts = checkpoint_options(nopool_ckpt)
    assert opts == {"arch": "npr", "layers": [1, 1], "width": 8, "input": "npr_hp", "stem_pool": False,
                    "pool": "mean", "dropout": 0.25, "patch_size": 32}
    # an older file that records fewer keys reads as the constructor's defaults
    torch.manual_seed(0)
    old = save_checkpoint(build_model("npr", layers=[1, 1], width=8), tmp_path / "old.pth")
    o = checkpoint_options(old)
    assert o["input"] == "npr" and o["stem_pool"] is True and "patch_size" not in o
    # a bare state dict (no metadata at all, as reference weights come) reads as the default NPR
    torch.save(build_model("npr").state_dict(), tmp_path / "bare.pth")
    assert checkpoint_options(tmp_path / "bare.pth")["arch"] == "npr"


def test_command_line_takes_what_it_leaves_out_from_the_checkpoint(nopool_ckpt, usage_error):
    cfg = parse_config(["--init_from", str(nopool_ckpt), "--data", "d"])
    assert (cfg.input, cfg.stem_pool, cfg.layers, cfg.width, cfg.dropout, cfg.patch_size) == \
        ("npr_hp", False, [1, 1], 8, 0.25, 32)
    # training options given explicitly stay as given, even when they equal the defaults
    cfg = parse_config(["--init_from", str(nopool_ckpt), "--patch_size", "0", "--dropout", "0"])
    assert cfg.patch_size == 0 and cfg.dropout == 0.0 and cfg.stem_pool is False
    # a structural option that repeats the checkpoint's value is fine; one that contradicts it is not
    assert parse_config(["--init_from", str(nopool_ckpt), "--stem_pool", "false"]).stem_pool is False
    assert re.search("stem_pool=False.*stem_pool=True", usage_error(parse_config, ["--init_from", str(nopool_ckpt), "--stem_pool", "true"]))
    assert re.search("input='npr_hp'.*input='npr'", usage_error(parse_config, ["--init_from", str(nopool_ckpt), "--input", "npr"]))
    # without --init_from nothing is read
    assert parse_config(["--data", "d"]).stem_pool is True


def test_ensembles_and_missing_files_are_refused(tmp_path, checkpoint_factory, usage_error):
    from bitmind.cli.ensemble import build_ensemble_checkpoint

    members = [checkpoint_factory(tmp_path / f"m{i}.pth", seed=i) for i in range(2)]
    ens = build_ensemble_checkpoint(members, tmp_path / "ens.pth")
    assert "an ensemble file" in usage_error(parse_config, ["--init_from", str(ens)])
    assert "no such file" in usage_error(parse_config, ["--init_from", str(tmp_path / "absent.pth")])


@pytest.mark.parametrize("argv, says", [
    (["--balance", "famly"], "--balance 'famly': one of sampler, family, weight, none"),
    (["--lr_schedule", "linear"], "--lr_schedule"),
    (["--input", "nrp"], "--input"),
    (["--pool", "top0"], "unknown pool"),
    (["--layers", "3"], "--layers"),
    (["--epochs", "0"], "--epochs must be at least 1"),
    (["--lr", "0"], "--lr must be positive"),
    (["--aug_jpeg_prob", "1.5"], "--aug_jpeg_prob is a probability"),
    (["--label_smoothing", "1"], "--label_smoothing must be in [0, 1)"),
    (["--val_fraction", "0.6", "--test_fraction", "0.5"], "nothing to train on"),
    (["--aug_jpeg_quality", "90", "60"], "--aug_jpeg_quality takes two values, min max"),
    (["--aug_jpeg_quality", "0", "60"], "within 1-100"),
    (["--pair_aligned", "true"], "--pair_aligned needs --balance family"),
    (["--pair_aligned", "true", "--balance", "family", "--batch_size", "7"], "even --batch_size"),
    (["--pair_patches", "true"], "--pair_patches needs --pair_aligned"),
    (["--patch_size", "7"], "patch_size must be"),
    (["--patch_size", "95"], "patch_size must be even"),
    (["--patch_size", "96", "--tile_shuffle", "40"], "tile_shuffle 40 must divide"),
])
def test_unusable_options_are_usage_errors_before_any_data_is_read(argv, says, usage_error):
    assert says in usage_error(parse_config, ["--data", "/nonexistent", *argv])


def test_the_defaults_and_the_shipped_recipe_pass_the_checks():
    assert parse_config([]) == TrainConfig()
    assert parse_config(["--balance", "family", "--pair_aligned", "true", "--batch_size", "256", "--patch_size", "96",
                         "--tile_shuffle", "32", "--lr_schedule", "cosine", "--input", "npr_hp", "--pool", "top5",
                         "--layers", "3", "4", "2"]).tile_shuffle == 32
    with pytest.raises(ValueError, match="--balance"):  # configs made in code are checked when they train
        train(TrainConfig(balance="famly", data=["/nonexistent"]))


def test_a_config_made_in_code_cannot_load_weights_into_another_network(nopool_ckpt):
    """The silent case: stem_pool has no weights, so a strict load alone would accept the file."""
    ok = TrainConfig(init_from=str(nopool_ckpt), **NET)
    model = build_training_model(ok, torch.device("cpu"))
    want, _ = read_checkpoint(nopool_ckpt)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in want.items())
    with pytest.raises(ValueError, match="stem_pool=False.*stem_pool=True"):
        build_training_model(TrainConfig(init_from=str(nopool_ckpt), **{**NET, "stem_pool": True}), torch.device("cpu"))


def test_learner_trains_on_patches_of_the_asked_size():
    model = build_model("npr", layers=[1, 1], width=8)
    seen = []
    model.register_forward_pre_hook(lambda m, args: seen.append(tuple(args[0].shape[-2:])))
    x, y = torch.rand(4, 3, 64, 64), torch.tensor([0.0, 1.0, 0.0, 1.0])
    Learner(model, TrainConfig(patch_size=32), None).train_batch(x, y, torch.arange(4), {})
    Learner(model, TrainConfig(patch_size=0), None).train_batch(x, y, torch.arange(4), {})
    Learner(model, TrainConfig(patch_size=96), None).train_batch(x, y, torch.arange(4), {})  # larger than the image
    assert seen == [(32, 32), (64, 64), (64, 64)]
    with pytest.raises(ValueError, match="patch_size"):
        check_patch_size(8)
    with pytest.raises(ValueError, match="patch_size"):
        Learner(model, TrainConfig(patch_size=4), None)


def test_fine_tune_run_keeps_the_network_and_records_the_recipe(nopool_ckpt, tmp_path):
    torch.set_num_threads(1)
    data = make_folder(tmp_path / "data", n_per_class=10, seed=5, size=64)
    cfg = parse_config(["--init_from", str(nopool_ckpt), "--data", str(data), "--checkpoints_dir", str(tmp_path / "ck"),
                        "--name", "ft", "--epochs", "1", "--batch_size", "8", "--workers", "0", "--progress", "false",
                        "--device", "cpu", "--val_fraction", "0.25", "--test_fraction", "0.15"])
    summary = train(cfg)
    _, meta = read_checkpoint(summary["best_checkpoint"])
    assert meta["config"]["stem_pool"] is False and meta["config"]["input"] == "npr_hp"
    assert meta["train_options"]["patch_size"] == 32 and meta["train_options"]["init_from"] == str(nopool_ckpt)
    assert json.loads((tmp_path / "ck" / "ft" / "opt.json").read_text())["patch_size"] == 32


@needs_cxx
def test_compiled_learner_takes_the_same_steps_and_keeps_the_plain_model(tmp_path):
    """``compile``: the step runs a compiled network that shares the plain model's parameters,
    so the optimiser moves ``model`` itself (what validation, weight averages and checkpoints
    read) as the eager step would, and a saved file has no compiled-module key prefixes."""
    x, y = torch.rand(4, 3, 32, 32), torch.tensor([0.0, 1.0, 0.0, 1.0])
    runs = {}
    for compiled in (False, True):
        torch.manual_seed(0)
        model = build_model("npr", layers=[1, 1], width=8)
        init = {k: v.detach().clone() for k, v in model.named_parameters()}
        learner = Learner(model, TrainConfig(patch_size=0, compile=compiled), None)
        learner.begin_epoch(0)
        losses = [float(learner.step(x, y)) for _ in range(3)]
        params = {k: v.detach().clone() for k, v in model.named_parameters()}
        runs[compiled] = (losses, params, init, list(model.state_dict()), learner)
    (eager_losses, eager_p, init, eager_keys, eager), (comp_losses, comp_p, _, comp_keys, comp) = runs[False], runs[True]
    assert comp.net is not comp.model and eager.net is eager.model
    assert comp_losses == pytest.approx(eager_losses, abs=1e-4) and comp_losses[2] != comp_losses[0]  # it trained
    assert comp_keys == eager_keys and not any("_orig_mod" in k for k in comp_keys)
    # Adam moves a weight by about lr per step whatever its gradient's size, so rounding in the
    # fused kernels can flip a near-zero gradient's step: the two runs stay within 3 such steps,
    # while the plain model itself moved by a full step at least (the compiled step trained it)
    lr = comp.cfg.lr
    gap = max(float((comp_p[k] - eager_p[k]).abs().max()) for k in eager_p)
    moved = max(float((comp_p[k] - init[k]).abs().max()) for k in init)
    assert gap <= 3 * 2 * lr and moved >= 0.9 * lr


def test_compile_on_a_cpu_without_a_compiler_is_refused_before_training(monkeypatch):
    monkeypatch.setattr("bitmind.training.config.has_cxx_compiler", lambda: False)
    with pytest.raises(ValueError, match="--compile on a CPU needs a C\\+\\+ compiler"):
        TrainConfig(device="cpu", compile=True).check()
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="--compile on a CPU"):
            TrainConfig(device="auto", compile=True).check()  # auto without a GPU is the CPU
    TrainConfig(device="cpu").check()  # without --compile nothing is needed


def test_a_checkpoint_config_value_of_the_wrong_type_is_a_usage_error(tmp_path, usage_error):
    """``width: "8"`` in a hand-edited file was a TypeError traceback inside ``TrainConfig.check``."""
    model = build_model("npr", **NET)
    meta = model_meta(model)
    meta["config"]["width"] = "8"
    path = save_checkpoint(model.state_dict(), tmp_path / "typo.pth", meta)
    assert "its metadata's config width='8' (a str)" in usage_error(parse_config, ["--init_from", str(path)])
