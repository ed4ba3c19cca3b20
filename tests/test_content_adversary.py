"""The content adversary (``TrainConfig.adv_weight``): a training-only head that names each real
photo's kind from the pooled features, its gradient reversed into the network. What must hold:
only real photos are its targets, the network gets the head's gradient reversed and scaled (the
head itself learns normally), the strength ramps up from 0, the sweep and the trainer train it and
record its loss, a resumed run goes on against the same adversary, the checkpoint is the detector
alone, and unusable options are refused."""
from __future__ import annotations

import json
import logging
import math
import shutil

import pytest
import torch
import torch.nn.functional as F

from bitmind.checkpoint import load_model
from bitmind.cli import model_info
from bitmind.data.families import content_classes
from bitmind.models.npr import NPR
from bitmind.training import TrainConfig, parse_config, train
from bitmind.training.adversary import ContentAdversary, ramp, reverse_gradient
from bitmind.training.config import ConfigError
from bitmind.training.loop import Learner
from bitmind.training.sweep import SweepSpec, run_sweep
from train_helpers import tiny_config, tiny_sweep_base
from validator_synth import make_folder

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _learner(**kw) -> Learner:
    torch.manual_seed(0)
    cfg = TrainConfig(device="cpu", seed=0, epochs=10, **kw).check()
    return Learner(NPR(layers=[1, 1], width=8, stem_pool=False), cfg, None)


def _two_real_kinds(root):
    """``make_folder``'s real/synth and fake/synth, and a second real kind, real/other."""
    data = make_folder(root / "data", n_per_class=12, seed=3, size=64)
    other = make_folder(root / "other", n_per_class=8, seed=4, size=64)
    shutil.move(str(other / "real" / "synth"), str(data / "real" / "other"))
    return data


# ---------------------------------------------------------------------------- classes and gradients
def test_only_real_photos_have_a_kind_and_the_kinds_are_sorted_source_folders():
    sources = ["real/faces", "fake/sdxl", "real/coco", "fake/aligned-taef2", "real/faces"]
    names, labels = content_classes(sources)
    assert names == ["real/coco", "real/faces"]
    assert labels == [1, -1, 0, -1, 1]
    assert content_classes(["fake/a", "fake/b"]) == ([], [-1, -1])
    # a variant's mask (a LOGO fold holding real/coco out): its kinds only
    assert content_classes(sources, [True, True, False, True, True]) == (["real/faces"], [0, -1, -1, -1, 0])
    with pytest.raises(ValueError, match="flags"):
        content_classes(sources, [True])


def test_the_network_gets_the_heads_gradient_reversed_and_scaled_and_the_head_its_own():
    torch.manual_seed(0)
    adv = ContentAdversary(6, 3, seed=1)
    f = torch.randn(5, 6, requires_grad=True)
    kinds = torch.tensor([0, 2, -1, 1, -1])
    adv.term(f, kinds, 0.25).backward()
    reversed_grad, head_grad = f.grad.clone(), adv.head.weight.grad.clone()

    f.grad, adv.head.weight.grad = None, None  # the same loss without the reversal
    known = kinds >= 0
    F.cross_entropy(adv.head(f[known]), kinds[known]).backward()
    assert torch.allclose(reversed_grad, -0.25 * f.grad, atol=1e-6)
    assert torch.allclose(head_grad, adv.head.weight.grad, atol=1e-6)
    assert not reversed_grad[~known].any()  # generated pictures are no target


def test_a_batch_without_real_photos_adds_nothing():
    adv = ContentAdversary(4, 2)
    assert float(adv.term(torch.randn(3, 4), torch.full((3,), -1), 1.0).detach()) == 0.0


def test_reverse_gradient_is_the_identity_forward():
    x = torch.randn(3, requires_grad=True)
    y = reverse_gradient(x, 2.0)
    assert torch.equal(y, x)
    y.sum().backward()
    assert torch.equal(x.grad, torch.full((3,), -2.0))


def test_the_strength_ramps_from_zero_to_about_the_weight():
    assert ramp(0.0) == 0.0 and ramp(1.0) > 0.99 and ramp(2.0) == ramp(1.0)
    values = [ramp(p / 10) for p in range(11)]
    assert values == sorted(values) and 0.4 < ramp(0.1) < 0.5
    learner = _learner(adv_weight=0.5)
    learner.set_content(["real/a", "real/b"], [0, 1, -1])
    learner.begin_epoch(0)
    assert learner.adv_scale == 0.0
    learner.begin_epoch(9)  # the last of 10
    assert learner.adv_scale == pytest.approx(0.5 * ramp(1.0))
    short = Learner(NPR(layers=[1, 1], width=8, stem_pool=False), TrainConfig(device="cpu", epochs=1, adv_weight=0.5).check(), None)
    short.set_content(["real/a", "real/b"], [0, 1])
    short.begin_epoch(0)  # a one-epoch fine-tune: at full strength, not 0 throughout
    assert short.adv_scale == pytest.approx(0.5 * ramp(1.0))


def test_an_adversary_needs_two_kinds():
    with pytest.raises(ValueError, match="two real kinds"):
        ContentAdversary(4, 1)


# ---------------------------------------------------------------------------- the learner
def test_a_step_trains_the_adversary_and_records_its_loss_apart():
    learner = _learner(adv_weight=0.5)
    learner.set_content(["real/a", "real/b"], [0, 1, -1, -1])
    assert len(learner.opt.param_groups) == 2  # the adversary's weights are optimised too
    before = learner.adversary.head.weight.detach().clone()
    learner.begin_epoch(5)
    x, y = torch.rand(4, 3, 32, 32), torch.tensor([0.0, 0.0, 1.0, 1.0])
    for _ in range(3):
        learner.step(x, y, content=torch.tensor([0, 1, -1, -1]))
    assert not torch.equal(before, learner.adversary.head.weight)
    rec = learner.aux_record
    assert rec["train_adv_loss"] > 0 and math.isfinite(rec["train_adv_loss"]) and rec["adv_scale"] == learner.adv_scale
    assert learner.aux_meta == {"adv_classes": ["real/a", "real/b"]}
    assert learner.pooled.value is None  # not kept past the step
    assert "train_adv_loss" not in _learner().aux_record  # off: nothing recorded


def test_the_reversed_term_moves_the_network():
    """The same start and batch with the adversary at strength 0 and at 1: the network's weights
    move differently (at 0 the head learns and the network does not feel it)."""
    x, y, kinds = torch.rand(4, 3, 32, 32), torch.tensor([0.0, 0.0, 1.0, 1.0]), torch.tensor([0, 1, -1, -1])
    moved = []
    for epoch in (0, 9):  # the ramp: strength 0 at the first epoch
        learner = _learner(adv_weight=1.0)
        learner.set_content(["real/a", "real/b"], [0, 1, -1, -1])
        learner.begin_epoch(epoch)
        for g in learner.opt.param_groups:
            g["lr"] = 1e-3  # the same step size at both epochs
        learner.step(x, y, content=kinds)
        moved.append([p.detach().clone() for p in learner.model.parameters()])
    assert any(not torch.allclose(a, b) for a, b in zip(*moved))


def test_one_real_kind_trains_without_the_adversary_and_says_so(caplog):
    learner = _learner(adv_weight=0.5)
    with caplog.at_level(logging.WARNING, logger="bitmind.training.loop"):
        learner.set_content(["real/only"], [0, -1])
    assert learner.adversary is None and "trains without it" in caplog.text
    learner.begin_epoch(0)
    learner.step(torch.rand(2, 3, 32, 32), torch.tensor([0.0, 1.0]), content=None)
    assert "train_adv_loss" not in learner.aux_record


def test_a_resumed_learner_goes_on_against_the_same_adversary():
    a = _learner(adv_weight=0.5)
    a.set_content(["real/a", "real/b"], [0, 1, -1, -1])
    a.begin_epoch(5)
    for _ in range(2):
        a.step(torch.rand(4, 3, 32, 32), torch.tensor([0.0, 0.0, 1.0, 1.0]), content=torch.tensor([0, 1, -1, -1]))
    state = a.rng_state()
    b = _learner(adv_weight=0.5)
    b.set_content(["real/a", "real/b"], [0, 1, -1, -1])
    b.opt.load_state_dict(a.opt.state_dict())  # the optimiser's groups match: the adversary's is there
    b.load_rng_state(state)
    assert torch.equal(b.adversary.head.weight, a.adversary.head.weight)
    for kinds in (["real/a", "real/b", "real/c"], ["real/a", "real/z"], ["real/a"]):  # more, other names, too few
        c = _learner(adv_weight=0.5)
        c.set_content(kinds, list(range(len(kinds))))
        with pytest.raises(ValueError, match="names the real kinds"):
            c.check_resumable(state)  # before the optimiser's state (its groups follow the adversary)


# ---------------------------------------------------------------------------- options
@pytest.mark.parametrize("kw, says", [
    (dict(adv_weight=-0.1), "adv_weight must be 0"),
    (dict(adv_weight=float("nan")), "adv_weight must be 0"),
    (dict(adv_weight=0.3, pool="top5"), "mean pool"),
    (dict(adv_weight=0.3, aug_cutmix_prob=0.5), "two contents"),
])
def test_unusable_adversary_options_are_refused(kw, says):
    with pytest.raises(ConfigError, match=says):
        TrainConfig(device="cpu", **kw).check()


def test_a_sweep_variant_may_set_the_adversary_and_a_resume_keeps_its_weight(tmp_path, usage_error):
    checked = SweepSpec.from_dict({"base": {"device": "cpu"}, "variants": {"a": {"adv_weight": 0.3}, "c": {}}}).check()
    assert checked["a"][0].adv_weight == 0.3 and checked["c"][0].adv_weight == 0.0
    run = tmp_path / "t"
    run.mkdir()
    opt = json.dumps(TrainConfig(width=8, adv_weight=0.3).to_dict())
    (run / "opt.json").write_text(opt)
    err = usage_error(parse_config, ["--resume", "--checkpoints_dir", str(tmp_path), "--name", "t", "--adv_weight", "0"])
    assert "adv_weight=0.3" in err, err
    assert (run / "opt.json").read_text() == opt


# ---------------------------------------------------------------------------- end to end
def test_a_sweep_trains_the_adversary_and_the_file_is_the_detector_alone(tmp_path):
    data = _two_real_kinds(tmp_path)
    spec = SweepSpec.from_dict({"base": tiny_sweep_base(tmp_path, data, "s", epochs=2, patch_size=32),
                                "val_seeds": [0], "val_from": 1,
                                "variants": {"adv": {"adv_weight": 0.5, "aux_weight": 0.1},
                                             "plain": {}}})
    summary = run_sweep(spec)
    assert set(summary["variants"]) == {"adv", "plain"}
    hist = json.loads((tmp_path / "ck" / "s" / "adv" / "history.json").read_text())
    assert hist and all(r["train_adv_loss"] > 0 for r in hist)
    assert hist[-1]["adv_scale"] == pytest.approx(0.5 * ramp(1.0))  # the last epoch: at full strength
    assert not any("train_adv_loss" in r for r in json.loads((tmp_path / "ck" / "s" / "plain" / "history.json").read_text()))
    lm = load_model(tmp_path / "ck" / "s" / "adv" / "model_epoch_best.pth")
    assert lm.meta["train_options"]["adv_classes"] == ["real/other", "real/synth"]
    assert lm.meta["config"]["num_classes"] == 1 + len(lm.meta["train_options"]["aux_classes"])  # no adversary rows


def test_a_sweep_fold_that_holds_a_real_kind_out_trains_against_the_kinds_it_has(tmp_path, caplog):
    """The classes come from each variant's own training items: with one real kind left there is
    nothing to tell apart, and the variant trains without an adversary (and says so)."""
    data = _two_real_kinds(tmp_path)
    spec = SweepSpec.from_dict({"base": tiny_sweep_base(tmp_path, data, "s", epochs=2, patch_size=32, adv_weight=0.5),
                                "val_seeds": [0], "val_from": 1,
                                "variants": {"all": {}, "minus-other": {"exclude_sources": ["real/other"]}}})
    with caplog.at_level(logging.WARNING, logger="bitmind.training.loop"):
        run_sweep(spec)
    assert "trains without it" in caplog.text
    full = load_model(tmp_path / "ck" / "s" / "all" / "model_epoch_best.pth").meta["train_options"]
    held = load_model(tmp_path / "ck" / "s" / "minus-other" / "model_epoch_best.pth").meta["train_options"]
    assert full["adv_classes"] == ["real/other", "real/synth"] and "adv_classes" not in held
    hist = json.loads((tmp_path / "ck" / "s" / "minus-other" / "history.json").read_text())
    assert not any("train_adv_loss" in r for r in hist)


def test_step_speed_times_an_adversary_variant_with_its_term():
    from conftest import load_script

    step_speed = load_script("benchmarks/step_speed.py")
    kinds, labels = step_speed.synthetic_content(40, 0)
    assert len(kinds) == step_speed.SYNTHETIC_REAL_KINDS and -1 in labels and max(labels) < len(kinds)
    spec = SweepSpec.from_dict({"base": {"device": "cpu", "layers": [1, 1], "width": 8, "epochs": 4},
                                "variants": {"adv": {"adv_weight": 0.3}, "plain": {}}})
    variants = step_speed.build_variants(spec, ["adv", "plain"], {}, torch.device("cpu"), None,
                                         content=(kinds, labels))
    try:
        adv, plain = variants
        assert adv.adversary is not None and plain.adversary is None
        k = torch.arange(8)
        adv.step(torch.rand(8, 3, 32, 32), torch.tensor([0.0, 1.0] * 4), content=adv.content_for(k, torch.device("cpu")))
        assert "train_adv_loss" in adv.aux_record
    finally:
        step_speed.free(variants, torch.device("cpu"))


def test_a_resume_whose_training_data_gives_other_real_kinds_is_refused_in_one_line(tmp_path):
    """``--train_data`` may change on resume; the adversary's rows name the kinds it was trained
    on, so a training set with other kinds (here one: nothing to tell apart) is refused before the
    optimiser's state is loaded, with what to do instead."""
    from bitmind.training.run_folder import RunFolderError

    data = make_folder(tmp_path / "data", n_per_class=12, seed=3, size=64)  # real/synth
    extra = make_folder(tmp_path / "extra", n_per_class=8, seed=4, size=64)
    shutil.rmtree(extra / "fake")
    shutil.move(str(extra / "real" / "synth"), str(extra / "real" / "other"))  # real/other, training only
    train(tiny_config(data, tmp_path / "ck", epochs=1, patch_size=32, adv_weight=0.4, train_data=[str(extra)]))
    with pytest.raises(RunFolderError, match="names the real kinds") as e:
        train(tiny_config(data, tmp_path / "ck", epochs=2, patch_size=32, adv_weight=0.4, resume=True, train_data=[]))
    assert "--init_from" in str(e.value) and "real/other" in str(e.value)


def test_the_trainer_trains_the_adversary_and_resumes_with_it(tmp_path):
    data = _two_real_kinds(tmp_path)
    train(tiny_config(data, tmp_path / "ck", epochs=1, patch_size=32, adv_weight=0.4))
    run = tmp_path / "ck" / "t"
    first = json.loads((run / "history.json").read_text())
    assert first and first[0]["train_adv_loss"] > 0
    train(tiny_config(data, tmp_path / "ck", epochs=3, patch_size=32, adv_weight=0.4, resume=True))
    hist = json.loads((run / "history.json").read_text())
    assert [r["epoch"] for r in hist] == [0, 1, 2] and all(r["train_adv_loss"] > 0 for r in hist)
    assert hist[0] == first[0]  # the resumed run kept its first epoch's record
    lm = load_model(run / "model_epoch_best.pth")
    assert lm.meta["config"]["num_classes"] == 1 and lm.meta["train_options"]["adv_weight"] == 0.4
    said = model_info.render(model_info.describe(run / "model_epoch_best.pth"))
    assert "trained against a content adversary (weight 0.400, not in the file) naming the real kinds: real/other, real/synth" in said
