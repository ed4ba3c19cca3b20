"""bitmind.residual_features and benchmarks/residual_logo.py: fixed residual statistics,
a linear model over them by LOGO, and its stack on a run's NPR folds."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from bitmind.residual_features import COOC_BINS, FEATURE_DIM, SPECTRUM_BINS, SYMBOLS, feature_names, residual_features
from conftest import load_script

ZERO_TRIPLET = (SYMBOLS // 2 * SYMBOLS + SYMBOLS // 2) * SYMBOLS + SYMBOLS // 2


def _smooth(rng, size: int) -> np.ndarray:
    """A camera-like grey picture: smooth structure plus fine noise (no up-sampling trace)."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    a, b = rng.uniform(2, 8, 2)
    base = 120 + 60 * np.sin(a * xx + rng.uniform(0, 6)) * np.cos(b * yy)
    return np.clip(base + rng.normal(0, 6, (size, size)), 0, 255)


def _upsampled(rng, size: int) -> np.ndarray:
    """The same kind of picture made at half size and doubled by pixel repetition (a
    generator's nearest-neighbour up-sampling): every second residual is exactly zero."""
    half = _smooth(rng, size // 2)
    return np.repeat(np.repeat(half, 2, axis=0), 2, axis=1)


def _batch(pictures) -> torch.Tensor:
    return torch.stack([torch.from_numpy(np.repeat(p[None], 3, 0) / 255.0).float() for p in pictures])


def test_features_are_named_and_a_flat_picture_has_only_zero_residuals():
    assert len(feature_names()) == FEATURE_DIM
    f = residual_features(torch.full((2, 3, 40, 40), 0.5))
    assert f.shape == (2, FEATURE_DIM) and torch.isfinite(f).all()
    hist = f[:, : FEATURE_DIM - SPECTRUM_BINS].reshape(2, -1, COOC_BINS)
    assert torch.allclose(hist[:, :, ZERO_TRIPLET], torch.ones(2, hist.shape[1]))  # all mass on (0, 0, 0)
    assert float(hist.sum()) == pytest.approx(2 * hist.shape[1])  # nothing anywhere else


def test_a_linear_model_on_them_reads_an_up_sampling_trace_it_was_never_shown_on_new_pictures():
    rng = np.random.default_rng(0)
    pictures = [_smooth(rng, 64) for _ in range(60)] + [_upsampled(rng, 64) for _ in range(60)]
    x = residual_features(_batch(pictures)).numpy()
    y = np.r_[np.zeros(60), np.ones(60)].astype(int)
    mod = load_script("benchmarks/residual_logo.py")
    train = np.r_[np.arange(0, 40), np.arange(60, 100)]
    test = np.r_[np.arange(40, 60), np.arange(100, 120)]
    lin = mod.fit_linear(x[train], y[train], np.ones(len(train)), 0.05)
    z = mod.linear_logits(x[test], lin)
    assert ((z > 0) == (y[test] == 1)).mean() >= 0.95


def test_source_weights_give_each_class_and_each_source_within_it_the_same_weight():
    mod = load_script("benchmarks/residual_logo.py")
    src = np.array(["real/a"] * 30 + ["real/b"] * 10 + ["fake/c"] * 5)
    lab = np.r_[np.zeros(40), np.ones(5)].astype(int)
    w = mod.source_weights(src, lab)
    assert w[src == "real/a"].sum() == pytest.approx(w[src == "real/b"].sum())
    assert w[lab == 0].sum() == pytest.approx(w[lab == 1].sum()) and w.sum() == pytest.approx(len(w))


def _pool(root, rng, per_source: int = 40):
    """root/{real,fake}/SOURCE/*.png: two camera-like real sources, two fake sources that
    share one up-sampling trace (so a model trained on one may catch the other)."""
    for cls, src, make in (("real", "cam-a", _smooth), ("real", "cam-b", _smooth),
                           ("fake", "gen-a", _upsampled), ("fake", "gen-b", _upsampled)):
        (root / cls / src).mkdir(parents=True)
        for k in range(per_source):
            Image.fromarray(np.repeat(make(rng, 48)[..., None], 3, 2).astype(np.uint8)).save(root / cls / src / f"{src}-{k}.png")
    return root


def test_extract_then_logo_writes_residual_and_stack_arms_a_run_analyses(tmp_path):
    mod = load_script("benchmarks/residual_logo.py")
    root = _pool(tmp_path / "pool", np.random.default_rng(1))
    feats = tmp_path / "features.npz"
    mod.main(["extract", "--challenge_data", str(root), "--features", str(feats), "--workers", "0"])
    f = np.load(feats)
    n = len(f["validator/source"])
    assert f["validator/features"].shape == (n, FEATURE_DIM) and n == 160 and not np.isnan(f["validator/features"]).any()
    assert {"train", "val", "test"} <= set(f["validator/split"])
    # a LOGO run's scores file on the same pictures: its NPR folds answer at random
    rng = np.random.default_rng(2)
    scores = {k: f[k] for k in ("validator/source", "validator/split", "validator/label")}
    spec = {"base": {}, "variants": {"m": {}, "m.minus-gen-b": {"exclude_sources": ["fake/gen-b"]}},
            "logo": {"folds": ["gen-b"], "recipes": ["m"], "controls": []}}
    for v in spec["variants"]:
        scores[f"validator/{v}"] = rng.normal(0, 1, n).astype(np.float32)
    np.savez(tmp_path / "scores.npz", **scores)
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    out, out_spec = tmp_path / "res.npz", tmp_path / "res_spec.json"
    mod.main(["logo", "--features", str(feats), "--scores", str(tmp_path / "scores.npz"), "--spec", str(tmp_path / "spec.json"),
              "--recipe", "m", "--out_scores", str(out), "--out_spec", str(out_spec)])
    res, new_spec = np.load(out), json.loads(out_spec.read_text())
    assert set(new_spec["logo"]["recipes"]) == {"m", "residual", "stack"}
    assert {"residual.minus-gen-b", "stack.minus-gen-b", "m.minus-gen-b"} <= set(new_spec["variants"])
    assert new_spec["variants"]["residual.minus-gen-b"]["exclude_sources"] == ["fake/gen-b"]
    lab, src = res["validator/label"], res["validator/source"]
    held = src == "fake/gen-b"
    real = lab == 0
    z = res["validator/residual.minus-gen-b"]
    # trained without gen-b, the residual model still ranks gen-b (same trace) above the photos
    assert (z[held][:, None] > z[real][None, :]).mean() > 0.95
    zs = res["validator/stack.minus-gen-b"]
    assert (zs[held][:, None] > zs[real][None, :]).mean() > 0.9  # the stack leans on the residual, not the random NPR
    fold = new_spec["residual_logo"]["folds"]["m.minus-gen-b"]
    assert abs(fold["stack_weight_residual"]) > abs(fold["stack_weight_npr"])
    assert np.array_equal(res["validator/m.minus-gen-b"], scores["validator/m.minus-gen-b"])  # copied as is


def test_features_of_other_pictures_are_refused():
    mod = load_script("benchmarks/residual_logo.py")
    feat = {"validator/source": np.array(["real/a", "fake/b"]), "validator/split": np.array(["train", "test"]),
            "validator/features": np.zeros((2, 3), np.float32)}
    scores = {"validator/source": np.array(["fake/b", "real/a", "real/c"]), "validator/split": np.array(["train", "test", "val"])}
    with pytest.raises(SystemExit, match="not extracted from the pictures"):
        mod.align(feat, scores, "validator")
    scores["validator/source"] = np.array(["real/a", "fake/b", "fake/aligned"])
    scores["validator/split"] = np.array(["train", "test", "test"])
    out = mod.align(feat, scores, "validator")
    assert out.shape == (3, 3) and np.isnan(out[2]).all() and not np.isnan(out[:2]).any()


def test_training_only_pictures_join_each_fold_except_the_sources_it_holds_out(tmp_path):
    """``extract --train_data`` + ``logo --use_train_data``: the extra root's train split joins
    every fold's training set (never scored), and a fold drops those of its held-out sources."""
    mod = load_script("benchmarks/residual_logo.py")
    rng = np.random.default_rng(3)
    root = _pool(tmp_path / "pool", rng, per_source=24)
    extra = tmp_path / "extra"
    for k in range(30):  # more gen-b pictures, in a training-only root
        (extra / "fake" / "gen-b").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.repeat(_upsampled(rng, 48)[..., None], 3, 2).astype(np.uint8)).save(extra / "fake" / "gen-b" / f"more-{k}.png")
    pools, more = tmp_path / "pools.npz", tmp_path / "more.npz"
    mod.main(["extract", "--challenge_data", str(root), "--features", str(pools), "--workers", "0"])
    mod.main(["extract", "--train_data", str(extra), "--features", str(more), "--workers", "0"])
    m = np.load(more)
    assert set(m["train_only/split"]) == {"train"} and 0 < len(m["train_only/source"]) < 30
    f = np.load(pools)
    n = len(f["validator/source"])
    spec = {"base": {}, "variants": {"m": {}, "m.minus-gen-b": {"exclude_sources": ["fake/gen-b"]}},
            "logo": {"folds": ["gen-b"], "recipes": ["m"], "controls": []}}
    scores = {k: f[k] for k in ("validator/source", "validator/split", "validator/label")}
    for v in spec["variants"]:
        scores[f"validator/{v}"] = np.random.default_rng(4).normal(0, 1, n).astype(np.float32)
    np.savez(tmp_path / "scores.npz", **scores)
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    common = ["logo", "--scores", str(tmp_path / "scores.npz"), "--spec", str(tmp_path / "spec.json"), "--recipe", "m"]
    mod.main([*common, "--features", str(pools), "--out_scores", str(tmp_path / "a.npz"), "--out_spec", str(tmp_path / "a.json")])
    mod.main([*common, "--features", str(pools), str(more), "--use_train_data", "--out_scores", str(tmp_path / "b.npz"),
              "--out_spec", str(tmp_path / "b.json")])
    a, b = np.load(tmp_path / "a.npz"), np.load(tmp_path / "b.npz")
    assert json.loads((tmp_path / "b.json").read_text())["residual_logo"]["train_only_pictures"] == len(m["train_only/source"])
    mod.main([*common, "--features", str(pools), str(more), str(more), "--use_train_data", "--out_scores", str(tmp_path / "d.npz"),
              "--out_spec", str(tmp_path / "d.json")])  # two training-only files add up
    assert json.loads((tmp_path / "d.json").read_text())["residual_logo"]["train_only_pictures"] == 2 * len(m["train_only/source"])
    assert np.array_equal(a["validator/residual.minus-gen-b"], b["validator/residual.minus-gen-b"])  # held out there too
    assert not np.allclose(a["validator/residual"], b["validator/residual"])  # the everything model trained on them
    assert np.array_equal(a["validator/source"], b["validator/source"])  # nothing more scored
    with pytest.raises(SystemExit, match="no features file holds training-only"):
        mod.main([*common, "--features", str(pools), "--use_train_data", "--out_scores", str(tmp_path / "c.npz"),
                  "--out_spec", str(tmp_path / "c.json")])
