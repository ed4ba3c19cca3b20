"""The LOGO read-outs in benchmarks/: threshold_logo.py finds the boundary shift that is
best for held-out families where it really is (synthetic scores with a known answer), and
aligned_effect.py puts each arm's folds from its own run side by side."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import load_script, needs_cxx

REPO = Path(__file__).resolve().parents[1]



def _scores(tmp_path: Path) -> tuple[Path, Path]:
    """Reals around -2, trained fakes around +2; a fold's held-out family scores around -1
    (it looks nearly real to a model that never saw it), so its best boundary lies between
    -2 and -1, well on the 'more AI answers' side of the calibrated one."""
    rng = np.random.default_rng(0)
    n = 400
    source = np.array(["real/a"] * n + ["real/b"] * n + ["fake/x"] * n + ["fake/y"] * n)
    label = np.char.startswith(source, "fake/").astype(np.int64)
    split = np.array((["val", "test"] * (n // 2)) * 4)
    base = np.where(label == 1, 2.0, -2.0) + rng.normal(0, 1, 4 * n)
    data = {}
    for regime in ("validator", "crops"):
        data[f"{regime}/source"], data[f"{regime}/split"], data[f"{regime}/label"] = source, split, label
        data[f"{regime}/m"] = base.astype(np.float32)
        for held in ("x", "y"):
            z = base.copy()
            z[source == f"fake/{held}"] -= 3.0
            data[f"{regime}/m.minus-{held}"] = z.astype(np.float32)
        z = base.copy()
        z[source == "real/a"] += 2.0  # an unseen-camera fold: its unseen kind looks half fake
        data[f"{regime}/m.minus-real-a"] = z.astype(np.float32)
    npz = tmp_path / "scores.npz"
    np.savez(npz, **data)
    spec = {"variants": {"m": {"exclude_sources": []}, "m.minus-x": {"exclude_sources": ["fake/x"]},
                         "m.minus-y": {"exclude_sources": ["fake/y"]},
                         "m.minus-real-a": {"exclude_sources": ["real/a"]}}}
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps(spec))
    return npz, spec_path


def test_best_shift_for_heldout_families_is_found(tmp_path):
    bench = load_script("benchmarks/threshold_logo.py")
    npz, spec = _scores(tmp_path)
    out = tmp_path / "t.json"
    r = bench.main(["--scores", str(npz), "--logo_spec", str(spec), "--arm", "m", "--delta_range", "-8", "8", "0.25",
                    "--out", str(out), "--figure", str(tmp_path / "t.png")])
    assert json.loads(out.read_text())["arms"]["m"]["validator"]["heldout"]["best_delta"] == r["arms"]["m"]["validator"]["heldout"]["best_delta"]
    assert (tmp_path / "t.png").stat().st_size > 0
    c = r["arms"]["m"]["validator"]
    assert sorted(c["folds"]) == ["x", "y"]  # the real-a fold is not a generator fold
    assert c["heldout"]["best_delta"] > 2.0          # move towards 'AI' for unseen families
    assert abs(c["in_pool"]["best_delta"]) <= 1.0    # the calibrated boundary suits the known ones
    i0 = r["deltas"].index(0.0)
    assert c["heldout"]["best_balanced"] > c["heldout"]["balanced"][i0] + 0.1
    # at no shift the curve is the plain calibrated decision, averaged over the folds
    data = np.load(npz)
    src = data["validator/source"]
    direct = [np.mean(bench.calibrated_logits(data, f"m.minus-{h}", [f"fake/{h}"], "validator")[src == f"fake/{h}"] > 0)
              for h in ("x", "y")]
    assert abs(np.mean(direct) - c["heldout"]["detection"][i0]) < 1e-3
    # the unseen-camera fold: its kind is called real about half the time at the calibrated boundary
    assert c["unseen_real"]["folds"] == ["real-a"] and 0.3 < c["unseen_real"]["real_accuracy"][i0] < 0.7
    both = (np.array(c["heldout"]["detection"]) + np.array(c["unseen_real"]["real_accuracy"])) / 2
    assert c["both_unseen"]["best_balanced"] == round(float(both.max()), 4)
    # the boundary rules: a higher share of known real photos passing keeps more unseen ones real
    rules = c["boundary_rules"]
    assert list(rules) == ["0", "0.85", "0.9", "0.95"]
    unseen = [rules[k]["unseen_real_accuracy"] for k in ("0.85", "0.9", "0.95")]
    assert unseen == sorted(unseen) and unseen[-1] > unseen[0] + 0.05
    assert abs(rules["0.9"]["known_real_accuracy"] - 0.9) < 0.05  # test photos follow the validation quantile
    assert rules["0"]["heldout_detection"] == c["heldout"]["detection"][i0]


def test_aligned_effect_tables_read_each_arm_from_its_own_run(tmp_path):
    bench = load_script("benchmarks/aligned_effect.py")

    def run(path, arm, det):
        folds = {fam: {"heldout_detection": d, "per_real_kind": {"real/a": d / 2, "real/b": None}} for fam, d in det.items()}
        path.write_text(json.dumps({"regimes": {"validator": {"folds": {arm: folds}}}}))

    run(tmp_path / "one.json", "m", {"x": 0.2, "y": 0.6})
    run(tmp_path / "two.json", "m", {"x": 0.8})
    md = bench.main([f"first={tmp_path / 'one.json'}:m", f"second={tmp_path / 'two.json'}:m", "--out", str(tmp_path / "t.md")])
    lines = md.splitlines()
    assert "| x | 0.200 | 0.800 |" in lines
    assert "| y | 0.600 | – |" in lines
    assert "| **mean** | **0.400** | **0.800** |" in lines          # families
    assert "| a | 0.200 | 0.400 |" in lines                        # real kind: mean over folds, None skipped
    assert (tmp_path / "t.md").read_text() == md


def test_merged_runs_become_arms_and_ensembles_are_read_fold_by_fold(tmp_path):
    """Two runs of one recipe (say, two seeds) merged into one scores file: each run's recipe
    and folds become an arm with its own name, threshold_logo reads the arms and their
    mean-logit ensemble; runs that scored other pictures, or lack the recipe, are refused."""
    gen = load_script("benchmarks/generalisation.py")
    bench = load_script("benchmarks/threshold_logo.py")
    npz, spec_path = _scores(tmp_path)
    runs = {}
    for k, shift in (("one", 0.0), ("two", 1.0)):
        d = tmp_path / k
        d.mkdir()
        z = dict(np.load(npz))
        for key in list(z):
            if key.endswith("/m") or "/m.minus-" in key:
                z[key] = z[key] + shift  # the second run calls everything a little more 'AI'
        np.savez(d / "logo_scores.npz", **z)
        spec = json.loads(spec_path.read_text())
        spec.update(logo={"folds": ["x", "y", "real-a"], "recipes": ["m"], "controls": []}, base={"seed": len(runs)})
        (d / "logo_spec.json").write_text(json.dumps(spec))
        if k == "two":  # its time budget cut the spec's epochs: the merged spec says what ran
            (d / "sweep.json").write_text(json.dumps({"epochs": 7, "seconds": 12.5, "variants": {}}))
        runs[k] = d
    out_npz, out_spec = tmp_path / "merged.npz", tmp_path / "merged.json"
    gen.main(["merge", "--runs", f"a={runs['one']}:m", f"b={runs['two']}:m", "--scores", str(out_npz), "--logo_spec", str(out_spec)])
    merged, mspec = np.load(out_npz), json.loads(out_spec.read_text())
    assert set(mspec["variants"]) == {f"{arm}{fold}" for arm in "ab" for fold in ("", ".minus-x", ".minus-y", ".minus-real-a")}
    assert mspec["variants"]["b.minus-x"]["exclude_sources"] == ["fake/x"] and mspec["logo"]["recipes"] == ["a", "b"]
    assert mspec["merged_runs"]["a"] == {"recipe": "m", "base": {"seed": 0}}
    assert mspec["merged_runs"]["b"] == {"recipe": "m", "base": {"seed": 1}, "epochs": 7, "seconds": 12.5}
    assert np.allclose(merged["validator/b.minus-y"], np.load(npz)["validator/m.minus-y"] + 1.0)
    r = bench.main(["--scores", str(out_npz), "--logo_spec", str(out_spec), "--arm", "a", "b", "ab", "--ensemble", "ab=a+b",
                    "--real_targets", "--out", str(tmp_path / "t.json"), "--figure", ""])
    i0 = r["deltas"].index(0.0)
    det = {arm: r["arms"][arm]["validator"]["heldout"]["detection"][i0] for arm in ("a", "b", "ab")}
    assert det["a"] == det["b"]  # a constant logit shift is undone by each fold's own calibration
    assert r["arms"]["ab"]["validator"]["folds"] == ["x", "y"] and abs(det["ab"] - det["a"]) < 0.02
    with pytest.raises(SystemExit):  # an arm the scores do not hold is an error, not an empty read-out
        bench.main(["--scores", str(out_npz), "--logo_spec", str(out_spec), "--arm", "c", "--out", str(tmp_path / "u.json"),
                    "--figure", ""])
    z = dict(np.load(runs["two"] / "logo_scores.npz"))
    z["validator/label"] = 1 - z["validator/label"]
    np.savez(runs["two"] / "logo_scores.npz", **z)
    with pytest.raises(SystemExit, match="other pictures"):
        gen.merge_runs({"a": (runs["one"], "m"), "b": (runs["two"], "m")})
    with pytest.raises(SystemExit, match="no variant"):
        gen.merge_runs({"a": (runs["one"], "zz"), "b": (runs["two"], "m")})


def test_held_out_auc_is_split_by_the_validator_resize_each_crop_got(tmp_path):
    """logo_by_resize.py replays each crop's validator draws (as scored) and reads the held-out
    AUC per resize bin: a fold that catches its held-out family only when the crop was not
    resized reads 1.0 there and 0.0 in the resized bins; --data that is not what was scored
    is refused."""
    from validator_synth import make_folder

    bench = load_script("benchmarks/logo_by_resize.py")
    data = make_folder(tmp_path / "d", n_per_class=30, seed=1, size=256)
    factors, names = bench.resize_factors([str(data)])
    source = np.array(names)
    label = np.char.startswith(source, "fake/").astype(np.int64)
    plain = np.isclose(factors, 1.0)
    assert 0.05 < plain.mean() < 0.5 and factors.max() > 1.4  # 20 % plain draws; the rest up-scaled
    fold = np.where(label == 1, np.where(plain, 2.0, -2.0), 0.0).astype(np.float32)
    npz = tmp_path / "s.npz"
    np.savez(npz, **{"crops/source": source, "crops/split": np.array(["test"] * len(source)), "crops/label": label,
                     "crops/m": fold, "crops/m.minus-x": fold, "crops/m.minus-real-a": fold})
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"variants": {"m": {"exclude_sources": []}, "m.minus-x": {"exclude_sources": ["fake/synth"]},
                                             "m.minus-real-a": {"exclude_sources": ["real/synth"]}}}))
    out = tmp_path / "r.json"
    r = bench.main(["--scores", str(npz), "--logo_spec", str(spec), "--data", str(data), "--arm", "m", "--out", str(out)])
    bins = r["arms"]["m"]
    assert list(bins) == ["x1 (not resized)", "x1-1.4", "x1.4-inf"]
    assert bins["x1 (not resized)"]["per_family"] == {"x": 1.0}  # the camera fold is no generator fold
    assert bins["x1.4-inf"]["mean_heldout_auc"] == 0.0
    assert sum(b["n"] for b in bins.values()) == len(source)
    assert json.loads(out.read_text())["arms"] == r["arms"]
    other = make_folder(tmp_path / "o", n_per_class=3, seed=2, size=256)
    with pytest.raises(SystemExit, match="order"):
        bench.main(["--scores", str(npz), "--logo_spec", str(spec), "--data", str(other), str(data), "--arm", "m",
                    "--out", str(out)])


def test_synthetic_fakes_are_read_per_root_and_per_resize(tmp_path):
    """synthetic_learnability.py reads each synthetic root's test fakes against the test real
    photos, split by the validator resize each crop got as scored: an arm that catches them
    only when not resized reads 1.0 there and 0.0 in the resized bins; the generator fakes are
    a group of their own; --data that is not what was scored is refused."""
    from bitmind.training.aligned_fakes import main as aligned_main
    from validator_synth import make_folder

    bench = load_script("benchmarks/synthetic_learnability.py")
    data = make_folder(tmp_path / "d", n_per_class=40, seed=1, size=256)
    synth = tmp_path / "synth_a"
    aligned_main(["--data", str(data), "--synthetic", "--split", "test", "--out", str(synth), "--device", "cpu"])
    roots = [str(data), str(synth)]
    factors, names = bench.scored_resize_factors(roots)
    source = np.array(names)
    items = bench.scored_items(roots)
    label = np.array([lab for *_, lab in items], dtype=np.int64)
    split = np.array([sp for _, _, _, sp, _ in items])
    is_synth = source == bench.SYNTHETIC
    assert is_synth.any() and (split[is_synth] == "test").all()
    plain = np.isclose(factors, 1.0)
    logit = np.where(is_synth, np.where(plain, 2.0, -2.0), np.where(label == 1, 1.0, 0.0)).astype(np.float32)
    npz = tmp_path / "s.npz"
    np.savez(npz, **{"crops/source": source, "crops/split": split, "crops/label": label, "crops/m": logit})
    out = tmp_path / "r.json"
    r = bench.main(["--scores", str(npz), "--data", *roots, "--out", str(out)])
    m = r["arms"]["m"]
    assert set(m) == {"synth_a", "generators"}
    assert list(m["synth_a"]) == ["all", "x1 (not resized)", "x1-1.4", "x1.4-inf"]
    assert m["synth_a"]["x1 (not resized)"]["n"] and m["synth_a"]["x1 (not resized)"]["auc"] == 1.0
    resized = [v for b, v in m["synth_a"].items() if b not in ("all", "x1 (not resized)") and v["n"]]
    assert resized and all(v["auc"] == 0.0 for v in resized)
    assert m["synth_a"]["all"]["n"] == int(is_synth.sum())
    assert m["generators"]["all"]["auc"] == 1.0
    assert json.loads(out.read_text())["arms"] == r["arms"]
    with pytest.raises(SystemExit, match="order"):
        bench.main(["--scores", str(npz), "--data", str(data), "--out", str(out)])



def test_logo_by_length_reads_the_epochs_each_run_actually_trained(tmp_path):
    """Each arm's epochs come from what its run recorded (a merged arm's, a budgeted run's
    "ran"), from fixed epochs when no budget could cut them, or from --ran; a budgeted run
    that says nothing reads '?', never its asked-for epochs. Short and long runs are grouped
    with their range."""
    bench = load_script("benchmarks/logo_by_length.py")

    def run(stem: str, arms: dict[str, float], spec: dict) -> Path:
        summary = {"arms": {arm: {regime: {"folds": 6, "mean_heldout_detection_generators": v,
                                          "mean_heldout_detection_at_real90": v / 2, "mean_heldout_auc": 0.7,
                                          "worst_heldout_detection": 0.1, "real_accuracy": 0.8}
                                  for regime in ("validator", "crops")} for arm, v in arms.items()}}
        (tmp_path / f"{stem}.json").write_text(json.dumps({"summary": summary}))
        (tmp_path / f"{stem}_spec.json").write_text(json.dumps(spec))
        return tmp_path / f"{stem}.json"

    merged = run("merged", {"a": 0.50, "b": 0.52}, {"base": {"epochs": 99}, "time_budget_s": 0, "merged_runs": {
        "a": {"recipe": "r", "base": {"epochs": 12}}, "b": {"recipe": "r", "base": {"epochs": 48}, "epochs": 43}}})
    budgeted = run("budgeted", {"r": 0.54}, {"base": {"epochs": 48}, "time_budget_s": 900, "ran": {"epochs": 40}})
    silent = run("silent", {"r": 0.56}, {"base": {"epochs": 15}, "time_budget_s": 600})
    arms = [f"r={merged}:a", f"r={merged}:b", f"r={budgeted}:r", f"r={silent}:r"]
    res = bench.main(arms + ["--out", str(tmp_path / "len.json")])
    assert [r["epochs"] for r in res["rows"]] == [12, 43, 40, None]
    assert "| ? |" in (tmp_path / "len.md").read_text()
    short, long = res["groups"]
    assert (short["length"], short["runs"], long["length"], long["runs"]) == ("short", 1, "long", 2)
    assert long["validator"]["mean_heldout_detection_generators"] == pytest.approx({"mean": 0.53, "min": 0.52, "max": 0.54})
    res = bench.main(arms + ["--ran", "silent=15"])
    assert res["rows"][-1]["epochs"] == 15 and res["groups"][0]["runs"] == 2
    res = bench.main(arms + ["--longer_from", "42", "--figure", str(tmp_path / "len.png")])  # 43 now longer, 40 long
    assert [(g["length"], g["epochs"]) for g in res["groups"]] == [("short", [12]), ("long", [40]), ("longer", [43])]
    assert (tmp_path / "len.png").stat().st_size > 1000  # the runs with known epochs, by length
    with pytest.raises(SystemExit):
        bench.main(arms + ["--longer_from", "30"])  # not above --long_from
    with pytest.raises(SystemExit, match="no arm"):
        bench.main([f"r={merged}:zz"])


def _probe_features(seed: int = 0) -> dict:
    """Per-picture features with a known answer: diffusion fakes (sdxl, flux1) carry +3 on one
    periodic feature, GAN fakes -3 there (what the real pools show: a read-out fitted on
    diffusion fakes ranks GANs below real photos) and +4 on another; the level features are
    noise for every class."""
    rng = np.random.default_rng(seed)
    source = np.array(["real/a"] * 300 + ["fake/sdxl"] * 150 + ["fake/flux1-dev"] * 150 + ["fake/stylegan-family"] * 100)
    label = np.char.startswith(source, "fake/").astype(np.int8)
    split = rng.choice(["train", "val", "test"], size=len(source), p=[0.6, 0.2, 0.2])
    periodic = rng.normal(0, 1, (len(source), 28)).astype(np.float32)
    gan = source == "fake/stylegan-family"
    periodic[:, 3] += np.where(gan, -3.0, np.where(label == 1, 3.0, 0.0))
    periodic[:, 5] += np.where(gan, 4.0, 0.0)  # GANs have a mark of their own, which only their own fold never sees
    return {"level": rng.normal(0, 1, (len(source), 4)).astype(np.float32), "periodic": periodic,
            "source": source, "split": split, "label": label}


def test_periodic_probe_reads_held_out_families_and_stacks_onto_a_model():
    """periodic_probe.py: fitted without a family, the periodic read-out still separates a
    held-out diffusion family from real photos, ranks the inverted GANs below them (while
    the one-class distance from the photos, which saw no fake, flags both), and the
    level features (noise here) stay near chance; stacked onto a fold model that knows
    nothing (noise logits), the read-out lifts its held-out AUC. Scores of other pictures
    are refused."""
    bench = load_script("benchmarks/periodic_probe.py")
    feats = _probe_features()
    res = bench.probe(feats)
    assert set(res["periodic"]) == {"sdxl", "flux1", "gans", "_mean"}
    assert res["periodic"]["flux1"]["heldout_auc"] > 0.8 and res["periodic"]["sdxl"]["heldout_auc"] > 0.8
    assert res["periodic"]["gans"]["heldout_auc"] < 0.2
    # the one-class read-out saw no fake: GANs, far from the photos the other way, stand out to it
    assert res["periodic"]["gans"]["oneclass_auc"] > 0.9 and res["periodic"]["flux1"]["oneclass_auc"] > 0.7
    assert abs(res["level"]["gans"]["oneclass_auc"] - 0.5) < 0.15
    assert all(abs(res["level"][f]["heldout_auc"] - 0.5) < 0.15 for f in ("sdxl", "flux1"))
    assert 0.8 < res["periodic"]["flux1"]["test_real_kept"] <= 1.0  # the boundary keeps about 90 % of real photos
    assert "| **mean** |" in bench.markdown(res)
    rng = np.random.default_rng(1)
    scores = {"validator/source": feats["source"], "validator/split": feats["split"]}
    for fold in ("sdxl", "flux1", "gans"):
        scores[f"validator/m.minus-{fold}"] = rng.normal(0, 1, len(feats["source"])).astype(np.float32)
    st = bench.stacked(feats, scores, "m", ["sdxl", "flux1", "gans"])
    assert abs(st["flux1"]["model"]["heldout_auc"] - 0.5) < 0.15 and st["flux1"]["stacked"]["heldout_auc"] > 0.85
    assert st["_mean"]["stacked"]["in_pool_test_auc"] > st["_mean"]["model"]["in_pool_test_auc"] + 0.2
    longer = {k: np.r_[v, v[:5]] for k, v in scores.items()}  # a scored root after the features' roots
    assert bench.stacked(feats, longer, "m", ["flux1"])["flux1"] == st["flux1"]
    scores["validator/split"] = np.roll(scores["validator/split"], 1)
    with pytest.raises(SystemExit, match="other pictures"):
        bench.stacked(feats, scores, "m", ["sdxl"])


def test_periodic_probe_features_of_real_files(tmp_path):
    """The file path of the probe: a validator-style folder is read as it is, every picture
    gets its 4 level and 28 periodic numbers, and a period-4 pattern peaks at 1/4 cycle per
    pixel in the row channels' means."""
    import torch
    from PIL import Image

    bench = load_script("benchmarks/periodic_probe.py")
    root = tmp_path / "chal"
    t = (0.5 + 0.2 * np.cos(2 * np.pi * np.arange(256) / 4))[None, :, None].repeat(256, 0).repeat(3, 2)
    for cls, src in (("real", "coco"), ("fake", "sdxl")):
        (root / cls / src).mkdir(parents=True)
        for i in range(3):
            a = np.random.default_rng(i).random((256, 256, 3)) if cls == "real" else t
            Image.fromarray((a * 255).astype(np.uint8)).save(root / cls / src / f"{src}{i}_0.png")
    feats = bench.extract([str(root)], workers=0, batch_size=4)
    assert feats["level"].shape == (6, 4) and feats["periodic"].shape == (6, 28) and not np.isnan(feats["periodic"]).any()
    fake = feats["label"] == 1
    assert np.all(feats["periodic"][fake, :7].argmax(1) == 2)  # 0.25 cycle per pixel
    crops = bench.extract([str(root)], workers=0, batch_size=4, regime="crops")  # through the validator pipeline
    assert crops["periodic"].shape == (6, 28) and not np.array_equal(crops["periodic"], feats["periodic"])
    with pytest.raises(ValueError, match="regime"):
        bench.extract([str(root)], regime="native")
    lv, pe = bench.picture_features(torch.full((1, 3, 64, 64), 0.5))
    assert np.abs(pe).max() < 1e-4  # a flat picture has no spectrum shape


@needs_cxx
def test_train_speed_measures_the_compiled_trainer_beside_the_fast_one(tmp_path, monkeypatch):
    """``--compile`` adds a run of the fast settings with ``TrainConfig.compile`` and its ratio
    to the fast run; ``--shipped_recipe`` trains the shipped network's options (here at a tiny
    width, so the CPU compiles it in seconds)."""
    from validator_synth import make_folder

    bench = load_script("benchmarks/train_speed.py")
    monkeypatch.setattr(bench, "SHIPPED_RECIPE", {**bench.SHIPPED_RECIPE, "layers": [1, 1], "width": 8, "patch_size": 32})
    data = make_folder(tmp_path / "data", n_per_class=24, size=64)
    out = bench.main(["--data", str(data), "--device", "cpu", "--steps", "2", "--epochs", "2", "--batch_size", "4",
                      "--workers", "0", "--shipped_recipe", "--compile", "--json", str(tmp_path / "speed.json")])
    assert out["compiled"]["settings"]["compile"] is True and out["fast"]["settings"]["compile"] is False
    assert out["fast"]["settings"]["stem_pool"] is False and out["fast"]["settings"]["patch_size"] == 32
    assert out["compile_speedup"] == pytest.approx(out["compiled"]["images_per_second"] / out["fast"]["images_per_second"])
    assert json.loads((tmp_path / "speed.json").read_text())["compile_speedup"] == out["compile_speedup"]


def test_augmentation_memory_scores_the_very_draws_a_checkpoint_trained_on(tmp_path):
    """The probe rebuilds the training set from a checkpoint's recorded options with only its
    leading crop roots: each crop's epoch-0 version must be the one the full training set drew
    (indices, hence draws, do not depend on the roots after them); other roots are refused."""
    import torch
    from test_generalisation import TINY, make_pools

    from bitmind.checkpoint import model_meta, save_checkpoint
    from bitmind.models import build_model
    from bitmind.training import TrainConfig
    from bitmind.training.trainer import build_datasets

    bench = load_script("benchmarks/augmentation_memory.py")
    pools = make_pools(tmp_path)
    cfg = TrainConfig(data=[str(pools["crops"]), str(pools["aligned"])], challenge_data=[str(pools["chal"])],
                      aug_validator_prob=1.0, aug_jpeg_quality=[60, 95], aug_color_jitter_prob=0.5, seed=3,
                      val_fraction=0.25, test_fraction=0.25)
    model = build_model("npr", **TINY)
    ckpt = save_checkpoint(model, tmp_path / "m.pth", model_meta(model, "npr", config=TINY, train_options=cfg.to_dict()))
    local = bench.training_config(bench.load_model(ckpt).meta, [str(pools["crops"])])
    assert local.seed == 3 and local.data == [str(pools["crops"])] and local.challenge_data == []
    full, _, _ = build_datasets(cfg)
    part, _, _ = build_datasets(local)
    assert 0 < len(part) < len(full)
    for k in range(len(part)):
        assert part.items[k][0].describe(part.items[k][1]) == full.items[k][0].describe(full.items[k][1])
        assert torch.equal(part[k][0], full[k][0])
    with pytest.raises(SystemExit, match="first data roots"):
        bench.training_config(bench.load_model(ckpt).meta, [str(pools["aligned"])])
    out = bench.probe(str(ckpt), [str(pools["crops"])], per_class=3, fresh_epochs=(1, 2))
    for name in ("train", "val"):
        s = out["sets"][name]
        assert s["pictures"] == 6 and len(s["fresh"]) == 2 and np.isfinite(s["margin_gain_epoch0_over_fresh"])
    assert set(out["memorisation"]) == {"margin_gain_train_minus_val", "stderr", "auc_gain_train", "auc_gain_val"}


def test_threshold_logo_reads_camera_folds_only_beside_generator_folds(tmp_path, capsys):
    """The committed camera-only run at the shipped length (no generator folds) is refused
    alone with one line, and beside the generator folds of the same recipe, seed and length it
    gives the shipped rule's unseen-camera figure the docs quote (0.733 kept real at 0.85)."""
    bench = load_script("benchmarks/threshold_logo.py")
    r = REPO / "benchmarks" / "results"
    cams = [str(r / "generalisation_cameras_s1_135_scores.npz"), str(r / "generalisation_cameras_s1_135_spec.json")]
    with pytest.raises(SystemExit) as e:
        bench.main(["--scores", cams[0], "--logo_spec", cams[1], "--arm", "patch96nopool", "--figure", "",
                    "--out", str(tmp_path / "no.json")])
    assert e.value.code == 2 and "no generator folds" in capsys.readouterr().err
    out = bench.main(["--scores", str(r / "generalisation_fixed_s1_135_scores.npz"),
                      "--logo_spec", str(r / "generalisation_fixed_s1_135_spec.json"), "--cameras", *cams,
                      "--arm", "patch96nopool", "--real_targets", "0.85", "--figure", "", "--out", str(tmp_path / "t.json")])
    rule = out["arms"]["patch96nopool"]["validator"]["boundary_rules"]["0.85"]
    assert rule["unseen_real_accuracy"] == pytest.approx(0.733, abs=5e-4)
    assert rule["both_unseen_balanced"] == pytest.approx(0.632, abs=5e-4)
