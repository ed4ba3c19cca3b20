"""Benchmark outputs written whole: ``generalisation.py analyse`` (its ``--out`` JSON, its
``--markdown`` tables, its ``--figure``), ``residual_logo.py`` (``extract``'s features,
``logo``'s scores and spec) and ``periodic_probe.py`` (its features cache) each go to a
temporary file in the same folder that then replaces the old one (``bitmind.common.atomic_write``),
so a crash or a Ctrl-C mid-write leaves the old file as it was (or none, where there was
none), never a truncated one for a later step to read. Each writer is stopped after half its
bytes; the normal path writes what a reader reads back."""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib.figure
import numpy as np
import pytest

from conftest import load_script
from test_generalisation import real_fold_scores
from test_logo_benchmarks import _probe_features
from test_residual_logo import _pool


@pytest.fixture(scope="module")
def gen():
    return load_script("benchmarks/generalisation.py")


@pytest.fixture(scope="module")
def residual():
    return load_script("benchmarks/residual_logo.py")


@pytest.fixture(scope="module")
def periodic():
    return load_script("benchmarks/periodic_probe.py")


def _half_then_interrupt_savez(file, *args, **kwargs):
    """A stand-in for ``np.savez_compressed`` that writes the start of a file, then is stopped by a Ctrl-C."""
    half = b"PK\x03\x04 half a zip"
    if hasattr(file, "write"):
        file.write(half)
    else:
        Path(file if str(file).endswith(".npz") else f"{file}.npz").write_bytes(half)
    raise KeyboardInterrupt


def _half_then_interrupt_write_text(monkeypatch, when=lambda text: True):
    """``Path.write_text`` writes half of a text ``when`` says so, then is stopped by a Ctrl-C."""
    real = Path.write_text

    def write_text(self, data, *args, **kwargs):
        if not when(data):
            return real(self, data, *args, **kwargs)
        real(self, data[: len(data) // 2], *args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(Path, "write_text", write_text)


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _same_npz(path: Path, want: dict) -> bool:
    with np.load(path) as z:
        return sorted(z.files) == sorted(want) and all(np.array_equal(z[k], v) for k, v in want.items())


# ------------------------------------------------------------------ generalisation.py analyse
def _scored_sweep(tmp_path: Path) -> tuple[Path, Path]:
    """A scores file and a logo_spec.json that ``analyse`` reads: recipe ``m``, folds sdxl and real-b."""
    from bitmind.training.logo import logo_sweep_spec

    spec = logo_sweep_spec({"recipes": {"m": {}}, "folds": ["sdxl", "real-b"]}, ["fake/sdxl", "real/a", "real/b"])
    data = real_fold_scores(60)
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    np.savez(inputs / "scores.npz", **data)
    (inputs / "logo_spec.json").write_text(json.dumps({"base": {"epochs": 1}, **spec}))
    return inputs / "scores.npz", inputs / "logo_spec.json"


def _analyse_argv(tmp_path: Path, out: Path, figure: str, markdown: Path | None = None) -> list[str]:
    scores, spec = _scored_sweep(tmp_path)
    return ["analyse", "--sweep", str(tmp_path), "--scores", str(scores), "--logo_spec", str(spec), "--recipe", "m",
            "--out", str(out), "--figure", figure] + (["--markdown", str(markdown)] if markdown else [])


def test_analyse_writes_the_json_tables_and_figure_a_reader_reads_back(gen, tmp_path):
    outs = tmp_path / "outs"
    out, md, fig = outs / "g.json", outs / "tables" / "g.md", outs / "g.png"  # folders that do not exist yet
    result = gen.main(_analyse_argv(tmp_path, out, str(fig), md))
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    assert out.read_text() == json.dumps(result, indent=2)  # the bytes a plain write made
    assert md.read_text() == gen.markdown_tables(result) + "\n"
    assert fig.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # the format from the suffix, not from the temporary name
    assert _names(outs) == ["g.json", "g.png", "tables"] and _names(outs / "tables") == ["g.md"]
    svg = outs / "g.svg"
    gen.plot(result, svg)
    assert svg.read_bytes().lstrip().startswith(b"<?xml") and b"<svg" in svg.read_bytes()
    assert _names(outs) == ["g.json", "g.png", "g.svg", "tables"]


def test_analyse_interrupted_while_the_json_is_written_leaves_the_old_one_whole(gen, tmp_path, monkeypatch):
    outs = tmp_path / "outs"
    outs.mkdir()
    out = outs / "g.json"
    out.write_text('{"old": true}')
    argv = _analyse_argv(tmp_path, out, "")
    _half_then_interrupt_write_text(monkeypatch)
    with pytest.raises(SystemExit) as stopped:  # main ends a Ctrl-C with one line and 130
        gen.main(argv)
    monkeypatch.undo()
    assert stopped.value.code == 130
    assert out.read_text() == '{"old": true}'
    assert _names(outs) == ["g.json"]  # no temporary file left beside it


def test_analyse_interrupted_while_the_tables_are_written_leaves_the_old_ones_whole(gen, tmp_path, monkeypatch):
    outs = tmp_path / "outs"
    outs.mkdir()
    out, md = outs / "g.json", outs / "g.md"
    md.write_text("old tables\n")
    argv = _analyse_argv(tmp_path, out, "", md)
    _half_then_interrupt_write_text(monkeypatch, when=lambda text: text.startswith("### "))
    with pytest.raises(SystemExit) as stopped:
        gen.main(argv)
    monkeypatch.undo()
    assert stopped.value.code == 130
    assert md.read_text() == "old tables\n"
    assert "summary" in json.loads(out.read_text())  # the JSON before it was written, whole
    assert _names(outs) == ["g.json", "g.md"]


def test_analyse_interrupted_while_the_figure_is_saved_leaves_the_old_one_whole(gen, tmp_path, monkeypatch):
    outs = tmp_path / "outs"
    outs.mkdir()
    out, fig = outs / "g.json", outs / "g.png"
    fig.write_bytes(b"old figure")
    argv = _analyse_argv(tmp_path, out, str(fig))

    def savefig(self, fname, *args, **kwargs):
        Path(fname).write_bytes(b"\x89PNG half a figure")
        raise KeyboardInterrupt

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", savefig)
    with pytest.raises(SystemExit) as stopped:
        gen.main(argv)
    monkeypatch.undo()
    assert stopped.value.code == 130
    assert fig.read_bytes() == b"old figure"
    assert _names(outs) == ["g.json", "g.png"]


def test_train_reads_the_spec_once_for_the_sweep_folder_and_the_sweep(gen, tmp_path, monkeypatch):
    """``main`` reads ``--spec`` once: the sweep folder (its ``checkpoints_dir``) and ``cmd_train``
    get the same JSON. A spec that cannot be read is still one usage line (exit 2)."""
    from bitmind.training import sweep

    spec = {"base": {"checkpoints_dir": str(tmp_path / "ck")}, "recipes": {}}
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps(spec))
    reads, marks, trained = [], [], []
    real_read_spec = sweep.read_spec
    monkeypatch.setattr(sweep, "read_spec", lambda path: reads.append(path) or real_read_spec(path))
    monkeypatch.setattr(sweep, "sweep_marks", lambda folder: marks.append(folder) or {})

    def cmd_train(args, logo=None):
        trained.append(logo)
        return tmp_path / "ck" / "run"

    monkeypatch.setattr(gen, "cmd_train", cmd_train)
    gen.main(["train", "--spec", str(spec_path), "--name", "run"])
    assert reads == [str(spec_path)] and trained == [spec] and marks == [tmp_path / "ck" / "run"]
    with pytest.raises(SystemExit) as bad:
        gen.main(["train", "--spec", str(tmp_path / "missing.json"), "--name", "run"])
    assert bad.value.code == 2 and len(trained) == 1


# ------------------------------------------------------------------------- residual_logo.py
def test_extract_writes_features_a_reader_reads_back_and_an_interrupted_one_leaves_the_old(residual, tmp_path,
                                                                                           monkeypatch):
    root = _pool(tmp_path / "pool", np.random.default_rng(1), per_source=4)
    outs = tmp_path / "outs"
    outs.mkdir()
    feats = outs / "features.npz"
    old = {"validator/old": np.arange(3, dtype=np.float32)}
    np.savez_compressed(feats, **old)
    argv = ["extract", "--challenge_data", str(root), "--features", str(feats), "--workers", "0"]
    monkeypatch.setattr(np, "savez_compressed", _half_then_interrupt_savez)
    with pytest.raises(KeyboardInterrupt):
        residual.main(argv)
    monkeypatch.undo()
    assert _same_npz(feats, old) and _names(outs) == ["features.npz"]

    residual.main(argv)
    with np.load(feats) as z:
        assert z["validator/features"].shape[0] == len(z["validator/source"]) == 16
        assert not np.isnan(z["validator/features"]).any()
    assert _names(outs) == ["features.npz"]
    residual.main(["extract", "--challenge_data", str(root), "--features", str(outs / "bare"), "--workers", "0"])
    assert _names(outs) == ["bare.npz", "features.npz"]  # .npz added, as np.savez_compressed adds it


def _logo_inputs(tmp_path: Path) -> list[str]:
    """A features file, a LOGO run's scores and spec on the same pictures (recipe m, fold gen-b):
    ``residual_logo.py logo``'s arguments, less the outputs."""
    rng = np.random.default_rng(0)
    source = np.repeat(["real/cam-a", "real/cam-b", "fake/gen-a", "fake/gen-b"], 30)
    label = np.char.startswith(source, "fake/").astype(np.int8)
    split = np.tile(["train", "val", "test"], 40)
    x = rng.normal(0, 1, (len(source), 12)).astype(np.float32)
    x[:, 0] += 2.0 * label
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    meta = {"validator/source": source, "validator/split": split, "validator/label": label}
    np.savez_compressed(inputs / "features.npz", **meta, **{"validator/features": x})
    spec = {"base": {}, "variants": {"m": {}, "m.minus-gen-b": {"exclude_sources": ["fake/gen-b"]}},
            "logo": {"folds": ["gen-b"], "recipes": ["m"], "controls": []}}
    np.savez(inputs / "scores.npz", **meta, **{f"validator/{v}": rng.normal(0, 1, len(source)).astype(np.float32)
                                               for v in spec["variants"]})
    (inputs / "spec.json").write_text(json.dumps(spec))
    return ["logo", "--features", str(inputs / "features.npz"), "--scores", str(inputs / "scores.npz"),
            "--spec", str(inputs / "spec.json"), "--recipe", "m"]


def test_logo_writes_scores_and_spec_a_run_reads_back(residual, tmp_path):
    outs = tmp_path / "outs"
    argv = _logo_inputs(tmp_path) + ["--out_scores", str(outs / "res.npz"), "--out_spec", str(outs / "res.json")]
    residual.main(argv)  # into a folder that does not exist yet
    with np.load(outs / "res.npz") as z:
        assert {"validator/residual.minus-gen-b", "validator/stack.minus-gen-b", "validator/m.minus-gen-b"} <= set(z.files)
        assert len(z["validator/residual"]) == len(z["validator/source"]) == 120
    spec = json.loads((outs / "res.json").read_text())
    assert spec["logo"]["recipes"] == ["m", "residual", "stack"] and "residual.minus-gen-b" in spec["variants"]
    assert (outs / "res.json").read_text() == json.dumps(spec, indent=2)
    assert _names(outs) == ["res.json", "res.npz"]


def test_logo_interrupted_while_the_scores_are_written_leaves_both_old_files(residual, tmp_path, monkeypatch):
    outs = tmp_path / "outs"
    outs.mkdir()
    old = {"validator/old": np.arange(3, dtype=np.float32)}
    np.savez_compressed(outs / "res.npz", **old)
    (outs / "res.json").write_text('{"old": true}')
    argv = _logo_inputs(tmp_path) + ["--out_scores", str(outs / "res.npz"), "--out_spec", str(outs / "res.json")]
    monkeypatch.setattr(np, "savez_compressed", _half_then_interrupt_savez)
    with pytest.raises(KeyboardInterrupt):
        residual.main(argv)
    monkeypatch.undo()
    assert _same_npz(outs / "res.npz", old) and (outs / "res.json").read_text() == '{"old": true}'
    assert _names(outs) == ["res.json", "res.npz"]


def test_logo_interrupted_while_the_spec_is_written_leaves_the_old_spec(residual, tmp_path, monkeypatch):
    outs = tmp_path / "outs"
    outs.mkdir()
    (outs / "res.json").write_text('{"old": true}')
    argv = _logo_inputs(tmp_path) + ["--out_scores", str(outs / "res.npz"), "--out_spec", str(outs / "res.json")]
    _half_then_interrupt_write_text(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        residual.main(argv)
    monkeypatch.undo()
    assert (outs / "res.json").read_text() == '{"old": true}'
    with np.load(outs / "res.npz") as z:  # the scores, written before it, whole
        assert "validator/stack.minus-gen-b" in z.files
    assert _names(outs) == ["res.json", "res.npz"]


# ------------------------------------------------------------------------ periodic_probe.py
def test_periodic_probe_features_cache_is_read_back_and_an_interrupted_one_is_not_left(periodic, tmp_path,
                                                                                        monkeypatch):
    """The cache is read when it exists, so a half-written one would be read next time (and
    fail): stopped mid-write, no cache is left (nor a temporary file) and the next run extracts
    again; written whole, the next run reads it instead of extracting."""
    feats = _probe_features()
    extracted = []
    monkeypatch.setattr(periodic, "extract", lambda *a, **k: extracted.append(a) or feats)
    cache = tmp_path / "cache" / "features.npz"
    argv = ["--data", "unused", "--features", str(cache)]
    real_savez = np.savez_compressed
    monkeypatch.setattr(np, "savez_compressed", _half_then_interrupt_savez)
    (tmp_path / "cache").mkdir()
    with pytest.raises(KeyboardInterrupt):
        periodic.main(argv)
    monkeypatch.setattr(np, "savez_compressed", real_savez)
    assert _names(tmp_path / "cache") == [] and len(extracted) == 1

    first = periodic.main(argv)
    assert len(extracted) == 2 and _names(tmp_path / "cache") == ["features.npz"]
    assert _same_npz(cache, feats)
    second = periodic.main(argv)
    assert len(extracted) == 2  # read from the cache, not extracted again
    assert json.dumps(second) == json.dumps(first)


def test_periodic_probe_features_cache_named_without_npz_is_found_again(periodic, tmp_path, monkeypatch):
    """``--features cache`` is written as ``cache.npz`` (as np.savez names it): the next run
    must look for that file, not for ``cache``, or the cache is never used."""
    feats = _probe_features()
    extracted = []
    monkeypatch.setattr(periodic, "extract", lambda *a, **k: extracted.append(a) or feats)
    argv = ["--data", "unused", "--features", str(tmp_path / "cache")]
    periodic.main(argv)
    periodic.main(argv)
    assert _names(tmp_path) == ["cache.npz"] and len(extracted) == 1
