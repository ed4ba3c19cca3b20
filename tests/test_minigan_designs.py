"""benchmarks/minigan_designs.py: paired comparisons of small-GAN arms gathered per held-out source."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import load_script

SPEC = {"variants": {"m": {}, "m.minus-gans": {"exclude_sources": ["fake/stylegan", "fake/vqgan"]},
                     "m.minus-sd1-2": {"exclude_sources": ["fake/sd15"]}}}
N = 60


def _scores(path, stylegan=0.0, sd15=0.0):
    """Scores of a run whose GAN fold reads StyleGAN ``stylegan`` logits better and whose SD
    fold reads SD 1.5 ``sd15`` better (negative: a cost), on fixed pictures."""
    src = np.array(["fake/stylegan"] * N + ["fake/vqgan"] * N + ["fake/sd15"] * N + ["real/imagenet"] * (2 * N))
    label = np.r_[np.ones(3 * N), np.zeros(2 * N)].astype(np.int64)
    split = np.array(["val", "test"] * (5 * N // 2))
    base = np.where(label == 1, 0.3, -0.3) + np.random.default_rng(1).normal(0, 1, len(src))
    arrays = {"validator/source": src, "validator/split": split, "validator/label": label, "validator/m": base}
    gans, sd = base.copy(), base.copy()
    gans[src == "fake/stylegan"] += stylegan
    sd[src == "fake/sd15"] += sd15
    arrays["validator/m.minus-gans"], arrays["validator/m.minus-sd1-2"] = gans, sd
    np.savez(path, **{k: (v.astype(np.float32) if v.dtype.kind == "f" else v) for k, v in arrays.items()})
    return str(path)


def _arm(tmp_path, name, ref, **shift):
    paired = load_script("benchmarks/logo_paired.py")
    b = _scores(tmp_path / f"{name}.npz", **shift)
    args = ["--a", ref, "--b", b, "--spec", str(tmp_path / "spec.json"), "--arm", "m", "--n_boot", "100", "--regimes", "validator"]
    paired.main([*args, "--out", str(tmp_path / f"p_{name}.json")])
    paired.main([*args, "--by_source", "--out", str(tmp_path / f"p_{name}_by_source.json")])
    return str(tmp_path / f"p_{name}")


def test_arms_are_gathered_per_source_with_the_cost_column(tmp_path):
    (tmp_path / "spec.json").write_text(json.dumps(SPEC))
    ref = _scores(tmp_path / "ref.npz")
    good = _arm(tmp_path, "good", ref, stylegan=1.5, sd15=-0.8)
    none = _arm(tmp_path, "none", ref)
    mod = load_script("benchmarks/minigan_designs.py")
    res = mod.main(["--arm", f"good={good}", f"same={none}", "--cost_sources", "1", "--out", str(tmp_path / "d.json"),
                    "--figure", str(tmp_path / "d.png")])
    assert res["gan_sources"] == ["gans:stylegan", "gans:vqgan"] and res["cost_sources"] == ["sd1-2:sd15"]
    g, s = res["arms"]["good"], res["arms"]["same"]
    assert g["sources"]["gans:stylegan"]["ci95"][0] > 0.1 and g["sources"]["sd1-2:sd15"]["diff"] < -0.05
    assert abs(g["sources"]["gans:vqgan"]["diff"]) < 0.02 and s["gan_fold"]["validator"]["diff"] == 0.0
    assert 0 < g["gan_fold"]["validator"]["diff"] < g["sources"]["gans:stylegan"]["diff"]
    assert (tmp_path / "d.png").stat().st_size > 0 and "| good |" in (tmp_path / "d.md").read_text()


def test_arms_against_different_references_or_without_per_source_files_are_refused(tmp_path):
    (tmp_path / "spec.json").write_text(json.dumps(SPEC))
    one = _arm(tmp_path, "one", _scores(tmp_path / "ref.npz"))
    other = _arm(tmp_path, "other", _scores(tmp_path / "ref2.npz", sd15=0.1))
    mod = load_script("benchmarks/minigan_designs.py")
    with pytest.raises(SystemExit):
        mod.main(["--arm", f"a={one}", f"b={other}", "--out", str(tmp_path / "x.json")])
    mixed = tmp_path / "p_mixed"  # one arm whose two files were compared against different references
    mixed.with_suffix(".json").write_text((tmp_path / "p_one.json").read_text())
    (tmp_path / "p_mixed_by_source.json").write_text((tmp_path / "p_other_by_source.json").read_text())
    with pytest.raises(SystemExit):
        mod.main(["--arm", f"m={mixed}", "--out", str(tmp_path / "w.json")])
    (tmp_path / "p_one_by_source.json").write_text((tmp_path / "p_one.json").read_text())
    with pytest.raises(SystemExit):
        mod.main(["--arm", f"a={one}", "--out", str(tmp_path / "y.json")])
    with pytest.raises(SystemExit):
        mod.main(["--arm", "no-equals-sign", "--out", str(tmp_path / "z.json")])
