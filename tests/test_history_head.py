"""The processing-history head (``TrainConfig.history_weight``): outputs after the detector's (and
the family head's) that regress what the training augmentation did to each picture, log2 of its
resize factor and its JPEG quality. What must hold: asking for the history changes no picture and
tells what was done, pictures whose history is unknown are left out of the loss, the head learns
from its own rows only, the sweep and the trainer pass the targets on and write files that name
the outputs, and the miner serves the detector alone."""
from __future__ import annotations

import json
import math
import random
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bitmind.checkpoint import load_model, read_checkpoint, save_checkpoint
from bitmind.cli import model_info
from bitmind.data import AsIs, DetectionDataset, FlipOnly, LocalFolderSource, collate_skip_none
from bitmind.image_transforms import (HISTORY_OUTPUTS, AugConfig, TrainAugment, ValidatorPipeline,
                                      history_targets)
from bitmind.inference import forward_logits, forward_outputs
from bitmind.models.npr import NPR, detector_only, has_aux_outputs, with_aux_outputs
from bitmind.training import TrainConfig, parse_config, train
from bitmind.training.config import ConfigError
from bitmind.training.loop import HISTORY_KEY, Learner, history_term, join_history
from bitmind.training.sweep import SweepSpec, _Variant, run_sweep
from bitmind.training.trainer import build_training_model
from conftest import sample_image
from train_helpers import tiny_config, tiny_sweep_base
from validator_synth import make_folder

pytestmark = pytest.mark.usefixtures("one_torch_thread")

N_HISTORY = len(HISTORY_OUTPUTS)


# ---------------------------------------------------------------------------- what the augmentation did
def _picture():
    """A 120 x 90 picture: its short side (90) is what a plain resize to 256 scales."""
    return sample_image(96, seed=1).resize((120, 90))


def test_asking_for_the_history_changes_no_picture_and_tells_the_resize_of_the_validator_geometry():
    cfg = AugConfig(jpeg_quality=(40, 90))  # every picture through the validator geometry, a JPEG at 40-90
    aug = TrainAugment(cfg)
    img = _picture()
    scales, qualities = set(), set()
    for seed in range(16):
        plain = aug(img, random.Random(seed))
        told, history = aug.with_history(img, random.Random(seed))
        assert told.tobytes() == plain.tobytes() and told.size == plain.size  # the same draws, the same pixels
        replay = random.Random(seed)
        replay.random()  # TrainAugment's own draw: through the validator geometry or not
        want = ValidatorPipeline(plain_share=cfg.plain_share, size=256).resize_factor(*img.size, replay)
        assert history["scale"] == pytest.approx(want)
        assert 40 <= history["jpeg_quality"] <= 90
        scales.add(round(history["scale"], 6))
        qualities.add(history["jpeg_quality"])
    assert round(256 / 90, 6) in scales and len(scales) > 2  # plain resizes and random crops both drawn
    assert len(qualities) > 2


def test_without_the_validator_geometry_the_scale_is_the_resize_of_the_short_side_and_no_jpeg_is_none():
    aug = TrainAugment(AugConfig(validator_prob=0.0, jpeg_prob=0.0))
    img = _picture()
    for seed in range(4):
        told, history = aug.with_history(img, random.Random(seed))
        assert told.tobytes() == aug(img, random.Random(seed)).tobytes()
        assert history == {"scale": pytest.approx(256 / 90), "jpeg_quality": None}
    same_size = sample_image(256)  # already the size served: not resampled at all
    assert aug.with_history(same_size, random.Random(0))[1]["scale"] == 1.0


def test_the_validator_pipeline_scales_as_it_says_with_the_same_draws_as_apply():
    pipe = ValidatorPipeline(jpeg_quality=None)
    img = _picture()
    for seed in range(8):
        out, scale = pipe.apply_scaled(img, random.Random(seed))
        assert out.tobytes() == pipe.apply(img, random.Random(seed)).tobytes()
        assert scale == pytest.approx(pipe.resize_factor(*img.size, random.Random(seed)))


def test_history_targets_are_log2_of_the_scale_and_the_quality_about_75_with_unknown_as_nan():
    assert HISTORY_OUTPUTS == ("log2_scale", "jpeg_quality")
    unknown = history_targets(None)
    assert len(unknown) == N_HISTORY and all(math.isnan(v) for v in unknown)
    assert history_targets({"scale": 2.0, "jpeg_quality": 75}) == [1.0, 0.0]
    assert history_targets({"scale": 0.5, "jpeg_quality": 50}) == [-1.0, -1.0]
    assert history_targets({"scale": 1.0, "jpeg_quality": None}) == history_targets({"scale": 1.0, "jpeg_quality": 100}) == [0.0, 1.0]


# ---------------------------------------------------------------------------- the dataset and the collate
@pytest.fixture(scope="module")
def synth_source(tmp_path_factory):
    return LocalFolderSource(make_folder(tmp_path_factory.mktemp("hist_data"), n_per_class=3, seed=5, size=64))


def test_dataset_items_carry_their_history_and_the_same_pictures_as_without(synth_source):
    aug = TrainAugment(AugConfig(jpeg_quality=(30, 95)))
    items = [(synth_source, i) for i in range(len(synth_source))]
    with_h = DetectionDataset(items, augment=aug, seed=2, history=True)
    without = DetectionDataset(items, augment=aug, seed=2)
    with_h.set_epoch(1)
    without.set_epoch(1)
    for k in range(len(items)):
        x, label, key, h = with_h[k]
        assert len(without[k]) == 3 and torch.equal(x, without[k][0]) and (label, key) == without[k][1:]
        assert h.dtype == torch.float32 and h.shape == (N_HISTORY,) and bool(torch.isfinite(h).all())
        _, history = aug.with_history(synth_source.load(k), with_h.rng_for(k))  # what the item's draws did
        assert h.tolist() == pytest.approx(history_targets(history))


@pytest.mark.parametrize("ready_made", [AsIs(), FlipOnly()])
def test_ready_made_challenges_carry_an_unknown_history(synth_source, ready_made):
    items = [(synth_source, i) for i in range(len(synth_source))]
    aug = TrainAugment(AugConfig())
    with_h = DetectionDataset(items, augment=aug, augment_for={synth_source: ready_made}, seed=0, history=True)
    without = DetectionDataset(items, augment=aug, augment_for={synth_source: ready_made}, seed=0)
    for k in range(len(items)):
        x, _, _, h = with_h[k]
        assert bool(torch.isnan(h).all()) and h.shape == (N_HISTORY,)
        assert torch.equal(x, without[k][0])


def test_collate_puts_the_histories_fifth_and_still_drops_unreadable_items(synth_source):
    items = [(synth_source, i) for i in range(4)]
    aug = TrainAugment(AugConfig())
    with_h = DetectionDataset(items, augment=aug, seed=0, history=True)
    batch = [with_h[0], None, with_h[2], with_h[3]]
    out = collate_skip_none(batch)
    assert len(out) == 5
    x, y, k, bad, h = out
    assert bad == 1 and k.tolist() == [0, 2, 3] and x.shape[0] == 3 and y.dtype == torch.float32
    assert torch.equal(h, torch.stack([with_h[j][3] for j in (0, 2, 3)]))
    without = DetectionDataset(items, augment=aug, seed=0)
    plain = collate_skip_none([without[0], without[1], None])
    assert len(plain) == 4 and plain[3] == 1 and plain[2].tolist() == [0, 1]
    assert collate_skip_none([None, None]) is None


def test_join_history_concatenates_the_parts_in_order_and_is_none_without_histories():
    x, y, k = torch.zeros(2, 3, 8, 8), torch.zeros(2), torch.arange(2)
    a, b = torch.tensor([[0.0, 1.0], [2.0, 3.0]]), torch.tensor([[4.0, 5.0], [float("nan"), 7.0]])
    assert join_history([(x, y, k, 0), (x, y, k, 0)]) is None
    assert join_history([(x, y, k, 0, a), (x, y, k, 0)]) is None  # one part without: none for the batch
    assert join_history([(x, y, k, 0, a)]) is a
    joined = join_history([(x, y, k, 0, a), (x, y, k, 0, b)])
    assert joined.shape == (4, 2) and torch.equal(joined[:2], a)
    assert torch.allclose(joined[2:], b, equal_nan=True)  # the second part after the first, NaN kept


# ---------------------------------------------------------------------------- the loss
def test_unknown_targets_are_left_out_of_the_history_loss():
    nan = float("nan")
    target = torch.tensor([[0.5, -1.0], [2.0, nan], [nan, nan], [-0.5, 0.25]])
    pred = torch.tensor([[0.0, 0.0], [0.3, 9.0], [5.0, -5.0], [1.0, 0.1]])
    loss = history_term(pred, target)
    known = torch.isfinite(target)
    want = F.smooth_l1_loss(pred[known], target[known])
    assert torch.allclose(loss, want)
    moved = pred.clone()
    moved[2] = torch.tensor([-30.0, 40.0])  # the row without a history
    moved[1, 1] = -7.0  # the unknown JPEG quality of a picture whose scale is known
    assert torch.allclose(history_term(moved, target), loss)
    assert float(history_term(pred, target + 1.0)) != pytest.approx(float(loss))  # a known target counts


def test_a_batch_without_any_known_history_adds_nothing_and_a_finite_gradient():
    pred = torch.randn(4, N_HISTORY, requires_grad=True)
    loss = history_term(pred, torch.full((4, N_HISTORY), float("nan")))
    assert float(loss.detach()) == 0.0
    loss.backward()
    assert bool(torch.isfinite(pred.grad).all()) and float(pred.grad.abs().sum()) == 0.0


def test_the_history_loss_is_zero_where_the_prediction_is_the_target():
    target = torch.tensor([[1.0, 0.0], [0.0, float("nan")], [-0.7, 1.0]])
    pred = torch.nan_to_num(target, nan=3.0)
    assert float(history_term(pred, target)) == 0.0
    assert float(history_term(pred + 0.1, target)) > 0.0


# ---------------------------------------------------------------------------- the learner
def _npr(extra: int) -> NPR:
    torch.manual_seed(0)
    return with_aux_outputs(NPR(layers=[1, 1], width=8, stem_pool=False), extra)


def _upscaled_and_native(b: int = 8, side: int = 32) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pictures up-scaled twice (nearest: 2 x 2 blocks; log2 scale 1, JPEG 75) and at native
    pixels (log2 scale 0, no JPEG): what the head must tell from the pixels alone."""
    g = torch.Generator().manual_seed(0)
    native = torch.rand(b // 2, 3, side, side, generator=g)
    up = F.interpolate(torch.rand(b // 2, 3, side // 2, side // 2, generator=g), scale_factor=2, mode="nearest")
    x = torch.stack([p for pair in zip(up, native) for p in pair])
    h = torch.tensor([[1.0, 0.0], [0.0, 1.0]] * (b // 2))
    return x, torch.tensor([0.0, 1.0] * (b // 2)), h


def test_the_history_head_learns_and_its_loss_is_recorded_apart():
    model = _npr(N_HISTORY)
    learner = Learner(model, TrainConfig(device="cpu", seed=0, lr=3e-3, history_weight=1.0).check(), None)
    assert learner.aux_meta == {"history_outputs": list(HISTORY_OUTPUTS)}
    x, y, h = _upscaled_and_native()
    losses = []
    for _ in range(40):
        learner.begin_epoch(0)  # each step's loss alone
        learner.step(x, y, history=h)
        rec = learner.aux_record
        assert set(rec) == {"train_history_loss"}
        losses.append(rec["train_history_loss"])
    assert losses[0] > 0 and losses[-1] < 0.5 * losses[0]
    model.eval()
    with torch.no_grad():  # the detector is still the first output, served alone
        assert torch.equal(forward_logits(model, x), forward_outputs(model, x)[:, 0])


def test_a_learner_without_the_weight_ignores_the_history_it_is_given():
    model = _npr(N_HISTORY)
    learner = Learner(model, TrainConfig(device="cpu", seed=0).check(), None)
    assert learner.history_for(torch.zeros(4, N_HISTORY), torch.device("cpu")) is None
    x, y, h = _upscaled_and_native(4)
    learner.begin_epoch(0)
    learner.step(x, y, history=h)
    assert "train_history_loss" not in learner.aux_record and "history_outputs" not in learner.aux_meta
    assert float(model.fc1.weight.grad[1:].abs().sum()) == 0.0 and float(model.fc1.weight.grad[0].abs().sum()) > 0


def test_with_both_heads_each_loss_reads_its_own_outputs():
    """Three family classes, then the two history outputs: the family cross-entropy reads rows
    1-3 only, the history loss rows 4-5 only."""
    cfg = TrainConfig(device="cpu", seed=0, aux_weight=0.5, history_weight=0.5).check()
    model = build_training_model(cfg, torch.device("cpu"), aux_classes=3)
    assert model.config["num_classes"] == 1 + 3 + N_HISTORY and model.fc1.weight.shape[0] == 6
    learner = Learner(model, cfg, None)
    learner.set_aux(["real", "a", "b"], [0, 1, 2, 1, 0, 1, 2, 1])
    assert learner.aux_meta == {"aux_classes": ["real", "a", "b"], "history_outputs": list(HISTORY_OUTPUTS)}
    x, y, h = _upscaled_and_native()
    k = torch.arange(8)
    aux = learner.aux_for(k, x.device)

    learner.begin_epoch(0)
    learner.step(x, y, aux=aux, history=torch.full_like(h, float("nan")))  # no history known: the CE alone
    grad = model.fc1.weight.grad
    assert float(grad[1:4].abs().sum()) > 0 and float(grad[4:].abs().sum()) == 0.0

    with torch.no_grad():  # train mode, as the step runs it (batch statistics)
        out = forward_outputs(model, x)
    want_history, want_aux = history_term(out[:, 4:6], h), F.cross_entropy(out[:, 1:4], aux)
    learner.begin_epoch(0)
    learner.step(x, y, aux=aux, history=h)
    rec = learner.aux_record
    assert set(rec) == {"train_aux_loss", "train_history_loss"}
    assert rec["train_history_loss"] == pytest.approx(float(want_history), rel=1e-4)
    assert rec["train_aux_loss"] == pytest.approx(float(want_aux), rel=1e-4)
    assert rec["train_history_loss"] != pytest.approx(float(history_term(out[:, 1:3], h)), rel=1e-3)


def test_the_history_head_is_built_after_the_family_head_and_changes_no_other_initial_weight():
    base = dict(device="cpu", seed=3, layers=[1, 1], width=8)
    torch.manual_seed(3)
    plain = build_training_model(TrainConfig(**base), torch.device("cpu"))
    torch.manual_seed(3)
    history = build_training_model(TrainConfig(history_weight=0.5, **base), torch.device("cpu"))
    torch.manual_seed(3)
    both = build_training_model(TrainConfig(history_weight=0.5, aux_weight=0.5, **base), torch.device("cpu"), aux_classes=4)
    assert history.config["num_classes"] == 1 + N_HISTORY and both.config["num_classes"] == 1 + 4 + N_HISTORY
    for name, value in plain.state_dict().items():
        for other in (history, both):
            got = other.state_dict()[name]
            assert torch.equal(value, got[:1] if name.startswith("fc1.") else got), name
    assert float(history.state_dict()["fc1.weight"][1:].abs().sum()) > 0


def test_a_sweep_variant_passes_the_history_rows_of_its_own_part_of_the_batch(tmp_path):
    spec = SweepSpec.from_dict({"base": {"checkpoints_dir": str(tmp_path), "name": "s", "batch_size": 8, "device": "cpu",
                                         "layers": [1, 1], "width": 8},
                                "variants": {"h": {"history_weight": 0.5}, "plain": {}}})
    x = torch.rand(6, 3, 32, 32)
    keys = torch.tensor([0, 11, 3, 12, 5, 7])
    h = torch.arange(12, dtype=torch.float32).reshape(6, 2)
    seen, variants = {}, {}
    for name in ("h", "plain"):
        mask = torch.tensor([k != 3 for k in range(20)])  # the variant's subset drops item 3
        v = variants[name] = _Variant(name, spec.variant_config(name), spec.variant_extras(name), torch.device("cpu"), mask=mask)
        v.step = lambda xv, y, target=None, aux=None, history=None, content=None, name=name: seen.setdefault(name, (xv, history))
        v.train_batch(x, torch.zeros(6), keys, {HISTORY_KEY: h})
        v.writer.close()
    xv, got = seen["h"]
    kept = [0, 1, 3, 4, 5]
    assert torch.equal(xv, x[kept]) and torch.equal(got, h[kept])
    assert seen["plain"][1] is None  # no head: no targets
    v = variants["h"]
    assert v.select(x, torch.zeros(6), keys)[4] is None  # a batch without histories
    v.mask = None  # the whole batch: every row's history as it came
    assert torch.equal(v.select(x, torch.zeros(6), keys, None, h)[4], h)


# ---------------------------------------------------------------------------- the options
@pytest.mark.parametrize("options", [dict(history_weight=-0.1), dict(history_weight=float("nan")),
                                     dict(history_weight=float("inf")),
                                     dict(history_weight=0.3, pool="top10"), dict(history_weight=0.3, arch="ensemble"),
                                     dict(history_weight=0.3, aug_cutmix_prob=0.5),
                                     dict(history_weight=0.3, init_from="mining_models/base.pth")])
def test_unusable_history_options_are_refused_naming_history_weight(options):
    with pytest.raises(ConfigError, match="history_weight"):
        TrainConfig(device="cpu", **options).check()


def test_the_history_weight_is_an_option_of_the_command_line_and_of_sweep_variants():
    assert parse_config(["--device", "cpu", "--history_weight", "0.3"]).history_weight == 0.3
    assert TrainConfig(device="cpu").check().history_weight == 0.0
    spec = SweepSpec.from_dict({"base": {"device": "cpu"}, "variants": {"h": {"history_weight": 0.5}}})
    assert spec.check()["h"][0].history_weight == 0.5
    bad = SweepSpec.from_dict({"base": {"device": "cpu"}, "variants": {"h": {"history_weight": 0.5, "aug_cutmix_prob": 0.5}}})
    with pytest.raises(ConfigError, match="history_weight"):
        bad.check()


# ---------------------------------------------------------------------------- end to end
def _two_fake_sources(root):
    """``make_folder``'s real/synth and fake/synth, and a second fake source, fake/other."""
    data = make_folder(root / "data", n_per_class=12, seed=3, size=64)
    other = make_folder(root / "other", n_per_class=6, seed=4, size=64)
    shutil.move(str(other / "fake" / "synth"), str(data / "fake" / "other"))
    return data


def test_a_sweep_trains_the_history_head_on_its_subset_and_the_file_names_its_outputs(tmp_path):
    data = _two_fake_sources(tmp_path)
    spec = SweepSpec.from_dict({"base": tiny_sweep_base(tmp_path, data, "s", epochs=2, patch_size=32),
                                "val_seeds": [0], "val_from": 1,
                                "variants": {"hist": {"history_weight": 0.5, "aux_weight": 0.3, "exclude_sources": ["fake/other"]},
                                             "plain": {}}})
    summary = run_sweep(spec)
    assert set(summary["variants"]) == {"hist", "plain"}
    hist = json.loads((tmp_path / "ck" / "s" / "hist" / "history.json").read_text())
    assert hist and all(math.isfinite(r["train_history_loss"]) and r["train_history_loss"] > 0 for r in hist)
    plain_hist = json.loads((tmp_path / "ck" / "s" / "plain" / "history.json").read_text())
    assert not any("train_history_loss" in r for r in plain_hist)

    path = tmp_path / "ck" / "s" / "hist" / "model_epoch_best.pth"
    lm = load_model(path)
    aux = lm.meta["train_options"]["aux_classes"]
    assert aux == ["real", "other", "synth"]  # the whole training set's families, as every variant of an arm
    assert lm.meta["train_options"]["history_outputs"] == list(HISTORY_OUTPUTS)
    assert lm.meta["config"]["num_classes"] == 1 + len(aux) + N_HISTORY and has_aux_outputs(lm.meta)
    served = load_model(path, detector_only=True)  # as the miner loads it
    assert served.meta["config"]["num_classes"] == 1 and served.model.fc1.weight.shape[0] == 1
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert forward_outputs(served.model, x).shape == (2, 1)
        assert torch.allclose(forward_outputs(served.model, x)[:, 0], forward_outputs(lm.model.eval(), x)[:, 0], atol=1e-6)
    plain = load_model(tmp_path / "ck" / "s" / "plain" / "model_epoch_best.pth")
    assert plain.meta["config"]["num_classes"] == 1 and "history_outputs" not in plain.meta["train_options"]

    # the LOGO read-out keeps the family head's probabilities to its own rows
    from bitmind.training.logo import score_models

    out = score_models({"hist": str(path), "plain": str(plain.path)}, {"validator": [str(data)]}, tmp_path / "scores.npz",
                       device="cpu", workers=0, batch_size=16)
    with np.load(out) as scores:
        probs = scores["aux/validator/hist"].astype(np.float32)
        assert probs.shape == (12 + 12 + 6, len(aux)) and np.allclose(probs.sum(1), 1.0, atol=1e-2)
        assert "aux/validator/plain" not in scores.files and list(scores["aux_classes/hist"]) == aux


def test_the_trainer_trains_the_history_head_and_model_info_shows_it(tmp_path, capsys):
    data = make_folder(tmp_path / "data", n_per_class=12, seed=3, size=64)
    train(tiny_config(data, tmp_path / "ck", epochs=1, patch_size=32, history_weight=0.3))
    run = tmp_path / "ck" / "t"
    hist = json.loads((run / "history.json").read_text())
    assert hist and all(r["train_history_loss"] > 0 for r in hist)
    path = run / "model_epoch_best.pth"
    lm = load_model(path)
    assert lm.meta["train_options"]["history_outputs"] == list(HISTORY_OUTPUTS)
    assert lm.meta["train_options"]["history_weight"] == 0.3
    assert lm.meta["config"]["num_classes"] == 1 + N_HISTORY and has_aux_outputs(lm.meta)
    assert "aux_classes" not in lm.meta["train_options"]

    from bitmind.training.logo import score_models  # a history head alone is no family head to read out

    out = score_models({"h": str(path)}, {"validator": [str(data)]}, tmp_path / "scores.npz", device="cpu", workers=0)
    with np.load(out) as scores:
        assert "validator/h" in scores.files and not [f for f in scores.files if f.startswith("aux")]

    capsys.readouterr()
    assert model_info.main([str(path)]) == 0
    said = capsys.readouterr().out
    assert ("trained with a processing-history head (in the file; the first output alone is served): "
            "log2_scale, jpeg_quality") in said
    assert "auxiliary head" not in said

    state, meta = read_checkpoint(path)  # shipped as the LOGO ship does it: the detector alone
    state, meta = detector_only(state, meta)
    assert not has_aux_outputs(meta)
    save_checkpoint(state, tmp_path / "shipped.pth", meta)
    info = model_info.describe(tmp_path / "shipped.pth")
    assert info["history_outputs"] == list(HISTORY_OUTPUTS) and not info["aux_head_in_file"]
    assert "processing-history head (dropped when shipped; the file is the detector alone)" in model_info.render(info)


# ---------------------------------------------------------------------------- resume and the benchmarks
def test_a_resumed_run_that_switches_the_history_head_is_refused_before_its_record_changes(tmp_path, usage_error):
    """The head is rows of the last layer: a resume with another ``--history_weight`` would build a
    network its saved weights do not fit, after rewriting ``opt.json`` (so the plain ``--resume``
    after it failed too). Refused up front, the record untouched, like ``--aux_weight``."""
    run = tmp_path / "t"
    run.mkdir()
    opt = json.dumps(TrainConfig(width=8, history_weight=0.5).to_dict())
    (run / "opt.json").write_text(opt)
    err = usage_error(parse_config, ["--resume", "--checkpoints_dir", str(tmp_path), "--name", "t", "--history_weight", "0"])
    assert "--resume" in err and "history_weight=0.5" in err and "history_weight=0.0" in err, err
    assert (run / "opt.json").read_text() == opt
    resumed = parse_config(["--resume", "--checkpoints_dir", str(tmp_path), "--name", "t"])
    assert resumed.history_weight == 0.5  # read back from the run


def test_a_sweep_with_the_head_builds_its_training_set_with_histories_and_one_without_does_not():
    from bitmind.training.sweep import carries_history

    with_head = SweepSpec.from_dict({"base": {"device": "cpu"}, "variants": {"h": {"history_weight": 0.5}, "c": {}}})
    without = SweepSpec.from_dict({"base": {"device": "cpu"}, "variants": {"a": {"aux_weight": 0.1}, "c": {}}})
    assert carries_history(with_head.check()) and not carries_history(without.check())


def test_step_speed_times_a_history_variant_with_its_term():
    """benchmarks/step_speed.py gives the learners made-up history targets when a variant has the head
    (its step then runs the history term, as in a sweep), none otherwise."""
    from conftest import load_script

    step_speed = load_script("benchmarks/step_speed.py")
    k = torch.tensor([0, 3, 9, 13])
    head = SimpleVariant(["log2_scale", "jpeg_quality"])
    plain = SimpleVariant([])
    assert step_speed.history_of([plain], k) is None
    h = step_speed.history_of([plain, head], k)
    assert h.shape == (4, N_HISTORY) and bool(torch.isfinite(h).all()) and len(set(h[:, 0].tolist())) > 1
    seen = {}
    head.train_batch = lambda x, y, kk, ctx: seen.update(ctx)
    step_speed.train_step([head], (torch.rand(4, 3, 8, 8), torch.zeros(4), k), torch.device("cpu"), False)
    assert torch.equal(seen[HISTORY_KEY], h)


class SimpleVariant:
    """What ``step_speed.history_of`` reads of a variant: the names of its history outputs."""

    def __init__(self, names):
        self.history_names = list(names)
