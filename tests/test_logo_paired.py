"""benchmarks/logo_paired.py: a paired bootstrap of two LOGO runs' held-out metrics."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import load_script

SPEC = {"variants": {"m": {}, "m.minus-sdxl": {"exclude_sources": ["fake/sdxl"]},
                     "m.minus-flux1": {"exclude_sources": ["fake/flux1-dev"]},
                     "m.minus-real-coco": {"exclude_sources": ["real/coco"]}}}


def _scores(path, shift: float = 0.0, seed: int = 0, n: int = 60):
    """A tiny scores file: two fake and two real sources in val/test splits; each fold
    model's held-out fakes get ``shift`` more logit (a better run)."""
    rng = np.random.default_rng(seed)
    src = np.array(["fake/sdxl"] * n + ["fake/flux1-dev"] * n + ["real/imagenet"] * n + ["real/coco"] * n)
    label = np.r_[np.ones(2 * n), np.zeros(2 * n)].astype(np.int64)
    split = np.array(["val", "test"] * (2 * n))
    arrays = {"validator/source": src, "validator/split": split, "validator/label": label}
    base = np.where(label == 1, 0.6, -0.6) + np.random.default_rng(1).normal(0, 1, len(src))
    for name, v in SPEC["variants"].items():
        z = base + rng.normal(0, 0.05, len(src))
        held = np.isin(src, v.get("exclude_sources", []))
        z[held & (label == 1)] += shift - 0.5  # unseen fakes look less fake, less so in the better run
        arrays[f"validator/{name}"] = z.astype(np.float32)
    np.savez(path, **arrays)
    return path


def test_a_better_run_is_found_better_and_an_equal_one_is_not(tmp_path):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(SPEC))
    a, b = _scores(tmp_path / "a.npz"), _scores(tmp_path / "b.npz", shift=1.0, seed=1)
    mod = load_script("benchmarks/logo_paired.py")
    res = mod.main(["--a", str(a), "--b", str(b), "--spec", str(spec), "--arm", "m", "--n_boot", "200",
                    "--regimes", "validator", "--out", str(tmp_path / "cmp.json")])
    r = res["regimes"]["validator"]
    assert set(r["folds"]) == {"sdxl", "flux1"}  # generator folds only; the camera fold with --real_folds
    m = r["mean"]["auc"]
    assert m["diff"] > 0.1 and m["ci95"][0] > 0 and m["p_b_not_better"] < 0.05
    assert m["diff"] == pytest.approx(m["b"] - m["a"])
    assert (tmp_path / "cmp.md").read_text().count("| validator |") == 3
    same = mod.main(["--a", str(a), "--b", str(_scores(tmp_path / "c.npz", seed=2)), "--spec", str(spec), "--arm", "m",
                     "--n_boot", "200", "--regimes", "validator", "--out", str(tmp_path / "same.json")])["regimes"]["validator"]
    lo, hi = same["mean"]["auc"]["ci95"]
    assert lo < 0 < hi and abs(same["mean"]["auc"]["diff"]) < 0.05
    cams = mod.main(["--a", str(a), "--b", str(b), "--spec", str(spec), "--arm", "m", "--n_boot", "50", "--real_folds",
                     "--regimes", "validator", "--out", str(tmp_path / "cams.json")])["regimes"]["validator"]
    assert set(cams["folds"]) == {"real-coco"}


def test_different_pictures_are_refused(tmp_path):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(SPEC))
    a, b = _scores(tmp_path / "a.npz"), _scores(tmp_path / "b.npz", n=50)
    with pytest.raises(ValueError, match="different pictures"):
        load_script("benchmarks/logo_paired.py").main(["--a", str(a), "--b", str(b), "--spec", str(spec), "--arm", "m",
                                                       "--n_boot", "5", "--out", str(tmp_path / "x.json")])


def test_two_arms_of_one_scores_file_are_compared_with_arm_b(tmp_path):
    """``--arm_b``: run B is another arm of the same file (a stack written beside the NPR
    it was stacked on), so A's arm ``m`` is compared with B's arm ``n`` picture for picture."""
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(SPEC))
    worse, better = np.load(_scores(tmp_path / "a.npz")), np.load(_scores(tmp_path / "b.npz", shift=1.0, seed=1))
    both = {k: worse[k] for k in worse.files}
    both.update({k.replace("validator/m", "validator/n"): better[k] for k in better.files if k.startswith("validator/m")})
    np.savez(tmp_path / "both.npz", **both)
    mod = load_script("benchmarks/logo_paired.py")
    args = ["--a", str(tmp_path / "both.npz"), "--b", str(tmp_path / "both.npz"), "--spec", str(spec), "--arm", "m",
            "--n_boot", "200", "--regimes", "validator"]
    res = mod.main([*args, "--arm_b", "n", "--out", str(tmp_path / "mn.json")])
    m = res["regimes"]["validator"]["mean"]["auc"]
    assert res["arm_b"] == "n" and m["diff"] > 0.1 and m["ci95"][0] > 0
    assert "arms `m` (A) and `n` (B)" in (tmp_path / "mn.md").read_text()
    self_cmp = mod.main([*args, "--out", str(tmp_path / "mm.json")])["regimes"]["validator"]["mean"]["auc"]
    assert self_cmp["diff"] == 0.0


def test_by_source_splits_a_fold_and_finds_the_one_source_that_moved(tmp_path):
    """A fold holding out two GAN sources, where run B reads only one of them better: the
    fold's row mixes the two; ``--by_source`` gives each its own row, and only the source
    that moved is found better."""
    spec = {"variants": {"m": {}, "m.minus-gans": {"exclude_sources": ["fake/stylegan", "fake/vqgan"]}}}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    n = 80
    src = np.array(["fake/stylegan"] * n + ["fake/vqgan"] * n + ["fake/sdxl"] * n + ["real/imagenet"] * (2 * n))
    label = np.r_[np.ones(3 * n), np.zeros(2 * n)].astype(np.int64)
    split = np.array(["val", "test"] * (5 * n // 2))
    base = np.where(label == 1, 0.3, -0.3) + np.random.default_rng(1).normal(0, 1, len(src))

    def write(path, stylegan_shift):
        z = base + np.random.default_rng(len(str(path))).normal(0, 0.02, len(src))
        z[src == "fake/stylegan"] += stylegan_shift
        arrays = {"validator/source": src, "validator/split": split, "validator/label": label,
                  "validator/m": base.astype(np.float32), "validator/m.minus-gans": z.astype(np.float32)}
        np.savez(path, **arrays)
        return str(path)

    a, b = write(tmp_path / "a.npz", 0.0), write(tmp_path / "bb.npz", 1.5)
    mod = load_script("benchmarks/logo_paired.py")
    args = ["--a", a, "--b", b, "--spec", str(tmp_path / "spec.json"), "--arm", "m", "--n_boot", "200", "--regimes", "validator"]
    rows = mod.main([*args, "--by_source", "--out", str(tmp_path / "src.json")])["regimes"]["validator"]["folds"]
    assert set(rows) == {"gans:stylegan", "gans:vqgan"}
    assert rows["gans:stylegan"]["auc"]["ci95"][0] > 0.1
    lo, hi = rows["gans:vqgan"]["auc"]["ci95"]
    assert lo < 0 < hi
    fold = mod.main([*args, "--out", str(tmp_path / "fold.json")])["regimes"]["validator"]["folds"]["gans"]["auc"]
    assert rows["gans:vqgan"]["auc"]["diff"] < fold["diff"] < rows["gans:stylegan"]["auc"]["diff"]
    assert "per held-out source" in (tmp_path / "src.md").read_text()


def test_a_sketch_on_fewer_folds_is_compared_on_its_own_folds_with_its_spec(tmp_path):
    """Run B (arm ``n``) ran only the SDXL fold; its spec names no fold of A's arm ``m``: the
    folds come from B's arm, and A's six-fold file is read on those alone."""
    full = np.load(_scores(tmp_path / "a.npz"))
    better = np.load(_scores(tmp_path / "b.npz", shift=1.0, seed=1))
    sketch = {k: better[k] for k in ("validator/source", "validator/split", "validator/label")}
    sketch.update({k.replace("validator/m", "validator/n"): better[k] for k in ("validator/m", "validator/m.minus-sdxl")})
    np.savez(tmp_path / "sketch.npz", **sketch)
    spec_b = tmp_path / "spec_b.json"
    spec_b.write_text(json.dumps({"variants": {"n": {}, "n.minus-sdxl": {"exclude_sources": ["fake/sdxl"]}}}))
    mod = load_script("benchmarks/logo_paired.py")
    args = ["--a", str(tmp_path / "a.npz"), "--b", str(tmp_path / "sketch.npz"), "--spec", str(spec_b), "--arm", "m",
            "--n_boot", "200", "--regimes", "validator"]
    res = mod.main([*args, "--arm_b", "n", "--out", str(tmp_path / "s.json")])["regimes"]["validator"]
    assert set(res["folds"]) == {"sdxl"} and res["mean"]["auc"]["diff"] > 0.1
    assert full["validator/m.minus-sdxl"].shape == sketch["validator/n.minus-sdxl"].shape
    with pytest.raises(SystemExit):  # without --arm_b there is no fold of m in B's spec
        mod.main([*args, "--out", str(tmp_path / "t.json")])
