"""benchmarks/accuracy.py: ``--as_sent`` scores files that already are validator challenges
as they are (never through the challenge pipeline), and every run reports per-source
accuracy with its worst real and worst fake source."""
import json

from bitmind.data import split_of

from conftest import load_script
from eval_helpers import save_brightness_model, solid_pool

DARK, BRIGHT = 20, 235  # the brightness model calls dark images real, bright ones fake
SOURCES = {"real/ok": DARK, "real/bad": BRIGHT, "fake/ok": BRIGHT, "fake/bad": DARK}
STEMS = [f"p{k}" for k in range(60)]


def _root(tmp_path):
    return solid_pool(tmp_path / "pool", SOURCES, STEMS)


def test_as_sent_scores_files_as_they_are_with_worst_sources(tmp_path, monkeypatch):
    bench = load_script("benchmarks/accuracy.py")
    root, model = _root(tmp_path), save_brightness_model(tmp_path / "m.pth")
    calls = []
    real_evaluate = bench.evaluate

    def spy(*args, **kw):
        calls.append(kw.get("challenge"))
        return real_evaluate(*args, **kw)

    monkeypatch.setattr(bench, "evaluate", spy)
    out = tmp_path / "res" / "v.json"
    bench.main(["--model", str(model), "--data", str(root), "--as_sent", "--plots", "none",
               "--device", "cpu", "--out", str(out)])
    assert calls == [False, False]  # calibrated and uncalibrated, neither as a challenge
    assert not (out.parent / "accuracy_plots").exists()
    saved = json.loads(out.read_text())
    assert saved["mode"] == "as_sent" and saved["headline"] == "as sent" and saved["seeds"] is None
    assert set(saved["results"]) == {"as sent", "as sent, uncalibrated"}
    n_test = sum(split_of(s, 0) == "test" for s in STEMS)
    assert n_test > 0 and saved["results"]["as sent"]["n"] == 4 * n_test
    acc = {k: v["accuracy"] for k, v in saved["per_source_clean"].items()}
    assert acc == {"fake/bad": 0.0, "fake/ok": 1.0, "real/bad": 0.0, "real/ok": 1.0}
    assert saved["worst"] == {"real": {"source": "real/bad", "accuracy": 0.0, "n": n_test},
                              "fake": {"source": "fake/bad", "accuracy": 0.0, "n": n_test}}
    assert saved["worst_of_min_n"] == saved["worst"]  # every source has n_test >= 10 images
    assert "per_source_challenge_seed0" not in saved


def test_challenge_mode_averages_sources_over_draws(tmp_path):
    bench = load_script("benchmarks/accuracy.py")
    root, model = _root(tmp_path), save_brightness_model(tmp_path / "m.pth")
    summary = bench.main(["--model", str(model), "--data", str(root), "--seeds", "0", "1", "--plots",
                          str(tmp_path / "plots"), "--device", "cpu", "--out", str(tmp_path / "c.json")])
    assert summary["mode"] == "challenge" and summary["headline"] == "challenge (mean of 2)"
    assert (tmp_path / "plots").is_dir()
    per = summary["per_source_challenge_mean"]
    assert set(per) == set(SOURCES)
    for name, row in per.items():
        seeds = [summary["results"][f"challenge seed {s}"]["per_source"][name]["accuracy"] for s in (0, 1)]
        assert row["accuracy_per_seed"] == seeds and row["accuracy"] == sum(seeds) / 2
    assert summary["worst"]["real"]["source"] == min(
        (r["accuracy"], -r["n"], k) for k, r in per.items() if k.startswith("real"))[2]
    assert summary["worst"]["fake"]["source"].startswith("fake/")


def test_worst_sources_can_skip_tiny_sources():
    bench = load_script("benchmarks/accuracy.py")
    per = {"real/tiny": {"n": 2, "n_real": 2, "n_fake": 0, "accuracy": 0.0},
           "real/big": {"n": 50, "n_real": 50, "n_fake": 0, "accuracy": 0.6},
           "real/big2": {"n": 80, "n_real": 80, "n_fake": 0, "accuracy": 0.6},
           "fake/big": {"n": 40, "n_real": 0, "n_fake": 40, "accuracy": 0.9}}
    assert bench.worst_sources(per)["real"]["source"] == "real/tiny"
    w = bench.worst_sources(per, min_n=10)
    assert w["real"] == {"source": "real/big2", "accuracy": 0.6, "n": 80}  # tie: the larger source
    assert w["fake"]["source"] == "fake/big"
    assert bench.worst_sources(per, min_n=100) == {}


def test_cpu_bf16_bench_compares_the_two_served_forwards_on_the_same_pictures(tmp_path):
    """benchmarks/cpu_bf16.py scores one split through the fp32 and the bf16 CPU forward and
    reports how far the served probabilities move, which decisions flip, and both timings;
    it leaves the BITMIND_CPU_BF16 setting as it found it."""
    import os

    from conftest import make_checkpoint
    from eval_helpers import make_textured_folder

    bench = load_script("benchmarks/cpu_bf16.py")
    root = make_textured_folder(tmp_path / "data", per_class=6)
    out = tmp_path / "bf16.json"
    r = bench.main(["--model", str(make_checkpoint(tmp_path / "m.pth")), "--data", str(root), "--split", "all",
                    "--rounds", "1", "--per_round", "2", "--json", str(out)])
    assert json.loads(out.read_text()) == r and r["n"] == 12 and r["bf16_forward_served"] is True
    change = r["probability_change"]
    assert 0 < change["max"] < 0.05 and change["median"] <= change["p99"] <= change["max"]
    assert r["decisions_flipped"] == len(r["flipped"]) <= r["n"]
    assert set(r["metrics"]) == {"fp32", "bf16"} and all(v > 0 for v in r["forward_p50_ms"].values())
    assert os.environ["BITMIND_CPU_BF16"] == "0"  # conftest's setting, restored


def test_outputs_are_checked_as_bitmind_eval_checks_them_before_any_evaluation(tmp_path, monkeypatch, capsys):
    """--out on the model file, --out / --plots inside a folder the pictures are read from:
    refused before minutes of evaluations (the script wrote there without the checks
    ``bitmind.eval`` makes)."""
    import pytest

    bench = load_script("benchmarks/accuracy.py")
    root, model = _root(tmp_path), save_brightness_model(tmp_path / "m.pth")
    monkeypatch.setattr(bench, "evaluate", lambda *a, **k: pytest.fail("evaluated before refusing the output"))
    before = model.read_bytes()
    for extra, says in ((["--out", str(model)], "--out"),
                        (["--out", str(root / "real" / "ok" / "r.json")], "where the pictures are read from"),
                        (["--out", str(tmp_path / "r.json"), "--plots", str(root / "fake" / "plots")],
                         "where the pictures are read from")):
        with pytest.raises(SystemExit) as e:
            bench.main(["--model", str(model), "--data", str(root), "--as_sent", "--device", "cpu", *extra])
        assert e.value.code == 2 and says in capsys.readouterr().err
    assert model.read_bytes() == before and not (root / "fake" / "plots").exists()
