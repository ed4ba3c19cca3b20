"""How finely the auxiliary head splits generated pictures (``--aux_by``,
``bitmind.data.families.aux_class_of``): by family (the shipped recipe), by generator design
(the GAN family split into its four networks) or by source folder; the trainer, the sweep
(variants of different groupings side by side) and resume all carry it."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from bitmind.checkpoint import load_model
from bitmind.cli.model_info import describe, render
from bitmind.data.families import AUX_GROUPINGS, aux_class_of, aux_classes
from bitmind.training import TrainConfig, parse_config
from bitmind.training.config import ConfigError
from test_generalisation import REPO, make_pools, train_tiny_logo

SOURCES = ["real/faces", "fake/sd15", "fake/sd1x", "fake/sd2", "fake/flux1-dev", "fake/flux1-schnell",
           "fake/stylegan-family", "fake/vqgan", "fake/biggan-progan", "fake/aligned-taef2",
           "fake/aligned-synth-upsampling", "fake/minigan-nearest", "fake/minigan-convt", "real/coco"]


def test_each_grouping_splits_only_what_it_names():
    family = [aux_class_of(s, "family") for s in SOURCES]
    generator = [aux_class_of(s, "generator") for s in SOURCES]
    source = [aux_class_of(s, "source") for s in SOURCES]
    assert family == ["real", "sd1-2", "sd1-2", "sd1-2", "flux1", "flux1", "gans", "gans", "gans", "aligned",
                      "synthetic", "minigan", "minigan", "real"]
    # by generator: the GANs by design, every family whose folders share a decoder kept whole
    assert generator == ["real", "sd1-2", "sd1-2", "sd1-2", "flux1", "flux1", "stylegan-family", "vqgan",
                         "biggan-progan", "aligned", "synthetic", "minigan", "minigan", "real"]
    # by source: every generator folder; training material (round trips, traces, small GANs) stays one class each
    assert source == ["real", "sd15", "sd1x", "sd2", "flux1-dev", "flux1-schnell", "stylegan-family", "vqgan",
                      "biggan-progan", "aligned", "synthetic", "minigan", "minigan", "real"]
    assert aux_classes(SOURCES) == aux_classes(SOURCES, "family")  # the default is the shipped recipe's
    names, labels = aux_classes(SOURCES, "generator")
    assert names == ["real", "aligned", "biggan-progan", "flux1", "minigan", "sd1-2", "stylegan-family", "synthetic", "vqgan"]
    assert [names[i] for i in labels] == generator
    # the classes are those of the sources given (a sweep gives the whole training set, so a fold's
    # held-out class is a row it never trains on; the trainer gives its own training set)
    assert "vqgan" not in aux_classes([s for s in SOURCES if s != "fake/vqgan"], "generator")[0]
    with pytest.raises(ValueError, match="one of family, generator, source"):
        aux_class_of("fake/sdxl", "folder")
    assert AUX_GROUPINGS[0] == TrainConfig().aux_by == "family"


def test_an_unknown_grouping_is_refused_before_any_data_is_read_and_kept_on_resume(tmp_path, usage_error):
    with pytest.raises(ConfigError, match="--aux_by 'folder': one of family, generator, source"):
        TrainConfig(aux_weight=0.1, aux_by="folder", device="cpu").check()
    # the grouping decides how many rows the head has: a resume with another one would not load its weights
    run = tmp_path / "t"
    run.mkdir()
    opt = json.dumps(TrainConfig(width=8, aux_weight=0.1, aux_by="generator").to_dict())
    (run / "opt.json").write_text(opt)
    err = usage_error(parse_config, ["--resume", "--checkpoints_dir", str(tmp_path), "--name", "t", "--aux_by", "source"])
    assert "--resume" in err and "aux_by='generator'" in err and "aux_by='source'" in err, err
    assert (run / "opt.json").read_text() == opt
    assert parse_config(["--resume", "--checkpoints_dir", str(tmp_path), "--name", "t"]).aux_by == "generator"


def test_the_trainer_splits_the_head_by_source_and_records_the_classes(tmp_path):
    pools = make_pools(tmp_path)
    res = subprocess.run([sys.executable, str(REPO / "base_miner" / "NPR" / "train_detector.py"),
                          "--data", str(pools["crops"]), str(pools["aligned"]), "--layers", "1", "1", "--width", "8",
                          "--epochs", "1", "--batch_size", "8", "--workers", "0", "--device", "cpu", "--progress", "false",
                          "--aux_weight", "0.5", "--aux_by", "source", "--checkpoints_dir", str(tmp_path / "ck"), "--name", "t"],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    lm = load_model(tmp_path / "ck" / "t" / "model_epoch_best.pth")
    info = describe(tmp_path / "ck" / "t" / "model_epoch_best.pth")
    assert "aux_fakes_only" not in info["training"]  # shown only when on (it was not here)
    assert info["training"]["aux_by"] == "source" and "aux_by source" in render(info)
    classes = ["real", "aligned", "flux1-dev", "flux1-schnell", "sdxl", "stylegan-family"]
    assert lm.meta["train_options"]["aux_classes"] == classes and lm.meta["train_options"]["aux_by"] == "source"
    assert lm.model.config["num_classes"] == 1 + len(classes)


def test_a_sweep_gives_each_variant_the_head_of_its_own_grouping(tmp_path):
    """Arms of different groupings train side by side on one stream (the LOGO spec
    ``logo_auxby_s1_52.json``): each arm's models, the fold's included, have the rows and
    names of its grouping, computed from the whole training set."""
    sweep = train_tiny_logo(tmp_path, {"fam": {"aux_weight": 0.5}, "src": {"aux_weight": 0.5, "aux_by": "source"}},
                            epochs=1)
    want = {"fam": ["real", "aligned", "flux1", "gans", "sdxl"],
            "src": ["real", "aligned", "flux1-dev", "flux1-schnell", "sdxl", "stylegan-family"]}
    for arm, classes in want.items():
        for variant in (arm, f"{arm}.minus-flux1"):
            lm = load_model(sweep / variant / "model_epoch_best.pth")
            assert lm.meta["train_options"]["aux_classes"] == classes, variant
            assert lm.model.config["num_classes"] == 1 + len(classes), variant
    assert load_model(sweep / "plain" / "model_epoch_best.pth").model.config["num_classes"] == 1


@pytest.mark.parametrize("by", ["source", "generator"])
def test_aux_attribution_reads_each_test_picture_in_the_arms_own_grouping(tmp_path, by):
    """``aux_attribution.py``'s everything table puts each known test picture in the class its
    arm's head was told: by source or generator, a perfect head is right on every class (with
    the family grouping the split classes' rows were dropped without a word)."""
    from conftest import load_script

    bench = load_script("benchmarks/aux_attribution.py")
    sources = np.array(["real/coco", "real/faces", "fake/flux1-dev", "fake/flux1-schnell", "fake/vqgan",
                        "fake/stylegan-family", "fake/sdxl"])
    labels = np.array([0, 0, 1, 1, 1, 1, 1], dtype=np.int8)
    classes, target = aux_classes(sources.tolist(), by)
    head = np.eye(len(classes), dtype=np.float16)[target]  # always right
    np.savez(tmp_path / "s.npz", **{"validator/source": sources, "validator/split": np.array(["test"] * len(sources)),
                                    "validator/label": labels, "aux/validator/aux": head,
                                    "aux_classes/aux": np.array(classes)})
    spec = {"base": {}, "variants": {"aux": {"aux_weight": 0.1, "aux_by": by}}}
    with np.load(tmp_path / "s.npz") as z:
        res = bench.analyse(z, spec, "aux", "validator")
    assert set(res["everything"]) == set(classes) and all(r["right"] == 1.0 for r in res["everything"].values())


def test_a_run_recorded_before_the_grouping_existed_resumes_by_family_only(tmp_path, usage_error):
    """An ``opt.json`` written before ``--aux_by`` has no such key; its head was built by family, so
    a resume that asks for another grouping is refused up front (not after reading the data, at
    the weights that no longer fit), and a plain resume keeps the family grouping."""
    run = tmp_path / "t"
    run.mkdir()
    saved = TrainConfig(width=8, aux_weight=0.1).to_dict()
    saved.pop("aux_by")
    (run / "opt.json").write_text(json.dumps(saved))
    err = usage_error(parse_config, ["--resume", "--checkpoints_dir", str(tmp_path), "--name", "t", "--aux_by", "source"])
    assert "aux_by='family'" in err and "aux_by='source'" in err, err
    assert parse_config(["--resume", "--checkpoints_dir", str(tmp_path), "--name", "t"]).aux_by == "family"
    # ... and the trainer's own check (callers that build a config without reading opt.json)
    from bitmind.training.run_folder import check_resume_matches

    with pytest.raises(ValueError, match="aux_by"):
        check_resume_matches(TrainConfig(width=8, aux_weight=0.1, aux_by="source", checkpoints_dir=str(tmp_path), name="t"))
    check_resume_matches(TrainConfig(width=8, aux_weight=0.1, checkpoints_dir=str(tmp_path), name="t"))


def test_a_grouping_without_the_head_is_refused():
    with pytest.raises(ConfigError, match="--aux_by source needs --aux_weight"):
        TrainConfig(aux_by="source", device="cpu").check()


def test_a_head_on_generated_pictures_only_never_learns_from_real_photos():
    """``--aux_fakes_only``: the head's cross-entropy over generated pictures alone (class 0,
    ``real``, is never a target); a batch of real photos alone adds 0 and no gradient (a mean
    over nothing would be NaN); without it, the plain cross-entropy over every picture."""
    import torch
    import torch.nn.functional as F

    from bitmind.models import build_model
    from bitmind.training.loop import Learner

    def learner(**kw):
        cfg = TrainConfig(aux_weight=0.1, device="cpu", layers=[1, 1], width=8, **kw)
        return Learner(build_model("npr", **cfg.model_config(), num_classes=4), cfg, amp_dtype=None)

    logits = torch.randn(6, 3, requires_grad=True)
    aux = torch.tensor([0, 1, 2, 0, 2, 0])
    fakes_only, plain = learner(aux_fakes_only=True), learner()
    want = F.cross_entropy(logits[aux != 0], aux[aux != 0])
    assert torch.allclose(fakes_only.aux_term(logits, aux), want)
    assert torch.allclose(plain.aux_term(logits, aux), F.cross_entropy(logits, aux))
    assert not torch.allclose(want, F.cross_entropy(logits, aux))
    reals = fakes_only.aux_term(logits[aux == 0], aux[aux == 0])
    reals.backward()
    assert float(reals.detach()) == 0.0 and float(logits.grad.abs().sum()) == 0.0
    with pytest.raises(ConfigError, match="--aux_fakes_only needs --aux_weight"):
        TrainConfig(aux_fakes_only=True, device="cpu").check()
    with pytest.raises(ConfigError, match="--aux_fakes_only with --aug_cutmix_prob"):
        TrainConfig(aux_weight=0.1, aux_fakes_only=True, aug_cutmix_prob=0.5, device="cpu").check()


def test_model_info_says_when_the_head_learned_from_generated_pictures_only(tmp_path):
    pools = make_pools(tmp_path)
    res = subprocess.run([sys.executable, str(REPO / "base_miner" / "NPR" / "train_detector.py"),
                          "--data", str(pools["crops"]), str(pools["aligned"]), "--layers", "1", "1", "--width", "8",
                          "--epochs", "1", "--batch_size", "8", "--workers", "0", "--device", "cpu", "--progress", "false",
                          "--aux_weight", "0.5", "--aux_fakes_only", "--checkpoints_dir", str(tmp_path / "ck"), "--name", "t"],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    path = tmp_path / "ck" / "t" / "model_epoch_best.pth"
    assert load_model(path).meta["train_options"]["aux_fakes_only"] is True
    assert "aux_fakes_only" in render(describe(path))
    assert "aux_by" not in describe(path)["training"]  # the default grouping: the class names say it
    hist = json.loads((tmp_path / "ck" / "t" / "history.json").read_text())
    assert all(math.isfinite(r["train_aux_loss"]) and r["train_aux_loss"] > 0 for r in hist)


def test_a_sweep_base_may_set_the_heads_options_for_its_head_arms_only():
    """``aux_by`` / ``aux_fakes_only`` set once in a sweep's base serve the variants with the head;
    the plain control inherits them unused (back at their defaults), where one named by a
    variant without the head is still refused."""
    from bitmind.training.sweep import SweepSpec

    spec = SweepSpec.from_dict({"base": {"device": "cpu", "aux_by": "source", "aux_fakes_only": True},
                                "variants": {"head": {"aux_weight": 0.1}, "plain": {}}})
    checked = spec.check()
    head, plain = checked["head"][0], checked["plain"][0]
    assert (head.aux_by, head.aux_fakes_only) == ("source", True)
    assert (plain.aux_weight, plain.aux_by, plain.aux_fakes_only) == (0.0, "family", False)
    with pytest.raises(ConfigError, match="variant 'plain': --aux_by source needs --aux_weight"):
        SweepSpec.from_dict({"base": {"device": "cpu"}, "variants": {"plain": {"aux_by": "source"}}}).check()
    assert spec.checked_base().aux_by == "family"  # the base alone trains no head


def test_the_speed_benchmarks_read_a_spec_the_sweep_runs(tmp_path):
    """``loader_speed.py`` and ``step_speed.py`` check a spec's base as the sweep does: a base
    that sets the head's grouping for its head arms is not refused there either."""
    from types import SimpleNamespace

    from conftest import load_script

    path = tmp_path / "spec.json"
    path.write_text(json.dumps({"base": {"device": "cpu", "aux_by": "source"},
                                "variants": {"head": {"aux_weight": 0.1}, "plain": {}}}))
    args = SimpleNamespace(spec=str(path), data=None, challenge_data=None, train_data=None, batch_size=None,
                           samples_per_epoch=None, train_seed=None, device="cpu")
    for script, extra in (("benchmarks/loader_speed.py", ()), ("benchmarks/step_speed.py", (str(tmp_path / "ck"),))):
        base, spec = load_script(script).sweep_base(args, *extra)
        assert base.aux_weight == 0 and spec.variant_config("head").aux_by == "source", script


def test_shuffled_classes_keep_the_family_head_and_drop_what_made_each_picture():
    """``--aux_by shuffled`` (a probe): the family classes, real photos still ``real``, each
    generated picture one fake class drawn at random, the same draws every time (every rank
    and a resume read the same classes), spread over the classes whatever the source."""
    sources = ["real/coco"] * 200 + ["fake/sdxl"] * 300 + ["fake/flux1-dev"] * 300 + ["fake/vqgan"] * 300
    names, labels = aux_classes(sources, "shuffled")
    fam_names, fam_labels = aux_classes(sources, "family")
    assert names == fam_names == ["real", "flux1", "gans", "sdxl"]
    assert labels == aux_classes(sources, "shuffled")[1]  # drawn once, from a fixed seed
    assert labels[:200] == [0] * 200 and all(1 <= y <= 3 for y in labels[200:])
    for start in (200, 500, 800):  # each source's pictures spread over all three fake classes
        share = [labels[start:start + 300].count(c) / 300 for c in (1, 2, 3)]
        assert all(0.2 < x < 0.47 for x in share), share
    assert sum(a == b for a, b in zip(labels[200:], fam_labels[200:])) < 0.5 * 900
    assert aux_class_of("fake/vqgan", "shuffled") == "gans"  # the classes' names are the families'
