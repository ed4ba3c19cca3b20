"""Two training options against a detector that learns what pictures show: CutMix across
classes (``--aug_cutmix_prob``, ``bitmind.training.loop.mix_classes``) and the one-class term
on real photos (``--real_compact_weight``, ``Learner.compact_term``)."""
from __future__ import annotations

import json
import logging

import pytest
import torch

from bitmind.models.npr import NPR, with_aux_outputs
from bitmind.training import TrainConfig, parse_config
from bitmind.training.config import ConfigError
from bitmind.training.loop import Learner, check_cutmix, mix_classes
from bitmind.training.sweep import SweepSpec, run_sweep
from conftest import hear
from train_helpers import tiny_sweep_base
from validator_synth import make_folder


def _two_class_batch(b: int = 8, side: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Real images all 0, generated ones all 1: an image's mean is its share of generated pixels."""
    y = torch.tensor([0.0, 1.0] * (b // 2))
    return y[:, None, None, None].expand(b, 3, side, side).clone(), y


def test_the_mixed_label_is_the_share_of_the_area_a_generator_made():
    x, y = _two_class_batch()
    out, target, aux, mixed = mix_classes(x, y, y.clone(), None, 0, 1.0, (0.25, 0.75), torch.Generator().manual_seed(0))
    assert aux is None and bool(mixed.all())  # every row has a partner of the other class
    assert torch.allclose(target, out.mean((1, 2, 3)), atol=1e-6)  # the label follows the pixels
    share = torch.where(y > 0.5, 1 - target, target)  # the pasted share of each image
    assert bool(((share >= 0.15) & (share <= 0.85)).all())  # about the drawn range (sides rounded to even)
    assert not torch.equal(out, x)


def test_the_pasted_rectangle_keeps_to_the_residual_grid():
    """Even sides and offsets: the NPR's 2 x 2 blocks never straddle the seam."""
    x, y = _two_class_batch(b=16, side=40)
    out, *_ = mix_classes(x, y, y.clone(), None, 0, 1.0, (0.1, 0.9), torch.Generator().manual_seed(3))
    for img, own in zip(out[:, 0], y):
        pasted = (img != own).nonzero()
        top, left = pasted.min(0).values.tolist()
        bottom, right = (pasted.max(0).values + 1).tolist()
        assert top % 2 == left % 2 == bottom % 2 == right % 2 == 0
        assert int((img[top:bottom, left:right] != own).sum()) == (bottom - top) * (right - left)  # one rectangle


def test_images_without_a_partner_of_the_other_class_and_undrawn_images_stay_as_they_are():
    x, y = _two_class_batch()
    g = torch.Generator().manual_seed(1)
    real_only = torch.zeros(4)
    out, target, _, mixed = mix_classes(x[:4] * 0, real_only, real_only.clone(), None, 0, 1.0, (0.25, 0.75), g)
    assert not bool(mixed.any()) and torch.equal(target, real_only) and torch.equal(out, x[:4] * 0)
    out, target, _, mixed = mix_classes(x, y, y.clone(), None, 0, 0.0, (0.25, 0.75), g)
    assert not bool(mixed.any()) and torch.equal(out, x) and torch.equal(target, y)


def test_the_auxiliary_class_is_mixed_as_probabilities_like_the_label():
    x, y = _two_class_batch()
    aux = torch.tensor([0, 1, 0, 2, 0, 1, 0, 2])  # real photos class 0, two generator families
    out, target, soft, mixed = mix_classes(x, y, y.clone(), aux, 3, 1.0, (0.25, 0.75), torch.Generator().manual_seed(2))
    assert soft.shape == (8, 3) and torch.allclose(soft.sum(1), torch.ones(8))
    assert torch.allclose(soft[:, 1:].sum(1), target, atol=1e-6)  # the generated share, split among families
    assert torch.allclose(soft[:, 0], 1 - target, atol=1e-6)


@pytest.mark.parametrize("prob, area, says", [(1.5, [0.25, 0.75], "aug_cutmix_prob"),
                                              (0.5, [0.0, 0.5], "aug_cutmix_area"),
                                              (0.5, [0.6, 0.5], "aug_cutmix_area"),
                                              (0.5, [0.5, 1.0], "aug_cutmix_area"),
                                              (0.5, [0.5], "aug_cutmix_area")])
def test_unusable_cutmix_options_are_refused_naming_the_option(prob, area, says):
    with pytest.raises(ValueError, match=says):
        check_cutmix(prob, area)
    with pytest.raises(ConfigError, match=says):
        TrainConfig(aug_cutmix_prob=prob, aug_cutmix_area=area, device="cpu").check()


def test_the_one_class_term_needs_the_mean_pool_and_a_weight_of_zero_or_more():
    with pytest.raises(ConfigError, match="real_compact_weight"):
        TrainConfig(real_compact_weight=0.2, pool="top10", device="cpu").check()
    with pytest.raises(ConfigError, match="real_compact_weight"):
        TrainConfig(real_compact_weight=-1.0, device="cpu").check()
    assert TrainConfig(real_compact_weight=0.2, device="cpu").check().real_compact_weight == 0.2


def test_a_cutmix_area_without_its_probability_is_warned_about(caplog):
    undo = hear(caplog, "bitmind.training.config", logging.WARNING)
    try:
        parse_config(["--device", "cpu", "--aug_cutmix_area", "0.3", "0.6"])
        lines = {r.getMessage() for r in caplog.records if "aug_cutmix" in r.getMessage()}
        assert any("has no effect" in line and "--aug_cutmix_prob" in line for line in lines)
        caplog.clear()
        parse_config(["--device", "cpu", "--aug_cutmix_area", "0.3", "0.6", "--aug_cutmix_prob", "0.5"])
        assert not [r for r in caplog.records if "aug_cutmix" in r.getMessage()]
    finally:
        undo()


def _learner(**kw) -> Learner:
    torch.manual_seed(0)
    cfg = TrainConfig(device="cpu", seed=0, **kw).check()
    return Learner(NPR(layers=[1, 1], width=8, stem_pool=False), cfg, None)


def test_the_one_class_term_is_the_real_photos_share_of_the_batch_spread():
    learner = _learner(real_compact_weight=0.5)
    learner.model.train()
    x, y = torch.rand(6, 3, 32, 32), torch.tensor([0.0, 0.0, 0.0, 1.0, 1.0, 1.0])
    learner.model(x)
    f = learner.pooled.value.flatten(1).detach().clone()
    term = learner.compact_term(y < 0.5)
    centre = f[:3].mean(0)  # the first batch sets the centre
    spread = ((f - f.mean(0)) ** 2).sum(1).mean()
    assert torch.allclose(term, ((f[:3] - centre) ** 2).sum(1).mean() / spread, rtol=1e-5)
    assert torch.allclose(learner.real_centre, centre)


def test_shrinking_every_feature_alike_does_not_lower_the_one_class_term():
    """Its gradient along the features themselves is zero (the term is unchanged, to first
    order, when every feature is scaled alike): a network cannot lower it by shrinking its
    features towards nothing, only by setting real photos apart. A term over a detached spread
    rewarded the shrinking, and held a whole LOGO run at chance."""
    learner = _learner(real_compact_weight=0.5)
    f = (torch.rand(8, 16) + 0.5).requires_grad_()
    learner.pooled.value = f
    learner.compact_term(torch.tensor([True, False] * 4)).backward()
    g, v = f.grad, f.detach()
    assert abs(float((g * v).sum())) < 1e-5 * float(g.norm() * v.norm())
    assert float(f.grad.norm()) > 0


def test_the_one_class_term_falls_as_real_photos_gather_and_rises_as_generated_ones_join_them():
    real = torch.tensor([True, True, True, True, False, False, False, False])
    f = torch.rand(8, 16, generator=torch.Generator().manual_seed(0)) + 0.5
    centre = f[real].mean(0)

    def term(features: torch.Tensor) -> float:
        learner = _learner(real_compact_weight=0.5)  # a fresh centre: this batch's real mean
        learner.pooled.value = features
        return float(learner.compact_term(real))

    gathered, joined = f.clone(), f.clone()
    gathered[real] = centre + 0.5 * (f[real] - centre)  # the real mean stays where it was
    joined[~real] = centre + 0.5 * (f[~real] - centre)
    assert term(gathered) < term(f) < term(joined)


def test_steps_with_both_options_train_and_record_the_term_apart():
    torch.manual_seed(0)
    model = with_aux_outputs(NPR(layers=[1, 1], width=8, stem_pool=False), 2)
    cfg = TrainConfig(device="cpu", seed=0, real_compact_weight=0.2, aug_cutmix_prob=0.5, aux_weight=0.1).check()
    learner = Learner(model, cfg, None)
    learner.set_aux(["real", "a"], [0, 1, 0, 1])
    learner.begin_epoch(0)
    x, y = torch.rand(4, 3, 32, 32), torch.tensor([0.0, 1.0, 0.0, 1.0])
    for _ in range(3):
        learner.step(x, y, aux=torch.tensor([0, 1, 0, 1]))
    rec = learner.aux_record
    assert set(rec) == {"train_aux_loss", "train_compact_loss"} and rec["train_compact_loss"] > 0
    assert "train_compact_loss" not in _learner().aux_record  # off: nothing recorded


def test_the_one_class_term_is_part_of_what_a_step_minimises():
    """The same start and batch with and without the term: the weights move differently."""
    x, y = torch.rand(4, 3, 32, 32), torch.tensor([0.0, 1.0, 0.0, 1.0])
    moved = []
    for weight in (0.0, 1.0):
        learner = _learner(real_compact_weight=weight)
        learner.begin_epoch(0)
        learner.step(x, y)
        moved.append([p.detach().clone() for p in learner.model.parameters()])
    assert any(not torch.allclose(a, b) for a, b in zip(*moved))


def test_a_batch_without_real_photos_leaves_the_real_centre_unset_and_adds_nothing():
    learner = _learner(real_compact_weight=0.5)
    learner.model.train()
    learner.model(torch.rand(4, 3, 32, 32))
    term = learner.compact_term(torch.zeros(4, dtype=torch.bool))
    assert float(term.detach()) == 0.0 and bool(torch.isnan(learner.real_centre).all())
    learner.model(torch.rand(4, 3, 32, 32))
    f = learner.pooled.value.flatten(1).detach().clone()
    learner.compact_term(torch.tensor([True, True, False, False]))
    assert torch.allclose(learner.real_centre, f[:2].mean(0))  # the first real photos set it, not a pull from zero


def test_a_copy_of_the_model_leaves_the_learner_behind():
    """Weight averaging deep-copies the model with its hooks; the hook must not take the learner
    (optimiser, TensorBoard writer, loader queues: a sweep with both crashed) into the copy."""
    import copy
    import threading

    learner = _learner(real_compact_weight=0.2)
    learner.cannot_be_copied = threading.Lock()
    twin = copy.deepcopy(learner.model)
    torch.optim.swa_utils.AveragedModel(learner.model)
    twin.train()
    twin(torch.rand(2, 3, 32, 32))
    assert learner.pooled.value is None  # the copy's forward fills its own holder, not the learner's


def test_the_one_class_term_with_every_patch_mixed_or_with_paired_patches_is_refused():
    with pytest.raises(ConfigError, match="real_compact_weight"):
        TrainConfig(real_compact_weight=0.2, aug_cutmix_prob=1.0, device="cpu").check()
    with pytest.raises(ConfigError, match="pair_patches"):
        TrainConfig(aug_cutmix_prob=0.5, balance="family", pair_aligned=True, pair_patches=True, device="cpu").check()


def test_a_sweep_trains_both_options_with_weight_averaging(tmp_path):
    """End to end on a tiny sweep: each option as a variant, the one-class one with weight averaging."""
    torch.set_num_threads(1)
    data = make_folder(tmp_path / "data", n_per_class=12, seed=3, size=64)
    spec = SweepSpec.from_dict({"base": tiny_sweep_base(tmp_path, data, "s", epochs=2, patch_size=32),
                                "val_seeds": [0], "val_from": 1,
                                "variants": {"oc": {"real_compact_weight": 0.2, "swa_start": 1},
                                             "cm": {"aug_cutmix_prob": 0.5}}})
    summary = run_sweep(spec)
    assert set(summary["variants"]) == {"oc", "cm"}
    hist = json.loads((tmp_path / "ck" / "s" / "oc" / "history.json").read_text())
    assert hist[-1]["averaged"] and hist[-1]["train_compact_loss"] > 0


def test_a_resumed_learner_goes_on_with_the_mix_draws_and_the_real_centre():
    a = _learner(real_compact_weight=0.2, aug_cutmix_prob=0.5)
    a.begin_epoch(0)
    x, y = torch.rand(8, 3, 32, 32), torch.tensor([0.0, 1.0] * 4)
    for _ in range(3):
        a.step(x, y)
    assert not bool(torch.isnan(a.real_centre).any())  # real photos left unmixed have set it
    state = a.rng_state()
    b = _learner(real_compact_weight=0.2, aug_cutmix_prob=0.5)
    b.load_rng_state(state)
    assert torch.equal(b.real_centre, a.real_centre)
    assert torch.equal(torch.rand(5, generator=a.mix_gen), torch.rand(5, generator=b.mix_gen))


def test_a_sweep_variant_may_set_both_options():
    spec = SweepSpec.from_dict({"base": {"device": "cpu"},
                                "variants": {"cm": {"aug_cutmix_prob": 0.5, "aug_cutmix_area": [0.3, 0.6]},
                                             "oc": {"real_compact_weight": 0.2}}})
    checked = spec.check()
    assert checked["cm"][0].aug_cutmix_prob == 0.5 and checked["cm"][0].aug_cutmix_area == [0.3, 0.6]
    assert checked["oc"][0].real_compact_weight == 0.2
    bad = SweepSpec.from_dict({"base": {"device": "cpu"}, "variants": {"x": {"aug_cutmix_area": [0.9, 0.1]}}})
    with pytest.raises(ConfigError, match="aug_cutmix_area"):
        bad.check()
