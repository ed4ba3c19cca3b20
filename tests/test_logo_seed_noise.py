"""benchmarks/logo_seed_noise.py and logo_paired.py --noise: how far reseeds of one recipe
land apart, and that band printed beside a paired difference."""
from __future__ import annotations

import json

import numpy as np
import pytest

from bitmind.training.logo_metrics import point_diffs, seed_bands
from conftest import load_script

SPEC = {"variants": {"m": {}, "m.minus-sdxl": {"exclude_sources": ["fake/sdxl"]},
                     "m.minus-flux1": {"exclude_sources": ["fake/flux1-dev"]}}}


def _scores(path, shifts: dict[str, float], n: int = 80, arm: str = "m"):
    """A scores file whose fold models give their held-out fakes ``shifts[fold]`` more logit
    (the same pictures and base logits in every file, so differences come from the shifts)."""
    src = np.array(["fake/sdxl"] * n + ["fake/flux1-dev"] * n + ["real/imagenet"] * (2 * n))
    label = np.r_[np.ones(2 * n), np.zeros(2 * n)].astype(np.int64)
    split = np.array(["val", "test"] * (2 * n))
    base = np.where(label == 1, 0.5, -0.5) + np.random.default_rng(1).normal(0, 1, len(src))
    arrays = {"validator/source": src, "validator/split": split, "validator/label": label}
    for name, v in SPEC["variants"].items():
        z = base.copy()
        held = np.isin(src, v.get("exclude_sources", [])) & (label == 1)
        z[held] += -0.8 + shifts.get(name.partition(".minus-")[2], 0.0)
        arrays[f"validator/{name.replace('m', arm, 1)}"] = z.astype(np.float32)
    np.savez(path, **arrays)
    return path


def test_point_diffs_is_b_minus_a_per_fold_and_refuses_other_pictures(tmp_path):
    a = np.load(_scores(tmp_path / "a.npz", {}))
    b = np.load(_scores(tmp_path / "b.npz", {"sdxl": 1.0}))
    folds = {"sdxl": ["fake/sdxl"], "flux1": ["fake/flux1-dev"]}
    d = point_diffs(a, b, "validator", folds, "m")
    assert d["folds"]["sdxl"]["auc"]["diff"] > 0.1 and d["folds"]["flux1"]["auc"]["diff"] == 0.0
    assert d["mean"]["auc"]["diff"] == pytest.approx(d["folds"]["sdxl"]["auc"]["diff"] / 2)
    assert point_diffs(a, b, "crops", folds, "m") is None  # a regime neither file holds
    other = dict(np.load(tmp_path / "b.npz"))
    other["validator/label"] = other["validator/label"][::-1].copy()
    np.savez(tmp_path / "c.npz", **other)
    with pytest.raises(ValueError, match="different pictures"):
        point_diffs(a, np.load(tmp_path / "c.npz"), "validator", folds, "m")


def test_seed_noise_summary_is_the_rms_and_largest_size_of_the_reseed_differences(tmp_path):
    (tmp_path / "run_spec.json").write_text(json.dumps(SPEC))
    _scores(tmp_path / "s1_scores.npz", {})
    _scores(tmp_path / "s0_scores.npz", {"sdxl": 0.3, "flux1": -0.2})
    _scores(tmp_path / "t0_scores.npz", {"sdxl": -0.6})
    mod = load_script("benchmarks/logo_seed_noise.py")
    mod.SEED_PAIRS = [("p", "s1", "m", "s0", "m", "run"), ("q", "s1", "m", "t0", "m", "run")]
    mod.RERUN_PAIRS = [("r", "s1", "m", "s1", "m", "run")]
    res = mod.main(["--results", str(tmp_path), "--out", str(tmp_path / "noise.json")])
    d1 = res["seed"][0]["regimes"]["validator"]["folds"]["sdxl"]["auc"]["diff"]
    d2 = res["seed"][1]["regimes"]["validator"]["folds"]["sdxl"]["auc"]["diff"]
    assert d1 > 0 > d2
    row = res["summary"]["validator"]["sdxl"]["auc"]
    assert row["n"] == 2 and row["rms"] == pytest.approx(np.sqrt((d1 ** 2 + d2 ** 2) / 2))
    assert row["max_abs"] == pytest.approx(max(abs(d1), abs(d2)))
    assert res["rerun"][0]["regimes"]["validator"]["mean"]["auc"]["diff"] == 0.0  # a file against itself
    assert seed_bands(res, "validator")["sdxl"] == pytest.approx(2 * row["rms"])
    assert (tmp_path / "noise.md").read_text().count("| seed |") == 2


def test_seed_noise_names_missing_score_files(tmp_path, capsys):
    mod = load_script("benchmarks/logo_seed_noise.py")
    mod.SEED_PAIRS = [("p", "s1", "m", "gone", "m", "run")]
    mod.RERUN_PAIRS = []
    _scores(tmp_path / "s1_scores.npz", {})
    with pytest.raises(SystemExit) as e:
        mod.main(["--results", str(tmp_path), "--out", str(tmp_path / "n.json")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "gone_scores.npz" in err and "run_spec.json" in err  # neither file exists


def test_logo_paired_marks_a_difference_beyond_the_seed_band(tmp_path, capsys):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(SPEC))
    a = _scores(tmp_path / "a.npz", {})
    b = _scores(tmp_path / "b.npz", {"sdxl": 1.5, "flux1": 0.02})
    noise = tmp_path / "noise.json"
    pair = {"regimes": {"validator": {"folds": {"sdxl": {"auc": {"diff": 0.01}}, "flux1": {"auc": {"diff": 0.01}}}}}}
    noise.write_text(json.dumps({"summary": {"validator": {"sdxl": {"auc": {"rms": 0.01}}, "flux1": {"auc": {"rms": 0.2}}}},
                                 "seed": [pair]}))
    paired = load_script("benchmarks/logo_paired.py")
    res = paired.main(["--a", str(a), "--b", str(b), "--spec", str(spec), "--arm", "m", "--n_boot", "50",
                       "--regimes", "validator", "--noise", str(noise), "--out", str(tmp_path / "cmp.json")])
    assert res["seed_band"]["validator"]["sdxl"] == pytest.approx(0.02)
    rows = {line.split("|")[2].strip(): line for line in (tmp_path / "cmp.md").read_text().splitlines()
            if line.startswith("| validator")}
    assert rows["sdxl"].rstrip().endswith("±0.020 **beyond** |")
    assert "**beyond**" not in rows["flux1"] and "±0.400" in rows["flux1"]
    assert "**beyond**" in rows["**mean**"]
    # without --noise the table is as before: ten columns, no band
    paired.main(["--a", str(a), "--b", str(b), "--spec", str(spec), "--arm", "m", "--n_boot", "50",
                 "--regimes", "validator", "--out", str(tmp_path / "plain.json")])
    assert "seed band" not in (tmp_path / "plain.md").read_text()
    with pytest.raises(SystemExit) as e:
        paired.main(["--a", str(a), "--b", str(b), "--spec", str(spec), "--arm", "m", "--noise", str(tmp_path / "none.json"),
                     "--out", str(tmp_path / "x.json")])
    assert e.value.code == 2 and "--noise" in capsys.readouterr().err


def test_mean_band_is_that_of_the_folds_compared_and_absent_for_camera_folds(tmp_path):
    """The mean row's band comes from each reseed's mean over the folds compared (a mean over
    fewer folds varies more), and camera folds, which no seed pair holds, get none."""
    noise = {"folds": ["flux1", "sdxl"], "summary": {"validator": {"flux1": {"auc": {"rms": 0.02}},
                                                                   "sdxl": {"auc": {"rms": 0.02}},
                                                                   "mean": {"auc": {"rms": 0.001}}}},
             "seed": [{"regimes": {"validator": {"folds": {"flux1": {"auc": {"diff": 0.03}}, "sdxl": {"auc": {"diff": -0.01}}}}}},
                      {"regimes": {"validator": {"folds": {"flux1": {"auc": {"diff": -0.02}}, "sdxl": {"auc": {"diff": 0.0}}}}}}]}
    both = seed_bands(noise, "validator", ["flux1", "sdxl"])
    assert both["mean"] == pytest.approx(2 * np.sqrt((0.01 ** 2 + 0.01 ** 2) / 2))
    assert seed_bands(noise, "validator", ["flux1"])["mean"] == pytest.approx(2 * np.sqrt((0.03 ** 2 + 0.02 ** 2) / 2))
    assert "mean" not in seed_bands(noise, "validator", ["flux1", "gans"])  # a fold no pair holds
    assert seed_bands(["not", "a", "dict"], "validator", ["flux1"]) == {}

    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"variants": {"m": {}, "m.minus-real-coco": {"exclude_sources": ["real/coco"]}}}))
    rng = np.random.default_rng(0)
    src = np.array(["fake/sdxl"] * 40 + ["real/imagenet"] * 40 + ["real/coco"] * 40)
    label = np.r_[np.ones(40), np.zeros(80)].astype(np.int64)
    split = np.array(["val", "test"] * 60)
    arrays = {"validator/source": src, "validator/split": split, "validator/label": label}
    for name in ("m", "m.minus-real-coco"):
        arrays[f"validator/{name}"] = (label + rng.normal(0, 1, len(src))).astype(np.float32)
    np.savez(tmp_path / "a.npz", **arrays)
    arrays["validator/m.minus-real-coco"] = arrays["validator/m.minus-real-coco"] - 3 * (src == "real/coco")
    np.savez(tmp_path / "b.npz", **arrays)
    (tmp_path / "noise.json").write_text(json.dumps(noise))
    paired = load_script("benchmarks/logo_paired.py")
    paired.main(["--a", str(tmp_path / "a.npz"), "--b", str(tmp_path / "b.npz"), "--spec", str(spec), "--arm", "m",
                 "--real_folds", "--n_boot", "20", "--regimes", "validator", "--noise", str(tmp_path / "noise.json"),
                 "--out", str(tmp_path / "cam.json")])
    mean_row = [line for line in (tmp_path / "cam.md").read_text().splitlines() if "**mean**" in line][0]
    assert mean_row.rstrip().endswith("| - |")


def test_seed_noise_table_survives_a_fold_without_any_auc(tmp_path):
    mod = load_script("benchmarks/logo_seed_noise.py")
    result = {"folds": ["gans"], "seed": [], "rerun": [],
              "summary": {"validator": {"gans": {"at_real90": {"n": 1, "rms": 0.1, "max_abs": 0.1}}}}}
    assert "| validator | - | - |" in mod.markdown(result)
