"""Operator audit of ``bitmind.ensemble``, ``bitmind.calibrate`` and ``--device``:

* an ensemble member that does not fit its architecture was a RuntimeError traceback (exit 1);
  now one ``error: member I of N: ...`` line, exit 2, as ``bitmind.eval`` reports the file;
* ``--device mps`` / ``xla`` / ``meta`` on a machine without them was torch's RuntimeError from
  the first tensor moved (exit 1); now one ``error: --device ...`` line, exit 2, before any work;
* Ctrl-C in calibrate / ensemble was a KeyboardInterrupt traceback; now one line, exit 130, and
  nothing half-written;
* calibrating a symlinked model in place replaced the link by a regular file and left the
  version it pointed at unchanged; now the target is replaced (atomically) and the link kept;
* ensemble said only ``wrote ... (2 members)`` of a file that is uncalibrated;
* the usage lines read ``calibrate.py`` / ``ensemble.py`` / ``model_info.py``.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from bitmind.checkpoint import model_meta, read_checkpoint, save_checkpoint
from bitmind.cli import calibrate, ensemble, model_info
from bitmind.common import check_device
from bitmind.models import build_model

from eval_helpers import save_brightness_model, solid_two_class_folder

REPO = Path(__file__).resolve().parents[1]


def _npr(path, width: int = 8, seed: int = 0, **meta):
    torch.manual_seed(seed)
    m = build_model("npr", layers=[1, 1], width=width)
    return save_checkpoint(m, path, meta=model_meta(m, **meta))


def _lying_npr(path):
    """An npr of width 16 whose metadata says width 8: its weights do not fit its config."""
    m = build_model("npr", layers=[1, 1], width=16)
    return save_checkpoint(m, path, meta={**model_meta(m), "config": {"layers": [1, 1], "width": 8}})


def _foreign(path):
    """A bare state dict of another network (no metadata: read as the default npr)."""
    torch.save(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4, 1)).state_dict(), path)
    return Path(path)


@pytest.fixture()
def data(tmp_path):
    return solid_two_class_folder(tmp_path / "data")


def _one_line(err: str, prefix: str = "error: ") -> str:
    lines = [line for line in err.strip().splitlines() if line.strip() and "WARNING" not in line]
    assert len(lines) == 1, err
    assert lines[0].startswith(prefix), err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err and "RuntimeError" not in err
    return lines[0]


def _last_line(err: str, prefix: str = "interrupted") -> str:
    """The line a Ctrl-C ends the command with (a progress bar may come before it): no traceback."""
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith(prefix), err
    return last


def _env():
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}


def _calibrate_args(model, data, *extra):
    return ["--min_per_class", "0", "--model", str(model), "--data", str(data), "--split", "all", "--device", "cpu", *extra]


# --- 1. a member that does not load -----------------------------------------------------

@pytest.mark.parametrize("bad", [_lying_npr, _foreign])
def test_an_ensemble_member_that_does_not_fit_is_one_line_exit_2(bad, tmp_path, capsys):
    good, wrong, out = _npr(tmp_path / "base.pth"), bad(tmp_path / "resnet18.pth"), tmp_path / "e.pth"
    with pytest.raises(SystemExit) as e:
        ensemble.main(["--members", str(good), str(wrong), "--out", str(out)])
    line = _one_line(capsys.readouterr().err)
    assert e.value.code == 2
    assert line.startswith(f"error: member 2 of 2: {wrong} does not fit architecture 'npr'"), line
    assert "missing" in line or "other shapes" in line
    assert not out.exists()


def test_python_m_ensemble_with_a_foreign_member(tmp_path):
    good, wrong = _npr(tmp_path / "base.pth"), _foreign(tmp_path / "resnet18.pth")
    res = subprocess.run([sys.executable, "-m", "bitmind.ensemble", "--members", str(good), str(wrong), "--out",
                          str(tmp_path / "e.pth")], capture_output=True, text=True, env=_env(), cwd=tmp_path, timeout=300)
    assert res.returncode == 2, res.stderr
    assert "member 2 of 2" in _one_line(res.stderr) and "resnet18.pth" in res.stderr
    assert not (tmp_path / "e.pth").exists()


# --- 2. devices this machine lacks --------------------------------------------------------

UNAVAILABLE = ["xla", "meta", "hpu"] + ([] if torch.backends.mps.is_available() else ["mps", "mps:0"])


@pytest.mark.parametrize("device", UNAVAILABLE)
def test_check_device_refuses_devices_it_cannot_run_on(device):
    with pytest.raises(ValueError) as e:
        check_device(device)
    msg = str(e.value)
    assert msg.startswith(f"--device {device!r}: ") and msg.endswith("use --device cpu or auto") and "\n" not in msg
    assert check_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("device", UNAVAILABLE)
@pytest.mark.parametrize("command", ["eval", "calibrate"])
def test_an_unavailable_device_is_a_usage_error(command, device, data, tmp_path, capsys):
    from bitmind.cli import eval as bm_eval

    model = save_brightness_model(tmp_path / "m.pth")
    before = model.read_bytes()
    main = bm_eval.main if command == "eval" else calibrate.main
    argv = ["--model", str(model), "--data", str(data), "--device", device] + (["--quiet"] if command == "eval" else [])
    assert main(argv) == 2
    line = _one_line(capsys.readouterr().err)
    assert line.startswith(f"error: --device {device!r}: ") and "use --device cpu or auto" in line
    assert model.read_bytes() == before


def test_the_trainer_refuses_an_unavailable_device(capsys):
    from bitmind.training.config import parse_config

    with pytest.raises(SystemExit) as e:
        parse_config(["--device", "xla"])
    assert e.value.code == 2 and "--device 'xla': not a device these commands run on" in capsys.readouterr().err


# --- 3. Ctrl-C ------------------------------------------------------------------------------

def _interrupt(*a, **k):
    raise KeyboardInterrupt


def _half_write_then_interrupt(obj, f, *a, **k):
    """torch.save cut short by a Ctrl-C: a few bytes in the file it was writing, then the interrupt."""
    Path(f).write_bytes(b"PK\x03\x04 half a checkpoint")
    raise KeyboardInterrupt


def _exit_code(main, argv) -> int:
    """The exit status ``main(argv)`` ends with; a KeyboardInterrupt that escapes it (the
    traceback an operator saw) fails the test instead of stopping the test session."""
    try:
        main(argv)
    except SystemExit as e:
        return e.code
    except KeyboardInterrupt:
        pytest.fail("the KeyboardInterrupt escaped (a traceback), not one line and exit status 130")
    pytest.fail("the command did not stop")


def _no_temporaries(folder: Path):
    assert not [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_ctrl_c_during_calibrate_inference_is_one_line_and_writes_nothing(tmp_path, data, capsys, monkeypatch):
    model = save_brightness_model(tmp_path / "m.pth")
    before = model.read_bytes()
    monkeypatch.setattr(calibrate, "collect_predictions", _interrupt)
    code = _exit_code(calibrate.main, _calibrate_args(model, data))
    line = _last_line(capsys.readouterr().err)
    assert code == 130
    assert line == f"interrupted: nothing written (the model file {model} is unchanged)"
    assert model.read_bytes() == before


@pytest.mark.parametrize("out", [False, True])
def test_ctrl_c_while_calibrate_writes_leaves_the_old_file_whole(out, tmp_path, data, capsys, monkeypatch):
    model = save_brightness_model(tmp_path / "m.pth")
    before = model.read_bytes()
    target = tmp_path / "cal.pth"
    monkeypatch.setattr(torch, "save", _half_write_then_interrupt)
    code = _exit_code(calibrate.main, _calibrate_args(model, data, *(["--out", str(target)] if out else [])))
    line = _last_line(capsys.readouterr().err)
    assert code == 130 and line.startswith("interrupted: nothing written (")
    assert model.read_bytes() == before  # the half-written temporary never replaced it
    assert not target.exists()
    if out:
        assert f"{target} was not created" in line
    _no_temporaries(tmp_path)


def test_ctrl_c_after_calibrate_wrote_says_so(tmp_path, data, capsys, monkeypatch):
    model = save_brightness_model(tmp_path / "m.pth")
    real = calibrate.store_calibration

    def store_then_interrupt(*a, **k):
        real(*a, **k)
        raise KeyboardInterrupt

    monkeypatch.setattr(calibrate, "store_calibration", store_then_interrupt)
    code = _exit_code(calibrate.main, _calibrate_args(model, data))
    line = _last_line(capsys.readouterr().err)
    assert code == 130 and line.startswith(f"interrupted after {model} was written")
    assert "calibration" in read_checkpoint(model)[1]["metrics"]


def test_ctrl_c_during_ensemble_is_one_line_and_writes_nothing(tmp_path, capsys, monkeypatch):
    a, b = _npr(tmp_path / "a.pth"), _npr(tmp_path / "b.pth", seed=1)
    out = tmp_path / "e.pth"
    monkeypatch.setattr(ensemble, "read_checkpoint", _interrupt)
    code = _exit_code(ensemble.main, ["--members", str(a), str(b), "--out", str(out)])
    assert code == 130
    assert _last_line(capsys.readouterr().err) == f"interrupted: nothing written ({out} was not created)"
    assert not out.exists()
    # interrupted while writing over an existing file: the old file stays whole
    out.write_bytes(b"the previous ensemble")
    monkeypatch.undo()
    monkeypatch.setattr(torch, "save", _half_write_then_interrupt)
    code = _exit_code(ensemble.main, ["--members", str(a), str(b), "--out", str(out)])
    assert code == 130
    assert _last_line(capsys.readouterr().err) == f"interrupted: nothing written ({out} is unchanged)"
    assert out.read_bytes() == b"the previous ensemble"
    _no_temporaries(tmp_path)


# --- 4. symlinked model files ---------------------------------------------------------------

def test_calibrate_in_place_writes_through_a_symlink_and_keeps_it(tmp_path, data, capsys):
    v14 = save_brightness_model(tmp_path / "v14.pth")
    cur = tmp_path / "cur.pth"
    cur.symlink_to("v14.pth")  # relative, as `ln -s v14.pth cur.pth` makes it
    assert calibrate.main(_calibrate_args(cur, data)) == 0
    assert cur.is_symlink() and os.readlink(cur) == "v14.pth"
    meta = read_checkpoint(v14)[1]
    assert meta["metrics"]["calibration"]["kept"] is True and meta["temperature"] != 1.0
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith(f"wrote {cur} in place through the link ({v14} replaced, the link kept)"), last
    _no_temporaries(tmp_path)


def test_calibrate_out_and_ensemble_out_symlinks_are_written_through(tmp_path, data, capsys):
    from bitmind.common import write_target

    model = save_brightness_model(tmp_path / "m.pth")
    before = model.read_bytes()
    (tmp_path / "versions").mkdir()
    target = tmp_path / "versions" / "cal.pth"
    target.write_bytes(b"old")
    link = tmp_path / "cal.pth"
    link.symlink_to(target)
    assert calibrate.main(_calibrate_args(model, data, "--out", str(link))) == 0
    assert link.is_symlink() and link.resolve() == target and model.read_bytes() == before
    assert "calibration" in read_checkpoint(target)[1]["metrics"]
    a, b = _npr(tmp_path / "a.pth"), _npr(tmp_path / "b.pth", seed=1)
    elink = tmp_path / "ens.pth"
    elink.symlink_to(target)
    ensemble.main(["--members", str(a), str(b), "--out", str(elink)])
    assert elink.is_symlink() and read_checkpoint(target)[1]["arch"] == "ensemble"
    assert write_target(elink) == target and write_target(a) == a


# --- 5. the ensemble says it is uncalibrated ------------------------------------------------

def test_ensemble_says_its_file_is_uncalibrated_and_how_to_calibrate_it(tmp_path, data, capsys):
    opts = {"data": [str(data)]}
    a = _npr(tmp_path / "a.pth", temperature=0.5, logit_bias=1.0, train_options=opts)
    b = _npr(tmp_path / "b.pth", seed=1, temperature=2.0, train_options=opts)
    out = ensemble.main(["--members", str(a), str(b), "--out", str(tmp_path / "e.pth")])
    said = capsys.readouterr().out
    assert f"wrote {out} (2 members): uncalibrated (T=1, bias=0" in said
    assert (f"python -m bitmind.calibrate --model {out} --data {data} --split val --challenge --seeds 0 1 2 3 4 5"
            in said.splitlines()[-1])
    meta = read_checkpoint(out)[1]
    assert meta.get("temperature", 1.0) == 1.0 and meta.get("logit_bias", 0.0) == 0.0
    # members trained on other data: the command names DIR for the operator to fill in
    c = _npr(tmp_path / "c.pth", seed=2, train_options={"data": ["elsewhere"]})
    out = ensemble.main(["--members", str(a), str(c), "--out", str(tmp_path / "e2.pth")])
    assert f"python -m bitmind.calibrate --model {out} --data DIR --split val" in capsys.readouterr().out


def test_ensemble_help_says_the_file_is_uncalibrated(capsys):
    with pytest.raises(SystemExit) as e:
        ensemble.main(["--help"])
    text = capsys.readouterr().out
    assert e.value.code == 0 and "UNCALIBRATED" in text
    assert "python -m bitmind.calibrate --model OUT.pth --data DIR --split val --challenge" in text


# --- 6. usage lines -------------------------------------------------------------------------

@pytest.mark.parametrize("module,name", [(calibrate, "calibrate"), (ensemble, "ensemble"), (model_info, "model_info")])
def test_usage_names_the_python_m_command(module, name, capsys):
    with pytest.raises(SystemExit) as e:
        module.main(["--help"])
    assert e.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: python -m bitmind.{name} ")


def test_a_link_re_pointed_during_calibration_does_not_mix_two_versions(tmp_path, data, monkeypatch):
    """Review finding: the weights were read again through the link at the end, so a deploy
    swap (``ln -sfn v15.pth cur.pth``) during inference stored v15's weights in v14.pth with
    v14's calibration. The version the run started from is the one it calibrates."""
    v14 = save_brightness_model(tmp_path / "v14.pth", gain=10.0)
    v15 = save_brightness_model(tmp_path / "v15.pth", gain=3.0)
    v15_before = v15.read_bytes()
    cur = tmp_path / "cur.pth"
    cur.symlink_to("v14.pth")
    real_collect = calibrate.collect_predictions

    def swap_mid_run(*a, **kw):
        out = real_collect(*a, **kw)
        tmp = tmp_path / "cur.tmp"
        tmp.symlink_to("v15.pth")
        os.replace(tmp, cur)  # the deploy swap
        return out

    monkeypatch.setattr(calibrate, "collect_predictions", swap_mid_run)
    assert calibrate.main(_calibrate_args(cur, data)) == 0
    state14, meta14 = read_checkpoint(v14)
    assert float(state14["gain"]) == 10.0 and meta14["config"]["gain"] == 10.0  # v14's weights, not v15's (3.0)
    assert meta14["metrics"]["calibration"]["kept"] is True
    assert v15.read_bytes() == v15_before  # the new version is untouched


def test_links_that_loop_or_lead_nowhere_are_refused(tmp_path, data, capsys):
    from bitmind.common import write_target

    model = save_brightness_model(tmp_path / "m.pth")
    loop = tmp_path / "loop.pth"
    loop.symlink_to("loop.pth")
    with pytest.raises(ValueError, match="loops back"):
        write_target(loop)
    assert write_target(loop, strict=False) == loop
    nowhere = tmp_path / "dangling.pth"
    nowhere.symlink_to(tmp_path / "nodir" / "sub" / "v.pth")
    with pytest.raises(ValueError, match="folder that does not exist"):
        write_target(nowhere)
    assert calibrate.main(_calibrate_args(model, data, "--out", str(nowhere))) == 2
    assert "folder that does not exist" in capsys.readouterr().err and not (tmp_path / "nodir").exists()


@pytest.mark.slow
@pytest.mark.process
@pytest.mark.parametrize("command", ["bitmind.eval", "bitmind.calibrate", "bitmind.ensemble"])
def test_ctrl_c_while_a_model_command_imports_torch_is_one_line(ctrl_c_env, tmp_path, command):
    """A real SIGINT the moment torch is first imported (``ctrl_c_env``): one line and 130, no
    traceback (``bitmind.eval`` ended with a KeyboardInterrupt traceback there)."""
    from bitmind.shutdown import STARTING_INTERRUPTED

    r = subprocess.run([sys.executable, "-m", command, "--model", str(tmp_path / "m.pth"), "--data", str(tmp_path)],
                       env=ctrl_c_env(at_import="torch"), capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 130, (r.returncode, r.stderr)
    assert r.stderr.strip() == STARTING_INTERRUPTED, r.stderr
