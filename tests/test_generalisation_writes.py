"""``benchmarks/generalisation.py``'s options taken as given (``--workers 0`` is 0 data
workers, not the default 4) and its files written whole: the scores ``.npz`` (``score``,
``merge``) and ``logo_spec.json`` (``score --pools``, ``merge``) go to a temporary file in the
same folder that then replaces the old one, so a crash or a Ctrl-C mid-write leaves the old
file as it was, never a truncated one for ``analyse`` or ``--resume`` to read. No model is
trained or run: the scoring itself is replaced where a test needs none."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import load_script


@pytest.fixture(scope="module")
def gen():
    return load_script("benchmarks/generalisation.py")


def _sweep(tmp_path: Path) -> tuple[Path, dict]:
    """A sweep folder with one trained variant ``a`` (its checkpoint only has to exist) and its logo_spec.json."""
    sweep = tmp_path / "sweep"
    (sweep / "a").mkdir(parents=True)
    (sweep / "a" / "model_epoch_best.pth").write_bytes(b"not read: score_models is replaced")
    spec = {"base": {"data": ["crops"], "challenge_data": ["chal"]}, "variants": {"a": {"exclude_sources": []}},
            "logo": {"folds": [], "recipes": ["a"], "controls": []}}
    (sweep / "logo_spec.json").write_text(json.dumps(spec, indent=2))
    return sweep, spec


def _recording_score_models(calls: list):
    def fake(models, regimes, out, **kwargs):
        calls.append(kwargs)
        return Path(out)
    return fake


@pytest.mark.parametrize("argv, workers", [([], 4), (["--workers", "0"], 0), (["--workers", "2"], 2)])
def test_score_takes_workers_as_given_and_4_only_when_left_out(gen, tmp_path, monkeypatch, argv, workers):
    sweep, _ = _sweep(tmp_path)
    calls = []
    monkeypatch.setattr(gen, "score_models", _recording_score_models(calls))
    gen.main(["score", "--sweep", str(sweep), *argv])
    assert len(calls) == 1 and calls[0]["workers"] == workers


def _half_then_interrupt(real_bytes: bytes = b"PK\x03\x04 half a zip"):
    """A stand-in for ``np.savez_compressed`` that writes the start of a file, then is stopped by a Ctrl-C."""
    def savez(file, *args, **kwargs):
        if hasattr(file, "write"):
            file.write(real_bytes)
        else:
            Path(file if str(file).endswith(".npz") else f"{file}.npz").write_bytes(real_bytes)
        raise KeyboardInterrupt
    return savez


def _old_scores(path: Path) -> dict:
    old = {"validator/source": np.asarray(["real/a", "fake/b"]), "validator/old": np.asarray([0.5, -0.5], dtype=np.float32)}
    np.savez_compressed(path, **old)
    return old


def _same_scores(path: Path, want: dict) -> bool:
    with np.load(path) as z:
        return sorted(z.files) == sorted(want) and all(np.array_equal(z[k], v) for k, v in want.items())


def test_score_models_interrupted_mid_write_leaves_the_old_scores_whole(tmp_path, monkeypatch):
    from bitmind.training import logo

    out = tmp_path / "logo_scores.npz"
    old = _old_scores(out)
    monkeypatch.setattr(logo.np, "savez_compressed", _half_then_interrupt())
    with pytest.raises(KeyboardInterrupt):
        logo.score_models({}, {}, out, device="cpu", workers=0)
    monkeypatch.undo()
    assert _same_scores(out, old)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["logo_scores.npz"]  # no temporary file left beside it


def test_score_models_writes_the_named_file_and_nothing_else(tmp_path):
    from bitmind.training import logo

    out = tmp_path / "sub" / "scores.npz"  # a folder that does not exist yet
    _old_scores(tmp_path / "other.npz")
    assert logo.score_models({}, {}, out, device="cpu", workers=0) == out
    with np.load(out) as z:
        assert z.files == []
    assert sorted(p.name for p in out.parent.iterdir()) == ["scores.npz"]
    assert (out.stat().st_mode & 0o777) == ((tmp_path / "other.npz").stat().st_mode & 0o777)  # as a plain write makes it


def test_score_pools_interrupted_while_logo_spec_is_written_leaves_it_whole(gen, tmp_path, monkeypatch, capsys):
    """The scores were written (whole) when the Ctrl-C came, while the pooled arms were added
    to logo_spec.json: the spec is as it was, and the line says the scores file is complete."""
    sweep, spec = _sweep(tmp_path)
    before = (sweep / "logo_spec.json").read_text()

    def score_models(models, regimes, out, **kwargs):
        np.savez_compressed(out, **{"validator/a": np.zeros(2, dtype=np.float32)})
        return Path(out)

    monkeypatch.setattr(gen, "score_models", score_models)
    real_write_text = Path.write_text

    def half_then_interrupt(self, data, *args, **kwargs):
        real_write_text(self, data[: len(data) // 2], *args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(Path, "write_text", half_then_interrupt)
    with pytest.raises(SystemExit) as stopped:  # main ends a Ctrl-C with one line and 130
        gen.main(["score", "--sweep", str(sweep), "--pools", "top25", "--scores", str(tmp_path / "s.npz")])
    monkeypatch.undo()
    assert stopped.value.code == 130
    assert (sweep / "logo_spec.json").read_text() == before and json.loads(before) == spec
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"stopped (Ctrl-C) just after {tmp_path / 's.npz'} was written (it is whole); run score again")
    assert sorted(p.name for p in sweep.iterdir()) == ["a", "logo_spec.json"]

    monkeypatch.setattr(gen, "score_models", _recording_score_models([]))
    gen.main(["score", "--sweep", str(sweep), "--pools", "top25", "--scores", str(tmp_path / "s.npz")])
    after = json.loads((sweep / "logo_spec.json").read_text())  # uninterrupted: the pooled arm joins the spec
    assert "a_top25" in after["variants"] and after["logo"]["recipes"] == ["a", "a_top25"]
    assert sorted(p.name for p in sweep.iterdir()) == ["a", "logo_spec.json"]


def test_merge_interrupted_mid_write_leaves_the_old_files_whole(gen, tmp_path, monkeypatch):
    scores, spec_path = tmp_path / "merged.npz", tmp_path / "merged.json"
    old = _old_scores(scores)
    spec_path.write_text('{"old": true}')
    new = {"validator/source": np.asarray(["real/a"]), "validator/x": np.asarray([1.0], dtype=np.float32)}
    monkeypatch.setattr(gen, "merge_runs", lambda runs: (new, {"variants": {"x": {}, "y": {}}}))
    argv = ["merge", "--runs", "x=A:r", "y=B:r", "--scores", str(scores), "--logo_spec", str(spec_path)]
    monkeypatch.setattr(np, "savez_compressed", _half_then_interrupt())
    with pytest.raises(SystemExit) as stopped:
        gen.main(argv)
    monkeypatch.undo()
    assert stopped.value.code == 130
    assert _same_scores(scores, old) and spec_path.read_text() == '{"old": true}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merged.json", "merged.npz"]

    monkeypatch.setattr(gen, "merge_runs", lambda runs: (new, {"variants": {"x": {}, "y": {}}}))
    gen.main(argv)
    assert _same_scores(scores, new) and json.loads(spec_path.read_text()) == {"variants": {"x": {}, "y": {}}}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merged.json", "merged.npz"]
