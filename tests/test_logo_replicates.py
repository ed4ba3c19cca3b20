"""benchmarks/logo_replicates.py: paired LOGO comparisons on several seeds, pooled against
the band of a mean (the seed band over sqrt(n)), with disagreeing signs never 'beyond'."""
import itertools
import json
import math

import pytest
from conftest import load_script

logo_replicates = load_script("benchmarks/logo_replicates.py")
RUNS = itertools.count()  # each pair's runs get names of their own


def pair(diffs: dict[str, float], det: float = 0.01, **extra) -> dict:
    folds = {f: {"auc": {"diff": d}, "at_real90": {"diff": det}} for f, d in diffs.items()}
    k = next(RUNS)
    run = {"a": f"plain_{k}.npz", "b": f"aux_{k}.npz"}  # runs of their own, unless given
    return {"arm": "plain", "arm_b": "aux", **run, "regimes": {"validator": {"folds": folds}}, **extra}


def noise(rms: dict[str, float], seed_means: list[dict[str, float]]) -> dict:
    """A logo_seed_noise.py-shaped result: per-fold RMS, and seed pairs whose per-fold
    differences give the band of the mean."""
    return {"summary": {"validator": {f: {"auc": {"rms": r}} for f, r in rms.items()}},
            "seed": [{"regimes": {"validator": {"folds": {f: {"auc": {"diff": d}} for f, d in p.items()}}}}
                     for p in seed_means]}


def write(tmp_path, name, obj):
    p = tmp_path / name
    p.write_text(json.dumps(obj))
    return str(p)


def test_the_band_of_a_mean_narrows_with_the_number_of_pairs_and_needs_agreeing_signs(tmp_path):
    nz = noise({"gans": 0.03, "flux1": 0.01}, [{"gans": 0.02, "flux1": 0.0}, {"gans": -0.02, "flux1": 0.0}])
    files = [write(tmp_path, f"p{i}.json", pair(d)) for i, d in
             enumerate([{"gans": 0.05, "flux1": 0.05}, {"gans": 0.04, "flux1": -0.01}])]
    out = tmp_path / "r.json"
    res = logo_replicates.main(["--pairs", *files, "--noise", write(tmp_path, "n.json", nz), "--out", str(out)])
    rows = res["regimes"]["validator"]["rows"]
    g = rows["gans"]["auc"]
    assert g["diffs"] == [0.05, 0.04] and g["mean"] == pytest.approx(0.045)
    assert g["band_single"] == pytest.approx(0.06)  # 2 x RMS: one pair alone (0.05) would be inside it
    assert g["band_of_mean"] == pytest.approx(0.06 / math.sqrt(2)) and g["beyond"]  # 0.045 > 0.0424
    f = rows["flux1"]["auc"]  # mean +0.02 is outside its band of mean (0.0141), but one seed says the opposite
    assert f["mean"] > f["band_of_mean"] and not f["same_sign"] and not f["beyond"]
    m = rows["mean"]["auc"]  # each pair's mean over the shared folds
    assert m["diffs"] == pytest.approx([0.05, 0.015]) and m["band_of_mean"] == pytest.approx(0.02 / math.sqrt(2))
    assert m["beyond"]
    assert rows["gans"]["at_real90"]["mean"] == pytest.approx(0.01) and "band_of_mean" not in rows["gans"]["at_real90"]
    md = out.with_suffix(".md").read_text()
    assert "| validator | gans | +0.050, +0.040 | +0.045 | ±0.042 **beyond** |" in md
    assert "(not all on one side)" in md and json.loads(out.read_text())["n"] == 2


def test_only_folds_every_pair_holds_are_pooled(tmp_path):
    files = [write(tmp_path, "a.json", pair({"gans": 0.05, "sdxl": 0.5})), write(tmp_path, "b.json", pair({"gans": 0.01}))]
    res = logo_replicates.main(["--pairs", *files, "--out", str(tmp_path / "r.json")])
    rows = res["regimes"]["validator"]["rows"]
    assert list(rows) == ["gans", "mean"]  # sdxl, in one pair only, neither pooled nor in the mean
    assert rows["mean"]["auc"]["diffs"] == pytest.approx([0.05, 0.01])
    assert "band_of_mean" not in rows["gans"]["auc"]  # no --noise: no band


@pytest.mark.parametrize("bad, message", [
    ({"by_source": True}, "per-source"),
    ({"real_folds": True}, "camera-fold"),
])
def test_comparisons_the_seed_band_does_not_hold_are_refused(tmp_path, capsys, bad, message):
    files = [write(tmp_path, "a.json", pair({"gans": 0.05}, **bad)), write(tmp_path, "b.json", pair({"gans": 0.01}))]
    with pytest.raises(SystemExit) as e:
        logo_replicates.main(["--pairs", *files, "--out", str(tmp_path / "r.json")])
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_one_pair_or_a_wrong_file_is_a_usage_error(tmp_path, capsys):
    one = write(tmp_path, "a.json", pair({"gans": 0.05}))
    with pytest.raises(SystemExit):
        logo_replicates.main(["--pairs", one, "--out", str(tmp_path / "r.json")])
    assert "at least two" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        logo_replicates.main(["--pairs", one, write(tmp_path, "x.json", {"folds": {}}), "--out", str(tmp_path / "r.json")])
    assert "not a logo_paired.py result" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()


def test_a_zero_difference_is_on_neither_side(tmp_path):
    """[0, +0.05] is not 'every seed on the same side': beyond needs each pair to move the same way."""
    nz = noise({"gans": 0.001}, [{"gans": 0.001}])
    files = [write(tmp_path, "a.json", pair({"gans": 0.0})), write(tmp_path, "b.json", pair({"gans": 0.05}))]
    res = logo_replicates.main(["--pairs", *files, "--noise", write(tmp_path, "n.json", nz), "--out", str(tmp_path / "r.json")])
    g = res["regimes"]["validator"]["rows"]["gans"]["auc"]
    assert g["mean"] > g["band_of_mean"] and not g["same_sign"] and not g["beyond"]


def test_a_fold_without_a_finite_difference_is_skipped_for_every_pair(tmp_path):
    files = [write(tmp_path, "a.json", pair({"gans": float("nan"), "sdxl": 0.02})),
             write(tmp_path, "b.json", pair({"gans": 0.05, "sdxl": 0.04}))]
    res = logo_replicates.main(["--pairs", *files, "--out", str(tmp_path / "r.json")])
    r = res["regimes"]["validator"]
    assert r["folds"] == ["sdxl"] and r["skipped"] == ["gans"]
    assert r["rows"]["mean"]["auc"]["diffs"] == pytest.approx([0.02, 0.04])  # the mean over pooled folds only
    assert "skipped" in (tmp_path / "r.md").read_text()


def test_detection_at_real90_gets_its_own_band(tmp_path):
    nz = noise({"gans": 0.03}, [{"gans": 0.0}])
    nz["summary"]["validator"]["gans"]["at_real90"] = {"rms": 0.01}
    files = [write(tmp_path, "a.json", pair({"gans": 0.05}, det=0.03)), write(tmp_path, "b.json", pair({"gans": 0.04}, det=0.02))]
    res = logo_replicates.main(["--pairs", *files, "--noise", write(tmp_path, "n.json", nz), "--out", str(tmp_path / "r.json")])
    d = res["regimes"]["validator"]["rows"]["gans"]["at_real90"]
    assert d["band_of_mean"] == pytest.approx(0.02 / math.sqrt(2)) and d["beyond"]  # 0.025 > 0.0141


@pytest.mark.parametrize("case, message", [
    ("twice", "given twice"),
    ("other_arms", "different arms"),
    ("shared_run", "share the run"),
])
def test_pairs_that_are_not_independent_seeds_of_one_comparison_are_refused(tmp_path, capsys, case, message):
    first = pair({"gans": 0.05})
    if case == "twice":
        files = [write(tmp_path, "a.json", first)] * 2
    elif case == "other_arms":
        files = [write(tmp_path, "a.json", first), write(tmp_path, "b.json", pair({"gans": 0.01}, arm="x", arm_b="y"))]
    else:  # the second pair compares against the first pair's plain run: one seed counted twice
        files = [write(tmp_path, "a.json", first), write(tmp_path, "b.json", pair({"gans": 0.01}, a=first["a"]))]
    with pytest.raises(SystemExit) as e:
        logo_replicates.main(["--pairs", *files, "--out", str(tmp_path / "r.json")])
    assert e.value.code == 2 and message in capsys.readouterr().err
