"""The auxiliary family head (``TrainConfig.aux_weight``): a second task that asks the network to
tell the fake families of its training set apart, trained beside the real/fake logit and never
served. What must hold: the classes are families (one for every real photo), the head learns,
every consumer of a model (serving, scoring, calibration, ensembles) reads the detector's logit
alone, and a run records the classes so that the file describes itself."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from bitmind.checkpoint import load_model
from bitmind.cli.model_info import describe, render
from bitmind.data.families import aux_classes
from bitmind.inference import forward_logits, forward_outputs
from bitmind.miner.reload import ModelSlot
from bitmind.models import build_model
from bitmind.models.ensemble import Ensemble
from bitmind.training.config import TrainConfig
from bitmind.training.loop import Learner
from test_generalisation import REPO, TINY, make_pools, train_tiny_logo

TINY_POOL_CLASSES = ["real", "aligned", "flux1", "gans", "sdxl"]


def test_aux_classes_are_families_with_one_class_for_every_real_photo():
    sources = ["real/faces", "fake/sd15", "fake/aligned-taef2", "real/coco", "fake/sd1x", "fake/flux1-dev",
               "fake/minigan-nearest", "fake/flux1-schnell"]
    names, labels = aux_classes(sources)
    assert names == ["real", "aligned", "flux1", "minigan", "sd1-2"]
    assert [names[i] for i in labels] == ["real", "sd1-2", "aligned", "real", "sd1-2", "flux1", "minigan", "flux1"]
    # a held-out family has no class when the classes come from a fold's own sources
    assert "flux1" not in aux_classes([s for s in sources if "flux1" not in s])[0]


def test_aux_weight_is_checked_before_any_data_is_read():
    with pytest.raises(ValueError, match="aux_weight must be 0"):
        TrainConfig(aux_weight=-0.1).check()
    with pytest.raises(ValueError, match="mean pool"):
        TrainConfig(aux_weight=0.5, pool="top5").check()
    with pytest.raises(ValueError, match="init_from"):
        TrainConfig(aux_weight=0.5, init_from="mining_models/base.pth").check()
    assert TrainConfig(aux_weight=0.5, device="cpu").check().aux_weight == 0.5


def test_the_aux_head_learns_and_only_the_first_output_is_the_detector():
    torch.manual_seed(0)
    cfg = TrainConfig(aux_weight=1.0, lr=3e-3, device="cpu", **TINY)
    model = build_model("npr", **cfg.model_config(), num_classes=1 + 3)
    learner = Learner(model, cfg, amp_dtype=None)
    learner.set_aux(["real", "a", "b"], [0, 1, 2, 0, 1, 2, 0, 1])
    # three kinds of picture: flat, blocky, noisy; the head must learn which is which
    g = torch.Generator().manual_seed(0)
    flat = torch.full((3, 32, 32), 0.5)
    blocky = torch.nn.functional.interpolate(torch.rand(1, 3, 4, 4, generator=g), size=32, mode="nearest")[0]
    x = torch.stack([flat, blocky, torch.rand(3, 32, 32, generator=g)] * 2 + [flat, blocky])
    y = torch.tensor([0.0, 1.0, 1.0] * 2 + [0.0, 1.0])
    k = torch.arange(8)
    aux = learner.aux_for(k, x.device)
    assert aux.tolist() == [0, 1, 2, 0, 1, 2, 0, 1]

    def aux_loss():
        with torch.no_grad():
            model.eval()
            out = forward_outputs(model, x)
            model.train()
        return float(torch.nn.functional.cross_entropy(out[:, 1:], aux))

    before = aux_loss()
    learner.begin_epoch(0)
    for _ in range(40):
        learner.train_batch(x, y, k, {})
    assert aux_loss() < 0.5 * before
    # the epoch's losses come apart: the detector's (comparable with an arm without the head) and the head's
    assert learner.mean_aux_loss is not None and learner.mean_aux_loss > 0 and 0 < learner.mean_loss < 1.0
    assert learner.mean_aux_loss != pytest.approx(learner.mean_loss)
    model.eval()
    with torch.no_grad():
        assert torch.equal(forward_logits(model, x), forward_outputs(model, x)[:, 0])

    # without aux labels the step trains the detector alone: the head's rows get no gradient
    plain = Learner(model, TrainConfig(lr=1e-3, device="cpu", **TINY), amp_dtype=None)
    plain.set_aux(["real"], [0] * 8)  # ignored: aux_weight 0
    assert plain.aux_for(k, x.device) is None
    plain.step(x, y)
    assert model.fc1.weight.grad[1:].abs().sum() == 0 and model.fc1.weight.grad[0].abs().sum() > 0


def test_an_ensemble_averages_its_members_detector_logits_only():
    torch.manual_seed(0)
    with_head = {"arch": "npr", "config": {**TINY, "num_classes": 4}}
    plain = {"arch": "npr", "config": dict(TINY)}
    ens = Ensemble([with_head, plain]).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        want = (ens.members[0](x)[:, 0] + ens.members[1](x)[:, 0]) / 2
        assert torch.allclose(forward_logits(ens, x), want, atol=1e-6)


def test_a_logo_run_with_an_aux_arm_records_its_classes_and_serves_one_logit(tmp_path):
    """The path of a LOGO spec with an auxiliary-head arm, on tiny pools: every variant of the
    arm (everything and the fold) gets the same head, from the whole training set's families;
    the files name the classes, load as the miner loads them, score, and model_info shows them."""
    sweep = train_tiny_logo(tmp_path, {"aux": {"aux_weight": 0.5}}, epochs=2)
    gen = [sys.executable, str(REPO / "benchmarks" / "generalisation.py")]
    for variant in ("aux", "plain"):
        hist = json.loads((sweep / variant / "history.json").read_text())
        assert all(("train_aux_loss" in r) == (variant == "aux") for r in hist)
    for variant in ("aux", "aux.minus-flux1", "plain"):
        lm = load_model(sweep / variant / "model_epoch_best.pth")
        classes = (lm.meta.get("train_options") or {}).get("aux_classes")
        if variant == "plain":
            assert classes is None and lm.model.config["num_classes"] == 1
            continue
        assert classes == TINY_POOL_CLASSES, variant
        assert lm.model.config["num_classes"] == 1 + len(TINY_POOL_CLASSES)
        with torch.no_grad():
            assert forward_logits(lm.model, torch.rand(2, 3, 64, 64)).shape == (2,)
    text = render(describe(sweep / "aux" / "model_epoch_best.pth"))
    assert "auxiliary head" in text and "real, aligned, flux1, gans, sdxl" in text and "aux_weight 0.500" in text
    res = subprocess.run(gen + ["score", "--sweep", str(sweep), "--workers", "0"], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    scores = np.load(sweep / "logo_scores.npz")
    assert scores["validator/aux.minus-flux1"].ndim == 1
    assert not np.allclose(scores["validator/plain.minus-flux1"], scores["validator/aux.minus-flux1"])
    # the head's class probabilities are kept for the arm with it, and only for it
    head = scores["aux/validator/aux.minus-flux1"]
    assert head.shape == (len(scores["validator/source"]), len(TINY_POOL_CLASSES))
    assert np.allclose(head.astype(np.float64).sum(axis=1), 1.0, atol=1e-2)
    assert list(scores["aux_classes/aux"]) == TINY_POOL_CLASSES and "aux/validator/plain" not in scores.files
    # ... and read out: what the fold's head takes the FLUX.1 pictures it never saw for
    out = tmp_path / "attribution.json"
    res = subprocess.run([sys.executable, str(REPO / "benchmarks" / "aux_attribution.py"), "--scores", str(sweep / "logo_scores.npz"),
                          "--spec", str(sweep / "logo_spec.json"), "--arm", "aux", "--out", str(out)],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    att = json.loads(out.read_text())
    flux = att["folds"]["flux1"]["held_out"]
    is_flux = np.char.startswith(scores["validator/source"].astype(str), "fake/flux1")
    assert flux["n"] == int(is_flux.sum()) == 16 and sum(flux["argmax"].values()) == pytest.approx(1.0, abs=1e-3)
    top = head[is_flux].astype(np.float64).argmax(axis=1)
    assert flux["argmax"]["sdxl"] == pytest.approx(float(np.mean(top == TINY_POOL_CLASSES.index("sdxl"))), abs=1e-4)
    assert set(att["everything"]) <= set(TINY_POOL_CLASSES) and "real" in att["everything"]
    assert "| flux1: held out | 16 |" in out.with_suffix(".md").read_text()
    det = att["folds"]["flux1"]["as_detector"]
    assert set(det) == {"detector", "head_not_real"} and 0.0 <= det["head_not_real"]["auc"] <= 1.0
    assert att["as_detector_mean"]["detector"]["auc"] == pytest.approx(det["detector"]["auc"], abs=1e-4)  # one fold
    # runs merged as arms keep their head's scores under the arm's name
    merged = tmp_path / "merged.npz"
    res = subprocess.run(gen + ["merge", "--runs", f"one={sweep}:aux", f"two={sweep}:plain", "--scores", str(merged),
                                "--logo_spec", str(tmp_path / "merged_spec.json")], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    with np.load(merged) as m:
        assert np.array_equal(m["aux/validator/one.minus-flux1"], head) and "aux/validator/two" not in m.files
    # shipped, the everything model drops its head: the same detector, a plain base.pth's shapes,
    # so a miner serving the plain arm's file swaps it in place; the miner also serves a training
    # checkpoint with the head as the detector it holds (the head is left behind on loading)
    live, shipped = tmp_path / "live" / "base.pth", tmp_path / "shipped_aux.pth"
    for variant, out in (("plain", live), ("aux", shipped)):
        out.parent.mkdir(exist_ok=True)
        res = subprocess.run(gen + ["ship", "--sweep", str(sweep), "--variant", variant, "--ship_out", str(out)],
                             capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    trained, lm = load_model(sweep / "aux" / "model_epoch_best.pth"), load_model(shipped)
    from bitmind.checkpoint import read_checkpoint

    w = read_checkpoint(shipped)[0]["fc1.weight"]  # the head's rows are not in the file either
    assert w.shape[0] == 1 and w.untyped_storage().nbytes() == w.numel() * w.element_size()
    assert lm.model.config["num_classes"] == 1 and lm.meta["config"]["num_classes"] == 1
    assert lm.meta["train_options"]["aux_classes"] == TINY_POOL_CLASSES  # what it was trained with, still said
    x = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        assert forward_outputs(lm.model, x).shape == (3, 1)
        assert torch.allclose(forward_logits(lm.model, x), forward_logits(trained.model, x), atol=1e-5)
    assert "dropped when shipped" in render(describe(shipped))
    assert "in the file" in render(describe(sweep / "aux" / "model_epoch_best.pth"))
    slot = ModelSlot(str(live), torch.device("cpu"), check_interval=0.0, optimize=False)
    shutil.copy(shipped, tmp_path / "next.pth")
    os.replace(tmp_path / "next.pth", live)
    assert slot.check() and slot.serving.lm.sha256 == lm.sha256 and slot.reloads == 1
    served = slot.serving.logits(x, None)
    shutil.copy(sweep / "aux" / "model_epoch_best.pth", tmp_path / "with_head.pth")
    os.replace(tmp_path / "with_head.pth", live)
    assert slot.check() and slot.reloads == 2 and slot.serving.lm.model.config["num_classes"] == 1
    assert torch.allclose(slot.serving.logits(x, None), served, atol=1e-5)  # the same detector (raw logits)
    # scored again (as a baseline of a LOGO run), the shipped file has no head to read out
    res = subprocess.run(gen + ["score", "--sweep", str(sweep), "--workers", "0", "--baseline", f"shipped={shipped}",
                                "--scores", str(tmp_path / "again.npz")], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    with np.load(tmp_path / "again.npz") as again:
        assert "aux/validator/aux.minus-flux1" in again.files and not any(k.endswith("/shipped") for k in again.files
                                                                        if k.startswith("aux"))


def test_the_trainer_trains_an_aux_head_and_records_its_classes(tmp_path):
    pools = make_pools(tmp_path)
    res = subprocess.run([sys.executable, str(REPO / "base_miner" / "NPR" / "train_detector.py"),
                          "--data", str(pools["crops"]), str(pools["aligned"]), "--layers", "1", "1", "--width", "8",
                          "--epochs", "1", "--batch_size", "8", "--workers", "0", "--device", "cpu", "--progress", "false",
                          "--aux_weight", "0.5", "--checkpoints_dir", str(tmp_path / "ck"), "--name", "t"],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    lm = load_model(tmp_path / "ck" / "t" / "model_epoch_best.pth")
    assert lm.meta["train_options"]["aux_classes"] == TINY_POOL_CLASSES
    assert lm.meta["train_options"]["aux_weight"] == 0.5
    hist = json.loads((tmp_path / "ck" / "t" / "history.json").read_text())
    assert all(r["train_aux_loss"] > 0 for r in hist)  # the head's loss apart from the detector's
    assert lm.model.config["num_classes"] == 1 + len(TINY_POOL_CLASSES)


def test_a_head_is_read_only_where_the_file_names_its_classes_and_ensembles_leave_it_behind(tmp_path):
    from bitmind.checkpoint import model_meta, read_checkpoint, save_checkpoint
    from bitmind.cli.ensemble import build_ensemble_checkpoint
    from bitmind.models.npr import has_aux_outputs

    torch.manual_seed(0)
    model = build_model("npr", **TINY, num_classes=4).eval()
    meta = model_meta(model, "npr")
    assert not has_aux_outputs(meta)  # more outputs, no class names: not read as a head
    assert has_aux_outputs({**meta, "train_options": {"aux_classes": ["real", "a", "b"]}})
    assert not has_aux_outputs({**meta, "config": {**meta["config"], "num_classes": 1},
                                "train_options": {"aux_classes": ["real", "a", "b"]}})  # shipped: names, no head
    save_checkpoint(model, tmp_path / "aux.pth", {**meta, "train_options": {"aux_classes": ["real", "a", "b"]}})
    plain = build_model("npr", **TINY).eval()
    save_checkpoint(plain, tmp_path / "plain.pth", model_meta(plain, "npr"))
    build_ensemble_checkpoint([tmp_path / "aux.pth", tmp_path / "plain.pth"], tmp_path / "ens.pth")
    state, ens_meta = read_checkpoint(tmp_path / "ens.pth")
    assert [m["config"]["num_classes"] for m in ens_meta["config"]["members"]] == [1, 1]
    ens = load_model(tmp_path / "ens.pth").model
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        want = (forward_logits(model, x) + forward_logits(plain, x)) / 2
        assert torch.allclose(forward_logits(ens, x), want, atol=1e-5)


def test_aux_attribution_leaves_unscored_pictures_out():
    from conftest import load_script

    bench = load_script("benchmarks/aux_attribution.py")
    probs = np.array([[0.1, 0.9], [np.nan, np.nan], [0.8, 0.2]], dtype=np.float16)
    got = bench.attribution(probs, ["real", "sdxl"], np.array([0, 1, 2]))
    assert got["n"] == 2 and got["unscored"] == 1
    assert got["argmax"] == {"real": 0.5, "sdxl": 0.5} and got["p_real"] == pytest.approx(0.45, abs=1e-3)


def test_aux_attribution_scores_the_head_as_a_detector_of_the_unseen_family():
    """The head's "not real" log-odds rank pictures by P(real), lowest first, and both it and
    the detector output get the held-out AUC of ``score_fold``: the unseen family's pictures
    against the real test photos, the held-out source kept out of the negatives."""
    from conftest import load_script

    bench = load_script("benchmarks/aux_attribution.py")
    classes = ["real", "sdxl", "flux1"]
    p_real = np.array([0.5, 0.8, 0.7, 0.2, 0.75, 0.1, np.nan])
    probs = np.stack([p_real, (1 - p_real) / 2, (1 - p_real) / 2], axis=1).astype(np.float16)
    odds = bench.head_not_real(probs, classes)
    assert np.array_equal(np.argsort(odds[:6]), np.argsort(-p_real[:6])) and np.isnan(odds[6])
    assert odds[3] == pytest.approx(np.log(0.8 / 0.2), abs=1e-2)
    sources = np.array(["real/a", "real/a", "real/a", "fake/flux1-dev", "fake/flux1-dev", "fake/sdxl", "fake/flux1-dev"])
    splits = np.array(["val", "test", "test", "train", "test", "test", "test"])
    labels = np.array([0, 0, 0, 1, 1, 1, 1])
    head = bench.as_detector(odds, sources, splits, labels, ["fake/flux1-dev"], ["fake/flux1-dev"])
    # held out: flux1 rows 3, 4 (row 6 unscored) against real test rows 1, 2: P(real) 0.2 is below both, 0.75
    # below 0.8 only; the threshold is the real val row's odds (0), which only row 3 passes
    assert head["auc"] == pytest.approx(0.75) and head["at_real90"] == pytest.approx(0.5)
    detector = bench.as_detector(np.array([0.0, -1.0, -2.0, 3.0, 4.0, 9.0, np.nan]), sources, splits, labels,
                                 ["fake/flux1-dev"], ["fake/flux1-dev"])
    assert detector["auc"] == 1.0 and detector["at_real90"] == 1.0


def test_aux_attribution_holds_out_the_folds_family_only(tmp_path):
    """A fold variant that also excludes another source (a control's own exclusion) still
    reads out and scores only its own family as held out, as ``analyse`` does; a picture one
    score could not read is left out of both; a mean skips folds without held-out fakes."""
    from conftest import load_script

    bench = load_script("benchmarks/aux_attribution.py")
    assert bench.mean_of([0.5, None, 0.7]) == pytest.approx(0.6) and bench.mean_of([None]) is None
    classes = ["real", "sdxl", "flux1"]
    sources = np.array(["real/a"] * 4 + ["fake/flux1-dev"] * 3 + ["fake/sdxl"] * 2)
    splits = np.array(["val", "val", "test", "test", "test", "test", "test", "test", "test"])
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1], dtype=np.int8)
    p_real = np.array([0.9, 0.8, 0.85, 0.7, 0.2, 0.3, 0.95, 0.4, 0.6])
    head = np.stack([p_real, 1 - p_real, np.zeros_like(p_real)], axis=1).astype(np.float16)
    detector = np.array([-2.0, -1.0, -1.5, -0.5, 1.0, 2.0, np.nan, 0.5, 0.0], dtype=np.float32)
    np.savez(tmp_path / "s.npz", **{"validator/source": sources, "validator/split": splits, "validator/label": labels,
                                    "validator/aux.minus-flux1": detector, "aux/validator/aux.minus-flux1": head,
                                    "aux/validator/aux": head, "aux_classes/aux": np.array(classes)})
    spec = {"variants": {"aux": {}, "aux.minus-flux1": {"exclude_sources": ["fake/flux1-dev", "fake/sdxl"]}}}
    with np.load(tmp_path / "s.npz") as z:
        res = bench.analyse(z, spec, "aux", "validator")
    fold = res["folds"]["flux1"]
    assert fold["held_out"]["n"] == 3  # the three FLUX.1 pictures, not the two SDXL ones it also excluded
    # the detector could not score the third FLUX.1 picture (which the head takes for real): both
    # AUCs on the other two against the real test photos, so the head's is 1.0, not 4/6
    assert fold["as_detector"]["detector"]["auc"] == 1.0 and fold["as_detector"]["head_not_real"]["auc"] == 1.0
    assert fold["as_detector"]["head_not_real"]["at_real90"] == pytest.approx(1.0)
    assert res["as_detector_mean"]["detector"]["auc"] == 1.0
    assert "| mean | 1.000 | 1.000 |" in bench.markdown(res)


def test_fine_tuning_from_a_file_with_an_aux_head_starts_from_its_detector(tmp_path):
    from bitmind.checkpoint import model_meta, save_checkpoint
    from bitmind.training.trainer import build_training_model

    torch.manual_seed(0)
    model = build_model("npr", **TINY, num_classes=4).eval()
    save_checkpoint(model, tmp_path / "aux.pth", model_meta(model, "npr"))
    tuned = build_training_model(TrainConfig(init_from=str(tmp_path / "aux.pth"), device="cpu", **TINY),
                                 torch.device("cpu")).eval()
    assert tuned.config["num_classes"] == 1
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(forward_logits(tuned, x), forward_logits(model, x), atol=1e-6)


def test_logo_swa_aux_spec_is_the_weight_averaging_run_plus_an_aux_arm():
    """logo_swa_aux_s1.json is logo_swa_s1.json (itself the pair of the committed
    generalisation_fixed_s1 run, test_generalisation.py) with a third arm on the same stream:
    the shipped recipe plus the auxiliary head, folds and all; only the time guard grows."""
    from bitmind.training.logo import logo_sweep_spec

    sweeps = REPO / "base_miner" / "NPR" / "sweeps"
    both = json.loads((sweeps / "logo_swa_aux_s1.json").read_text())
    swa = json.loads((sweeps / "logo_swa_s1.json").read_text())
    assert {k: v for k, v in both.items() if k not in ("_doc", "recipes", "time_budget_s")} == \
        {k: v for k, v in swa.items() if k not in ("_doc", "recipes", "time_budget_s")}
    assert both["time_budget_s"] >= swa["time_budget_s"]
    assert {k: v for k, v in both["recipes"].items() if k != "patch96aux"} == swa["recipes"]
    assert both["recipes"]["patch96aux"] == {**swa["recipes"]["patch96nopool"], "aux_weight": 0.3}
    sources = ["fake/sdxl", "fake/flux1-dev", "fake/flux1-schnell", "fake/sd35", "fake/midjourney-v3", "fake/sd1x",
               "fake/sd15", "fake/sd2", "fake/stylegan-family", "fake/biggan-progan", "fake/pix2pixhd-spade", "fake/vqgan"]
    variants = logo_sweep_spec(both, sources)["variants"]
    assert len(variants) == 21 and sum("aux_weight" in v for v in variants.values()) == 7


def test_a_model_with_an_aux_head_starts_from_the_same_weights_as_one_without():
    """A LOGO pair on one stream must differ by the head alone: building the head may not
    change the draw of any other initial weight (the sweep seeds each variant alike)."""
    from bitmind.training.trainer import build_training_model

    cfg = TrainConfig(device="cpu", seed=3, **TINY)
    torch.manual_seed(cfg.seed)
    plain = build_training_model(cfg, torch.device("cpu"))
    torch.manual_seed(cfg.seed)
    aux = build_training_model(cfg, torch.device("cpu"), aux_classes=5)
    assert aux.config["num_classes"] == 6 and aux.fc1.weight.shape[0] == 6
    ps, pa = plain.state_dict(), aux.state_dict()
    for name, value in ps.items():
        other = pa[name][:1] if name.startswith("fc1.") else pa[name]
        assert torch.equal(value, other), name
    assert pa["fc1.weight"][1:].abs().sum() > 0
