"""benchmarks/serve_bench.py --compare-model: one run times the floor of two checkpoints in
alternating rounds, and checks the ratio target from the two p50s."""
import json

import pytest

from conftest import load_script



def test_compare_model_floors_in_one_run(tmp_path, checkpoint_factory):
    bench = load_script("benchmarks/serve_bench.py")
    a = checkpoint_factory(tmp_path / "a.pth", seed=0)
    b = checkpoint_factory(tmp_path / "b.pth", seed=1)
    out = tmp_path / "bench.json"
    assert bench.main(["--model", str(a), "--compare-model", str(b), "--requests", "8", "--floor-rounds", "2",
                       "--no-axon", "--no-inproc", "--torch-threads", "1", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["model"] == str(a.resolve()) and res["compare"]["model"] == str(b.resolve())
    assert res["model_sha256"] != res["compare"]["model_sha256"]
    for floor in (res["floor"], res["compare"]["floor"]):
        assert floor["total"]["n"] == 8
        assert len(floor["rounds_p50_ms"]) == 2 and all(v > 0 for v in floor["rounds_p50_ms"])
    p50, other = res["floor"]["total"]["p50_ms"], res["compare"]["floor"]["total"]["p50_ms"]
    t = res["targets"]["floor_vs_compare"]
    assert t["ratio"] == round(p50 / other, 3) == res["compare"]["floor_p50_ratio"]
    assert t["max_ratio"] == 2.0 and t["met"] == (p50 <= 2.0 * other)
    assert "predictor" not in res and "axon" not in res


def test_paired_floors_alternate_rounds(monkeypatch):
    """Rounds go a, b, a, b, ... over the same payload positions, ``reps`` requests each."""
    bench = load_script("benchmarks/serve_bench.py")
    calls = []

    def fake_time_floor(predictor, payloads, reps, start=0, into=None):
        calls.append((predictor, start, reps))
        for k in into:
            into[k].extend([float(len(calls))] * reps)
        return into

    monkeypatch.setattr(bench, "time_floor", fake_time_floor)
    monkeypatch.setattr(bench, "floor_summary", lambda p, payloads, reps, t, load: {"total": bench.summarize(t["total"])})
    fa, fb = bench.measure_floors_paired("A", "B", ["x"], reps=10, rounds=3)
    assert calls == [("A", 0, 3), ("B", 0, 3), ("A", 3, 3), ("B", 3, 3), ("A", 6, 4), ("B", 6, 4)]
    assert fa["total"]["n"] == fb["total"]["n"] == 10
    assert fa["rounds_p50_ms"] == [1.0, 3.0, 5.0] and fb["rounds_p50_ms"] == [2.0, 4.0, 6.0]


def test_compare_model_must_exist(tmp_path, checkpoint_factory):
    bench = load_script("benchmarks/serve_bench.py")
    a = checkpoint_factory(tmp_path / "a.pth", seed=0)
    with pytest.raises(SystemExit, match="no such file"):
        bench.main(["--model", str(a), "--compare-model", str(tmp_path / "missing.pth"), "--no-axon",
                    "--json", str(tmp_path / "x.json")])


def test_leaves_no_temporary_files(tmp_path, monkeypatch):
    """A run without a model file measures an untrained stand-in written to a temporary
    folder; the folder is gone afterwards, also when the run stops on an error."""
    import tempfile

    bench = load_script("benchmarks/serve_bench.py")
    made = []

    def mkdtemp(prefix=""):
        d = tmp_path / f"{prefix}{len(made)}"
        d.mkdir()
        made.append(d)
        return str(d)

    monkeypatch.setattr(tempfile, "mkdtemp", mkdtemp)
    out = tmp_path / "bench.json"
    assert bench.main(["--model", str(tmp_path / "absent.pth"), "--requests", "4", "--no-axon", "--no-inproc",
                       "--torch-threads", "1", "--json", str(out)]) == 0
    assert "untrained" in json.loads(out.read_text())["note"]
    with pytest.raises(SystemExit, match="no such file"):
        bench.main(["--model", str(tmp_path / "absent.pth"), "--compare-model", str(tmp_path / "missing.pth"),
                    "--no-axon", "--json", str(tmp_path / "x.json")])
    assert len(made) == 2 and not any(d.exists() for d in made)
