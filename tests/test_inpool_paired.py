"""benchmarks/inpool_paired.py: two recipes' everything models paired on the in-pool test
split, at the protocol's boundaries, per pair of runs and pooled over them."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import load_script

N = 50  # test real photos of each trained real source


def _pictures():
    """Validator-regime pictures: two trained real sources and one the arms exclude
    (real/c), two fake sources; each in train, val and test. Every test real photo of a
    trained source sits well below any boundary (-4..-1.5), every test fake well above."""
    src, split, label = [], [], []
    for s, y in (("real/a", 0), ("real/b", 0), ("real/c", 0), ("fake/x", 1), ("fake/y", 1)):
        for sp, n in (("train", 30), ("val", 60), ("test", N)):
            src += [s] * n
            split += [sp] * n
            label += [y] * n
    return np.array(src), np.array(split), np.array(label, dtype=np.int64)


def _base(src, split, label):
    """A's logits: validation around -2 (real) / +2 (fake) so the Platt boundary is near 0;
    test pictures evenly spread on the right side of it."""
    rng = np.random.default_rng(0)
    z = np.where(label == 1, 2.0, -2.0) + rng.normal(0, 1, len(src))
    for y, lo, hi in ((0, -4.0, -1.5), (1, 1.5, 4.0)):
        for s in set(src[label == y]):
            m = (split == "test") & (src == s)
            z[m] = np.linspace(lo, hi, m.sum())
    return z


def _flip(z, src, split, share, source="real/a"):
    """B: the first ``share`` of ``source``'s test photos pushed far onto the AI side; and
    noise that must never count: every train picture, and every picture of the excluded
    real/c (its test photos too), called AI."""
    z = z.copy()
    idx = np.flatnonzero((split == "test") & (src == source))
    z[idx[: int(round(share * len(idx)))]] = 10.0
    z[split == "train"] = 10.0
    z[(src == "real/c") & (split != "val")] = 10.0
    return z


SPEC = {"variants": {"m": {"exclude_sources": ["real/c"]}, "n": {"exclude_sources": ["real/c"]},
                     "m.minus-x": {"exclude_sources": ["fake/x", "real/c"]}}}


def _write(path, arms: dict, src, split, label, regime="validator"):
    arrays = {f"{regime}/source": src, f"{regime}/split": split, f"{regime}/label": label}
    arrays.update({f"{regime}/{k}": v.astype(np.float32) for k, v in arms.items()})
    np.savez(path, **arrays)
    return str(path)


@pytest.fixture()
def runs(tmp_path):
    """Pair one: arms m (A) and n (B) in one file, B calling 20 % of real/a's test photos
    AI. Pair two: A and B in two files on the same pictures, B calling 40 % of them AI."""
    src, split, label = _pictures()
    z = _base(src, split, label)
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(SPEC))
    one = _write(tmp_path / "one.npz", {"m": z, "n": _flip(z, src, split, 0.2), "m.minus-x": z}, src, split, label)
    a2 = _write(tmp_path / "a2.npz", {"m": z + 0.01}, src, split, label)
    b2 = _write(tmp_path / "b2.npz", {"n": _flip(z, src, split, 0.4)}, src, split, label)
    return {"spec": str(spec), "one": one, "a2": a2, "b2": b2, "tmp": tmp_path, "pics": (src, split, label)}


def _pair(label, a, spec, arm_a, b, arm_b):
    return ["--pair", label, a, spec, arm_a, b, spec, arm_b]


def test_real_photos_lost_by_b_are_found_per_pair_per_source_and_pooled(runs, capsys):
    mod = load_script("benchmarks/inpool_paired.py")
    out = runs["tmp"] / "r.json"
    res = mod.main([*_pair("p1", runs["one"], runs["spec"], "m", runs["one"], "n"),
                    *_pair("p2", runs["a2"], runs["spec"], "m", runs["b2"], "n"),
                    "--n_boot", "300", "--out", str(out)])
    assert "crops regime skipped" in capsys.readouterr().out  # the files hold the validator regime only
    assert res["regimes"] == ["validator"]
    for label, share in (("p1", 0.2), ("p2", 0.4)):
        r = res["pairs"][label]["regimes"]["validator"]
        # test photos of the trained sources only: no train/val picture, nothing of the excluded real/c
        assert (r["real_n"], r["fake_n"]) == (2 * N, 2 * N)
        for t in ("0", "0.85"):
            m = r["targets"][t]["metrics"]
            assert m["real_accuracy"]["a"] == 1.0 and m["fake_accuracy"]["a"] == m["fake_accuracy"]["b"] == 1.0
            assert m["real_accuracy"]["diff"] == pytest.approx(-share / 2)  # real/a is half of the real test photos
            lo, hi = m["real_accuracy"]["ci95"]
            assert lo < m["real_accuracy"]["diff"] < hi < 0 and m["real_accuracy"]["p_b_not_better"] == 1.0
            assert m["balanced_accuracy"]["diff"] == pytest.approx(-share / 4)
            assert m["auc"]["a"] == 1.0 and m["auc"]["diff"] < 0
            per = r["targets"][t]["per_real_source"]
            assert set(per) == {"real/a", "real/b"}
            assert per["real/a"]["n"] == N and per["real/a"]["diff"] == pytest.approx(-share)
            assert per["real/b"]["diff"] == 0.0
    pool = res["pooled"]["validator"]["0"]
    real = pool["metrics"]["real_accuracy"]
    assert real["diff"] == pytest.approx(-0.15) and real["pairs_b_below_a"] == 2
    lo, hi = real["ci95"]
    assert lo < -0.15 < hi < 0 and (lo + hi) / 2 == pytest.approx(-0.15, abs=0.02)  # both pairs' draws, averaged
    # the two pairs hold the same test pictures, so they share each draw's resample: the pooled
    # interval is about the mean of theirs (independent resamples, as if the pictures were two
    # test sets, would make it narrower than either pair's)
    widths = [np.diff(res["pairs"][p]["regimes"]["validator"]["targets"]["0"]["metrics"]["real_accuracy"]["ci95"])[0]
              for p in ("p1", "p2")]
    assert min(widths) < hi - lo <= max(widths) + 1e-9
    assert pool["per_real_source"]["real/a"]["diff"] == pytest.approx(-0.3)
    assert pool["per_real_source"]["real/a"]["n"] == [N, N]
    md = out.with_suffix(".md").read_text()
    assert "**pooled, 2 pairs**" in md and "**-0.150 [" in md and "| real/a | 50 |" in md
    assert json.loads(out.read_text())["pooled"]["validator"]["0.85"]["metrics"]["real_accuracy"]["pairs_b_below_a"] == 2


def test_the_real_target_boundary_keeps_that_share_of_validation_real_photos(tmp_path):
    """The 0.85 rule sets the boundary from the arm's validation real photos (the excluded
    source's left out): test real photos spread exactly like them keep ~0.85 of them real,
    and 0.95 keeps ~0.95; the Platt boundary keeps another share."""
    src, split, label = _pictures()
    z = _base(src, split, label)
    real_val = (label == 0) & (split == "val") & (src != "real/c")
    grid = np.linspace(-3.0, 1.0, real_val.sum())
    z[real_val] = grid
    real_test = (label == 0) & (split == "test") & (src != "real/c")
    z[real_test] = np.linspace(-3.0, 1.0, real_test.sum())  # the same spread as the validation real photos
    z[(src == "real/c") & (split == "val")] = 50.0  # would move every quantile if it were not excluded
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(SPEC))
    f = _write(tmp_path / "s.npz", {"m": z, "n": z}, src, split, label)
    res = load_script("benchmarks/inpool_paired.py").main(
        [*_pair("p", f, str(spec), "m", f, "n"), "--real_targets", "0", "0.85", "0.95", "--n_boot", "20",
         "--out", str(tmp_path / "t.json")])
    p = res["pairs"]["p"]
    for t in (0.85, 0.95):
        cal = p["calibration"][f"{t:g}"]["a"]
        assert cal["val_real_kept"] == pytest.approx(t, abs=0.01) and cal["val_real_n"] == real_val.sum()
        acc = p["regimes"]["validator"]["targets"][f"{t:g}"]["metrics"]["real_accuracy"]
        assert acc["a"] == pytest.approx(t, abs=0.015) and acc["diff"] == 0.0
    platt = p["regimes"]["validator"]["targets"]["0"]["metrics"]["real_accuracy"]["a"]
    assert abs(platt - 0.85) > 0.03


@pytest.mark.parametrize("case, message", [
    ("mismatch", "hold different validator pictures"),
    ("arm", "arm 'zz' has no scores"),
    ("file", "no such file"),
    ("fold", "is a fold model"),
    ("md", "ends in .md"),
    ("noout", "--out names the JSON"),
    ("noval", "cannot calibrate its arms"),
])
def test_usage_errors_are_one_line_and_exit_2_before_work(runs, capsys, case, message):
    src, split, label = runs["pics"]
    bad = _write(runs["tmp"] / "bad.npz", {"n": np.zeros(len(src))}, src, np.roll(split, 1), label)
    one, spec, out = runs["one"], runs["spec"], str(runs["tmp"] / "e.json")
    args = {"mismatch": _pair("p", one, spec, "m", bad, "n"),
            "arm": _pair("p", one, spec, "m", one, "zz"),
            "file": _pair("p", one, spec, "m", str(runs["tmp"] / "nope.npz"), "n"),
            "fold": _pair("p", one, spec, "m", one, "m.minus-x")}.get(case, _pair("p", one, spec, "m", one, "n"))
    if case == "md":
        out = str(runs["tmp"] / "e.md")
    if case == "noout":
        out = ""
    if case == "noval":  # no validation real photos: no boundary can be fitted
        keep = ~((split == "val") & (label == 0))
        z = np.zeros(int(keep.sum()))
        nv = _write(runs["tmp"] / "nv.npz", {"m": z, "n": z}, src[keep], split[keep], label[keep])
        args = _pair("p", nv, spec, "m", nv, "n")
    with pytest.raises(SystemExit) as e:
        load_script("benchmarks/inpool_paired.py").main([*args, "--n_boot", "5", "--out", out])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1] and err[-1].startswith("usage:") is False and "error:" in err[-1]
    assert not (runs["tmp"] / "e.json").exists()


def test_round_trips_of_real_photos_never_count_as_fakes(tmp_path):
    """The TAEF2 round trips (``fake/aligned-*``, scored in the test split only) are training
    material, never a challenge: B calling every one of them real changes nothing."""
    src, split, label = _pictures()
    n_rt = 40
    src = np.concatenate([src, ["fake/aligned-taef2"] * n_rt])
    split = np.concatenate([split, ["test"] * n_rt])
    label = np.concatenate([label, np.ones(n_rt, dtype=np.int64)])
    z = _base(src, split, label)
    z_b = z.copy()
    z_b[src == "fake/aligned-taef2"] = -10.0
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(SPEC))
    f = _write(tmp_path / "s.npz", {"m": z, "n": z_b}, src, split, label)
    res = load_script("benchmarks/inpool_paired.py").main([*_pair("p", f, str(spec), "m", f, "n"), "--n_boot", "20",
                                                            "--out", str(tmp_path / "r.json")])
    r = res["pairs"]["p"]["regimes"]["validator"]
    assert r["fake_n"] == 2 * N
    m = r["targets"]["0"]["metrics"]
    assert m["fake_accuracy"]["diff"] == 0.0 and m["auc"]["diff"] == 0.0
