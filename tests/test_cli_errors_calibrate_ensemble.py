"""Errors and outcomes an operator audit found unclear in ``bitmind.calibrate``,
``bitmind.ensemble`` and checkpoint loading.

* ``--out`` naming a folder: calibrate ran the whole evaluation, then failed with
  ``[Errno 21] Is a directory: '/.tmp...' -> '/tmp'``; ensemble printed argparse's usage and
  the same errno. Now one line, ``error: --out ... is a folder; name a file``, exit 2, before
  any picture or member is read.
* calibrate without ``--out`` rewrote the model in place and only printed a JSON record
  (``"kept"``): now a last line on stderr says what was written and what it serves with.
* a file that does not load: torch's first line cut at 200 characters (mid-sentence, and
  advising ``weights_only=False``). Now a plain cause told from the bytes, with the
  exception's class name kept.
"""
from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bitmind.checkpoint import CheckpointError, file_sha256, model_meta, read_checkpoint, save_checkpoint
from bitmind.cli import calibrate
from bitmind.cli import ensemble
from bitmind.models import build_model

from eval_helpers import solid_image, solid_two_class_folder

REPO = Path(__file__).resolve().parents[1]
STORED = {"temperature": 0.7, "logit_bias": -1.0}
TORCH_ADVICE = ("weights_only", "Weights only load failed", "If you are seeing", "In PyTorch 2.6")


def _brightness(path, gain: float = 20.0, **meta):
    m = build_model("test_brightness", gain=gain)
    return save_checkpoint(m, path, meta=model_meta(m, arch="test_brightness", **meta))


def _tiny_npr(path, seed: int = 0, legacy: bool = False):
    torch.manual_seed(seed)
    m = build_model("npr", layers=[1, 1], width=8)
    if legacy:  # torch's pre-1.6 (non-zip) format, as some reference weights are
        torch.save({"model": m.state_dict(), "meta": model_meta(m)}, path, _use_new_zipfile_serialization=False)
        return Path(path)
    return save_checkpoint(m, path)


@pytest.fixture()
def data(tmp_path):
    return solid_two_class_folder(tmp_path / "data")


@pytest.fixture()
def no_evaluation(monkeypatch):
    """Any evaluation or member read fails the test: the refusal must come first."""
    def boom(*a, **k):
        pytest.fail("evaluated / read a model before refusing --out")
    for name in ("load_model", "build_dataset", "collect_predictions"):
        monkeypatch.setattr(calibrate, name, boom)
    monkeypatch.setattr(ensemble, "read_checkpoint", boom)


def _one_error_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    assert "Errno" not in err and "Traceback" not in err and "usage:" not in err
    return lines[0]


# --- --out naming a folder ----------------------------------------------------------------

def test_calibrate_refuses_a_folder_out_before_evaluating(tmp_path, data, no_evaluation, capsys):
    model = tmp_path / "m.pth"
    model.write_bytes(b"never read")
    rc = calibrate.main(["--min_per_class", "0", "--model", str(model), "--data", str(data), "--split", "all", "--device", "cpu", "--out", str(tmp_path)])
    line = _one_error_line(capsys.readouterr().err)
    assert rc == 2 and "--out" in line and "is a folder" in line
    assert model.read_bytes() == b"never read"
    with pytest.raises(ValueError, match="is a folder"):  # the library function refuses it too
        calibrate.calibrate(str(model), [str(data)], str(tmp_path), device="cpu")


def test_ensemble_refuses_a_folder_out_before_reading_members(tmp_path, no_evaluation, capsys):
    a, b = tmp_path / "a.pth", tmp_path / "b.pth"
    a.write_bytes(b"x")
    b.write_bytes(b"y")
    with pytest.raises(SystemExit) as e:
        ensemble.main(["--members", str(a), str(b), "--out", str(tmp_path)])
    line = _one_error_line(capsys.readouterr().err)
    assert e.value.code == 2 and "--out" in line and "is a folder" in line
    with pytest.raises(ValueError, match="is a folder"):
        ensemble.build_ensemble_checkpoint([a, b], tmp_path)


def test_python_m_calibrate_and_ensemble_say_one_line_for_a_folder_out(tmp_path, data):
    """As the operator ran them: ``python -m ...``, no evaluation output before the error."""
    model = _tiny_npr(tmp_path / "m.pth")  # a model any process can build: the old code evaluated it, then failed
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    runs = {
        "calibrate": [sys.executable, "-m", "bitmind.calibrate", "--model", str(model), "--data", str(data),
                      "--split", "val", "--seeds", "0", "--device", "cpu", "--out", str(tmp_path)],
        "ensemble": [sys.executable, "-m", "bitmind.ensemble", "--members", str(model), str(model), "--out", str(tmp_path)],
    }
    for name, cmd in runs.items():
        res = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
        assert res.returncode == 2, (name, res.stderr)
        line = _one_error_line(res.stderr)
        assert line == f"error: --out {tmp_path} is a folder; name a file", (name, res.stderr)
        assert "evaluating" not in res.stderr and "fitting" not in res.stderr and not res.stdout, name


# --- what calibrate wrote -----------------------------------------------------------------

def test_calibrate_says_it_overwrote_the_model_in_place_and_what_it_stored(tmp_path, data, capsys):
    model = _brightness(tmp_path / "m.pth")  # no stored calibration: the identity map is in place
    sha = file_sha256(model)
    assert calibrate.main(["--min_per_class", "0", "--model", str(model), "--data", str(data), "--split", "all", "--device", "cpu"]) == 0
    out, err = capsys.readouterr()
    meta = read_checkpoint(model)[1]
    rec = meta["metrics"]["calibration"]
    assert rec["kept"] is True and file_sha256(model) != sha
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"wrote {model} in place") and "reloads it" in last
    assert f"T={meta['temperature']:.4g}, bias={meta['logit_bias']:+.4g} stored" in last
    assert "was T=1, bias=+0" in last and "the new fit" in last and "on 16 pictures" in last


def test_calibrate_says_when_the_stored_calibration_stays_and_that_the_file_is_still_rewritten(tmp_path, capsys):
    """``kept: false`` means the new fit lost to the calibration in place: the file keeps that
    calibration but is still rewritten (a new record in its metadata), which the line says."""
    root = tmp_path / "outlier"  # dark real photos, bright fakes and one black fake: the fit does worse than STORED
    for k, level in enumerate([60, 70, 80, 90, 100, 110, 120, 140]):
        solid_image(root / "real" / "cam" / f"r{k}.png", level)
    for k, level in enumerate([135, 150, 160, 170, 180, 190, 200, 0]):
        solid_image(root / "fake" / "gen" / f"f{k}.png", level)
    model = _brightness(tmp_path / "m.pth", **STORED)
    out = tmp_path / "cal.pth"
    assert calibrate.main(["--min_per_class", "0", "--model", str(model), "--data", str(root), "--split", "all", "--device", "cpu", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    meta = read_checkpoint(out)[1]
    assert meta["metrics"]["calibration"]["kept"] is False
    assert (meta["temperature"], meta["logit_bias"]) == (0.7, -1.0)
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"wrote {out}:") and "in place" not in last and "in force" in last
    assert "stored calibration T=0.7, bias=-1 is unchanged" in last and "not kept" in last
    assert "only the calibration record in its metadata is new" in last


def test_calibrate_help_shows_the_split_default(capsys):
    with pytest.raises(SystemExit):
        calibrate.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: val)" in text and "in place" in text


# --- why a checkpoint does not load -------------------------------------------------------

class _CodeCarrier:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _zip_bytes(tmp_path):
    return _tiny_npr(tmp_path / "src.pth").read_bytes()


def _legacy_bytes(tmp_path):
    return _tiny_npr(tmp_path / "src_legacy.pth", legacy=True).read_bytes()


def _safetensors_bytes(tmp_path):
    torch.manual_seed(0)
    return save_checkpoint(build_model("npr", layers=[1, 1], width=8), tmp_path / "src.safetensors").read_bytes()


NOT_A_MODEL = "not a model file (neither a torch zip nor safetensors)"
TRUNCATED = "incomplete or truncated (a copy in progress?)"
REFUSED = "holds pickled objects that are not plain tensors/metadata: refused"

CASES = {
    # name: (file name, writer(tmp_path, path), cause, exception class named where torch's is always the same;
    # a cut zip gives RuntimeError or OSError depending on where it ends)
    "text file": ("m.pth", lambda t, p: p.write_text("this is a text file, not weights\n" * 4), NOT_A_MODEL, None),
    "random bytes": ("m.pth", lambda t, p: p.write_bytes(bytes(range(256)) * 8), NOT_A_MODEL, None),
    "zip carrying code": ("m.pth", lambda t, p: torch.save({"model": _CodeCarrier(t / "marker")}, p), REFUSED, "UnpicklingError"),
    "legacy pickle carrying code": ("m.pth", lambda t, p: torch.save({"model": _CodeCarrier(t / "marker")}, p,
                                                                     _use_new_zipfile_serialization=False), REFUSED, "UnpicklingError"),
    "zip cut in half": ("m.pth", lambda t, p: p.write_bytes(_zip_bytes(t)[: len(_zip_bytes(t)) // 2]), TRUNCATED, None),
    "zip missing its last bytes": ("m.pth", lambda t, p: p.write_bytes(_zip_bytes(t)[:-10]), TRUNCATED, None),
    "legacy cut in half": ("m.pth", lambda t, p: p.write_bytes(_legacy_bytes(t)[: len(_legacy_bytes(t)) // 2]), TRUNCATED, None),
    "empty file": ("m.pth", lambda t, p: p.write_bytes(b""), TRUNCATED, "EOFError"),
    "safetensors cut": ("m.safetensors", lambda t, p: p.write_bytes(_safetensors_bytes(t)[:-100]), TRUNCATED, None),
    "text named .safetensors": ("m.safetensors", lambda t, p: p.write_text("not a model at all, just some words"), NOT_A_MODEL, None),
}


def _assert_plain(msg: str, cause: str, cls: str | None):
    assert cause in msg, msg
    for advice in TORCH_ADVICE:
        assert advice not in msg, msg
    assert "\n" not in msg and msg.rstrip().endswith(")"), msg  # one line, ending where it should
    assert "(torch.load: " in msg or "(safetensors: " in msg, msg  # the exception's class, for debugging
    if cls:
        assert f": {cls}" in msg, msg


@pytest.mark.parametrize("case", list(CASES))
def test_a_file_that_does_not_load_names_a_plain_cause(case, tmp_path):
    name, write, cause, cls = CASES[case]
    path = tmp_path / name
    write(tmp_path, path)
    with pytest.raises(CheckpointError) as e:
        read_checkpoint(path)
    _assert_plain(str(e.value), cause, cls)
    assert str(path) in str(e.value)
    with pytest.raises(CheckpointError) as e:  # the same bytes handed over (the hot reloader's path)
        read_checkpoint(path, data=path.read_bytes())
    _assert_plain(str(e.value), cause, cls)
    assert not (tmp_path / "marker").exists()  # pickled code never ran


def test_good_files_of_every_format_still_load(tmp_path):
    for path in (_tiny_npr(tmp_path / "z.pth"), _tiny_npr(tmp_path / "l.pth", legacy=True)):
        state, _ = read_checkpoint(path)
        assert state and all(isinstance(v, torch.Tensor) for v in state.values())
    (tmp_path / "s.safetensors").write_bytes(_safetensors_bytes(tmp_path))
    assert read_checkpoint(tmp_path / "s.safetensors")[0]


def test_a_plain_pickle_is_refused_by_name(tmp_path):
    with open(tmp_path / "p.pth", "wb") as f:
        pickle.dump({"model": _CodeCarrier(tmp_path / "marker")}, f)
    with pytest.raises(CheckpointError) as e:
        read_checkpoint(tmp_path / "p.pth")
    _assert_plain(str(e.value), "refused", "UnpicklingError")
    assert "plain Python pickle" in str(e.value) and not (tmp_path / "marker").exists()


def test_the_wrong_suffix_is_named(tmp_path):
    (tmp_path / "st.pth").write_bytes(_safetensors_bytes(tmp_path))
    with pytest.raises(CheckpointError, match=r"a safetensors file named \.pth: name it \.safetensors"):
        read_checkpoint(tmp_path / "st.pth")
    (tmp_path / "t.safetensors").write_bytes(_zip_bytes(tmp_path))
    with pytest.raises(CheckpointError, match=r"a torch checkpoint, not safetensors: name it \.pth"):
        read_checkpoint(tmp_path / "t.safetensors")


def test_missing_is_not_found_and_a_folder_is_a_folder(tmp_path):
    with pytest.raises(CheckpointError) as e:
        read_checkpoint(tmp_path / "absent.pth")
    assert str(e.value) == f"model file not found: {tmp_path / 'absent.pth'}"
    assert "changing" not in str(e.value)
    with pytest.raises(CheckpointError) as e:
        read_checkpoint(tmp_path)
    assert str(e.value) == f"{tmp_path} is a folder, not a model file"


def test_commands_report_the_plain_cause(tmp_path, data, capsys):
    """calibrate and ensemble pass the cause through in their one error line."""
    good = _tiny_npr(tmp_path / "good.pth")
    cut = tmp_path / "cut.pth"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(SystemExit) as e:
        ensemble.main(["--members", str(good), str(cut), "--out", str(tmp_path / "e.pth")])
    line = _one_error_line(capsys.readouterr().err)
    assert e.value.code == 2 and TRUNCATED in line and "weights_only" not in line
    evil = tmp_path / "evil.pth"
    torch.save({"model": _CodeCarrier(tmp_path / "marker")}, evil)
    assert calibrate.main(["--min_per_class", "0", "--model", str(evil), "--data", str(data), "--device", "cpu", "--out", str(tmp_path / "c.pth")]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert REFUSED in line and "weights_only" not in line and not (tmp_path / "marker").exists()


def test_an_ensemble_too_large_for_a_miner_s_default_says_which_option_serves_it(tmp_path, capsys, monkeypatch):
    """An ensemble of large members can pass the miner's default --neuron.max_model_mb; it was
    written without a word and refused unread at the miner's start."""
    from bitmind import checkpoint
    from bitmind.checkpoint import model_file_problem

    a, b = _tiny_npr(tmp_path / "a.pth"), _tiny_npr(tmp_path / "b.pth")
    out = ensemble.main(["--members", str(a), str(b), "--out", str(tmp_path / "small.pth")])
    assert "note:" not in capsys.readouterr().out and model_file_problem(out) is None
    cap = out.stat().st_size - 1
    monkeypatch.setattr(checkpoint, "MAX_MODEL_BYTES", cap)
    out = ensemble.main(["--members", str(a), str(b), "--out", str(tmp_path / "large.pth")])
    said = capsys.readouterr().out
    assert f"wrote {out}" in said and "--neuron.max_model_mb" in said and out.is_file()
    # the start-up check of the demo and the harness refuses it from its size, unread
    monkeypatch.setattr(checkpoint, "load_model", lambda *a, **k: pytest.fail("a file over the cap was read"))
    assert f"more than the {cap} bytes a model file may be" in model_file_problem(out)
