"""benchmarks/ship_paired.py: the shipped and a candidate checkpoint scored on the same
pictures, compared with a paired bootstrap."""
from __future__ import annotations

import json
from collections import Counter
from types import SimpleNamespace

import numpy as np
import pytest

from bitmind.data import split_of
from bitmind.metrics import bootstrap_resample, bootstrap_strata

from conftest import load_script
from eval_helpers import save_brightness_model, solid_pool

DARK, BRIGHT = 20, 235  # the brightness model calls dark images real, bright ones fake
SOURCES = {"real/ok": DARK, "real/bad": BRIGHT, "fake/ok": BRIGHT, "fake/bad": DARK}
STEMS = [f"p{k}" for k in range(30)]
N_TEST = sum(split_of(s, 0) == "test" for s in STEMS)
pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: one thread is fastest on a small CPU


@pytest.fixture(scope="module")
def bench():
    return load_script("benchmarks/ship_paired.py")


def _root(tmp_path):
    return solid_pool(tmp_path / "pool", SOURCES, STEMS)


def test_the_same_checkpoint_as_a_and_b_differs_by_nothing(tmp_path, bench):
    root, model = _root(tmp_path), save_brightness_model(tmp_path / "m.pth")
    out = tmp_path / "res" / "same.json"
    res = bench.main(["--a", str(model), "--b", str(model), "--data", str(root), "--as_sent", "--resamples", "50",
                      "--device", "cpu", "--out", str(out)])
    assert N_TEST > 0 and res["pictures"] == 4 * N_TEST and res["mode"] == "as_sent" and res["seeds"] is None
    for k, m in res["metrics"].items():
        assert m["diff"] == 0 and m["ci95"] == [0.0, 0.0] and m["p_b_not_better"] == 1.0, k
    assert res["metrics"]["balanced_accuracy"]["a"] == 0.5  # the "ok" sources right, the "bad" ones wrong
    assert all(r["diff"] == 0 and r["b01"] == r["b10"] == 0 for r in res["per_source"].values())
    assert json.loads(out.read_text()) == res
    md = out.with_suffix(".md").read_text()
    assert "Brier (lower is better)" in md and md.count("| real/") == 2
    # challenge draws: both models get the same draw of each picture, draws are pooled
    ch = bench.main(["--a", str(model), "--b", str(model), "--data", str(root), "--seeds", "0", "1", "--resamples", "20",
                     "--device", "cpu", "--out", str(tmp_path / "ch.json")])
    assert ch["mode"] == "challenge" and ch["seeds"] == [0, 1] and ch["pictures"] == 4 * N_TEST
    assert all(m["diff"] == 0 and m["ci95"] == [0.0, 0.0] for m in ch["metrics"].values())


def test_per_source_counts_which_pictures_changed(tmp_path, bench):
    """B calls everything fake (logit bias +5): it gains the fakes A misses, loses the photos A gets."""
    root = _root(tmp_path)
    a, b = save_brightness_model(tmp_path / "a.pth"), save_brightness_model(tmp_path / "b.pth", logit_bias=5.0)
    res = bench.main(["--a", str(a), "--b", str(b), "--data", str(root), "--as_sent", "--resamples", "50",
                      "--device", "cpu", "--out", str(tmp_path / "ab.json")])
    ps = res["per_source"]
    assert ps["fake/bad"] == {"n": N_TEST, "accuracy_a": 0.0, "accuracy_b": 1.0, "diff": 1.0, "b01": N_TEST, "b10": 0}
    assert ps["real/ok"] == {"n": N_TEST, "accuracy_a": 1.0, "accuracy_b": 0.0, "diff": -1.0, "b01": 0, "b10": N_TEST}
    assert ps["all"]["b01"] == ps["all"]["b10"] == N_TEST and ps["all"]["n"] == 4 * N_TEST
    m = res["metrics"]
    assert m["fake_accuracy"]["diff"] == 0.5 and m["real_accuracy"]["diff"] == -0.5
    assert m["fake_accuracy"]["p_b_not_better"] == 0.0 and m["real_accuracy"]["p_b_not_better"] == 1.0


def test_bootstrap_finds_a_better_candidate_and_keeps_source_sizes(bench):
    rng = np.random.default_rng(0)
    sources = np.array(["real/a"] * 120 + ["real/b"] * 80 + ["fake/x"] * 150 + ["fake/y"] * 50)
    labels = np.array([0] * 200 + [1] * 200)
    truth = np.where(labels == 1, 0.7, 0.3)
    pa = np.clip(truth + rng.normal(0, 0.25, len(labels)), 0.01, 0.99)
    pb = pa.copy()
    wrong_a = np.flatnonzero((pa > 0.5) != (labels == 1))
    fixed = wrong_a[np.arange(len(wrong_a)) % 3 != 0]
    pb[fixed] = truth[fixed]  # B gets two thirds of A's mistakes right, in every source
    r = bench.paired_bootstrap(labels, sources, pa, pb, n_boot=200, seed=1)
    for k in ("balanced_accuracy", "roc_auc", "real_accuracy", "fake_accuracy"):
        assert r[k]["diff"] > 0 and r[k]["ci95"][0] > 0 and r[k]["p_b_not_better"] < 0.05, k
        assert r[k]["diff"] == pytest.approx(r[k]["b"] - r[k]["a"])
    brier = r["brier"]  # lower is better: B's gain is a negative difference, the p-value follows
    assert brier["lower_is_better"] and brier["diff"] < 0 and brier["ci95"][1] < 0 and brier["p_b_not_better"] < 0.05
    # draws as rows: two identical draws give the same answer as one
    twice = bench.paired_bootstrap(labels, sources, np.stack([pa, pa]), np.stack([pb, pb]), 200, 1)
    for k, m in r.items():
        assert twice[k]["diff"] == pytest.approx(m["diff"]) and twice[k]["ci95"] == pytest.approx(m["ci95"]), k
    groups, gen = bootstrap_strata(sources, labels), np.random.default_rng(2)
    for _ in range(5):
        idx = bootstrap_resample(groups, gen)
        assert Counter(sources[idx].tolist()) == Counter(sources.tolist()) and len(set(idx.tolist())) < len(idx)


def test_different_pictures_are_refused(tmp_path, bench, monkeypatch):
    p = SimpleNamespace(labels=np.array([0, 1, 1]), sources=["real/a", "fake/x", "fake/x"], paths=["r0", "f0", "f1"])
    bench.check_same_pictures(p, SimpleNamespace(**vars(p)))
    for other in (dict(labels=np.array([0, 1])), dict(labels=np.array([0, 1, 0])),
                  dict(sources=["real/a", "fake/x", "fake/y"]), dict(paths=["r0", "f1", "f0"])):
        with pytest.raises(ValueError, match="different pictures"):
            bench.check_same_pictures(p, SimpleNamespace(**{**vars(p), **other}))
    # end to end: B loses a picture (an unreadable file, say)
    root, model = _root(tmp_path), save_brightness_model(tmp_path / "m.pth")
    real = bench.evaluate_detailed

    def drop_last_for_b(path, *args, **kw):
        report, preds, ds = real(path, *args, **kw)
        if str(path).endswith("b.pth"):
            preds.labels, preds.sources, preds.paths = preds.labels[:-1], preds.sources[:-1], preds.paths[:-1]
        return report, preds, ds

    monkeypatch.setattr(bench, "evaluate_detailed", drop_last_for_b)
    b = save_brightness_model(tmp_path / "b.pth")
    with pytest.raises(ValueError, match="different pictures"):
        bench.main(["--a", str(model), "--b", str(b), "--data", str(root), "--as_sent", "--resamples", "5",
                    "--device", "cpu", "--out", str(tmp_path / "x.json")])
    assert not (tmp_path / "x.json").exists()


def test_seeds_and_as_sent_exclude_each_other(tmp_path, bench, usage_error):
    err = usage_error(bench.main, ["--a", "a.pth", "--b", "b.pth", "--data", str(tmp_path), "--as_sent", "--seeds", "0",
                                   "--out", str(tmp_path / "x.json")])
    assert "--seeds" in err
