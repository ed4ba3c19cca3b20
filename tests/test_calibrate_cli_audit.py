"""Three operator-facing defects of ``python -m bitmind.calibrate`` an audit found:

* the last line called a kept fit "better than the calibration in force" with ``--real_target``,
  whose boundary move raised the class-balanced Brier score it reported (0.1481 -> 0.1549,
  "better"); now each step's Brier change is told with its direction, and "better" is never said;
* ``--real_target 0`` was accepted silently as "the Platt boundary" while ``--help`` and
  docs/Evaluation.md said values outside (0, 1) are errors; now 0 is documented as the Platt
  boundary (the trainer's ``--calibration_real_target 0``) and the error names it;
* ``--out DATA/fake/x.pth`` ran the whole fit and wrote a model file among the pictures; now it is
  refused in one line before any inference, as ``bitmind.eval`` refuses reports there.
"""
from __future__ import annotations

import pytest

from bitmind.checkpoint import read_checkpoint
from bitmind.cli import calibrate

from eval_helpers import save_brightness_model, solid_image

#: with this brightness gain the Platt fit beats the identity map on ``overlap`` (kept), and
#: moving the boundary to 0.9 of the real photos raises the class-balanced Brier score above
#: the identity map's
GAIN = 16.0


@pytest.fixture()
def overlap(tmp_path):
    """10 real photos (grey 60-150) and 10 fakes (110-200): the classes overlap, so the fit is finite."""
    root = tmp_path / "data"
    for k in range(10):
        solid_image(root / "real" / "cam" / f"r{k}.png", 60 + 10 * k)
        solid_image(root / "fake" / "gen" / f"f{k}.png", 110 + 10 * k)
    return root


def _argv(model, data, *extra):
    return ["--min_per_class", "0", "--model", str(model), "--data", str(data), "--split", "all", "--device", "cpu", *extra]


def _last_line(err: str) -> str:
    return err.strip().splitlines()[-1]


def _one_error_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err and "usage:" not in err
    return lines[0]


# --- 1. the outcome line says what happened to the Brier score ---------------------------------

def test_a_real_target_that_raises_the_brier_score_is_not_called_better(overlap, tmp_path, capsys):
    """Before: "(the new fit, better than the calibration in force, bias moved so 0.9 of real
    photos are called real; class-balanced Brier 0.1481 -> 0.1549 on 20 pictures)"."""
    model, out = save_brightness_model(tmp_path / "m.pth", GAIN), tmp_path / "cal.pth"
    assert calibrate.main(_argv(model, overlap, "--real_target", "0.9", "--out", str(out))) == 0
    last = _last_line(capsys.readouterr().err)
    rec = read_checkpoint(out)[1]["metrics"]["calibration"]
    before, platt, after = rec["val_balanced_brier_before"], rec["val_balanced_brier_platt"], rec["val_balanced_brier_after"]
    assert rec["kept"] is True and platt <= before < after  # what makes this data the audit's case
    assert "better" not in last, last
    assert f"class-balanced Brier {before:.4g} -> {platt:.4g} (lower)" in last  # the Platt step
    assert "boundary moved so 0.9 of real photos are called real" in last
    assert f"{platt:.4g} -> {after:.4g} (higher)" in last  # then the boundary move, worse by Brier


def test_without_real_target_the_line_reports_the_platt_step_only(overlap, tmp_path, capsys):
    model, out = save_brightness_model(tmp_path / "m.pth", GAIN), tmp_path / "cal.pth"
    assert calibrate.main(_argv(model, overlap, "--out", str(out))) == 0
    last = _last_line(capsys.readouterr().err)
    rec = read_checkpoint(out)[1]["metrics"]["calibration"]
    assert rec["kept"] is True and "val_balanced_brier_platt" not in rec
    assert f"{rec['val_balanced_brier_before']:.4g} -> {rec['val_balanced_brier_after']:.4g} (lower)" in last
    assert "boundary" not in last and "better" not in last and "the new fit" in last


def _run(record: dict) -> calibrate.Calibrated:
    base = {"temperature": 2.0, "logit_bias": -0.5, "n": 40, "previous_temperature": 1.0, "previous_logit_bias": 0.0}
    return calibrate.Calibrated({**base, **record}, temperature_before=1.0, logit_bias_before=0.0)


def test_a_replaced_fit_that_is_worse_says_higher():
    """``--replace`` stores a fit whatever its score: the line said "Brier 0.1 -> 0.2" with no hint it rose."""
    line = calibrate.outcome_line(_run({"kept": True, "val_balanced_brier_before": 0.1, "val_balanced_brier_after": 0.2}),
                                  "m.pth", "o.pth", replace=True)
    assert "stored by --replace" in line and "0.1 -> 0.2 (higher)" in line and "better" not in line


def test_a_fit_not_kept_reports_the_moved_boundary_s_brier_score():
    """Not kept, but ``--real_target`` moved the bias: the line named only the Brier score
    before, not the one the file now serves with."""
    rec = {"kept": False, "real_target": 0.85, "platt_bias": 0.0, "val_balanced_brier_platt": 0.14,
           "val_balanced_brier_before": 0.14, "val_balanced_brier_after": 0.16}
    line = calibrate.outcome_line(_run(rec), "m.pth", "o.pth")
    assert "not kept" in line and "0.85 of real photos" in line and "0.14 -> 0.16 (higher)" in line
    assert "better than" not in line.replace("no better than", "")


# --- 2. --real_target 0 is the Platt boundary, said so --------------------------------------

def test_real_target_0_is_the_platt_boundary_as_the_trainer_s_0_is_and_help_says_so(overlap, tmp_path, capsys):
    """Before: 0 worked as the Platt boundary, but ``--help`` did not say so and the docs called
    any value outside (0, 1) an error."""
    from bitmind.training.config import TrainConfig

    with pytest.raises(SystemExit):
        calibrate.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "0 or left out: the Platt boundary" in text and "--calibration_real_target 0" in text
    assert TrainConfig().calibration_real_target == 0.0  # the trainer's default, and off: the Platt boundary
    TrainConfig(calibration_real_target=0.0).check()
    model = save_brightness_model(tmp_path / "m.pth", GAIN)
    outs = {}
    for name, extra in (("zero", ["--real_target", "0"]), ("absent", [])):
        outs[name] = tmp_path / f"{name}.pth"
        assert calibrate.main(_argv(model, overlap, *extra, "--out", str(outs[name]))) == 0
    zero, absent = (read_checkpoint(outs[k])[1] for k in ("zero", "absent"))
    assert (zero["temperature"], zero["logit_bias"]) == (absent["temperature"], absent["logit_bias"])
    assert "real_target" not in zero["metrics"]["calibration"]
    assert "boundary moved" not in _last_line(capsys.readouterr().err)


@pytest.mark.parametrize("value", ["-0.5", "1", "1.5"])
def test_a_real_target_outside_0_1_names_0_as_the_platt_boundary(value, overlap, tmp_path, capsys):
    model = save_brightness_model(tmp_path / "m.pth", GAIN)
    assert calibrate.main(_argv(model, overlap, "--real_target", value, "--out", str(tmp_path / "o.pth"))) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "--real_target must lie in (0, 1), or be 0 for the Platt boundary" in line and value in line
    assert not (tmp_path / "o.pth").exists()


# --- 3. --out among the pictures is refused before any inference ----------------------------

@pytest.mark.parametrize("cls", ["fake", "real", "real/cam"])
def test_an_out_inside_a_picture_folder_is_refused_before_inference(cls, overlap, tmp_path, capsys, monkeypatch):
    """Before: the fit ran and DATA/fake/x.pth was written among the fakes."""
    model = save_brightness_model(tmp_path / "m.pth", GAIN)
    before = sorted(p for p in overlap.rglob("*"))
    dest = overlap / cls / "x.pth"
    with monkeypatch.context() as m:
        def boom(*a, **k):
            pytest.fail("read the model or the pictures before refusing --out")
        for name in ("load_model", "build_dataset", "collect_predictions"):
            m.setattr(calibrate, name, boom)
        assert calibrate.main(_argv(model, overlap, "--out", str(dest))) == 2
        line = _one_error_line(capsys.readouterr().err)
        assert line.startswith(f"error: --out {dest} is inside {overlap / cls.split('/')[0]}")
        assert "where the pictures are read from" in line
        assert sorted(p for p in overlap.rglob("*")) == before and not dest.exists()
        with pytest.raises(ValueError, match="where the pictures are read from"):  # the library function too
            calibrate.calibrate(str(model), [str(overlap)], str(dest), device="cpu", min_per_class=0)
        # a link elsewhere that leads into the folder is refused too
        link = tmp_path / "link.pth"
        link.symlink_to(dest)
        assert calibrate.main(_argv(model, overlap, "--out", str(link))) == 2
        assert "where the pictures are read from" in _one_error_line(capsys.readouterr().err)
    # beside the class folders (the data root itself) is not read as a picture: allowed
    assert calibrate.main(_argv(model, overlap, "--out", str(overlap / "cal.pth"))) == 0
    assert (overlap / "cal.pth").is_file()


def test_every_challenge_draw_of_one_fit_runs_in_the_arithmetic_of_the_first(overlap, tmp_path, monkeypatch):
    """On a CPU with native bf16, "auto" chose bf16 by a timing taken anew for each draw: on a
    busy machine seed 0 ran in bf16 and seed 1 in fp32, and the fit pooled both (operator
    review). The first draw's arithmetic now holds for the others, and the record names it."""
    from bitmind import inference

    model = save_brightness_model(tmp_path / "m.pth", gain=GAIN)
    monkeypatch.setenv("BITMIND_CPU_BF16", "")  # "auto" decides by the CPU ...
    monkeypatch.setattr(inference, "cpu_runs_bf16", lambda: True)  # ... which says it runs bf16
    answers = iter([True, False, False, False])  # the timing: faster once, slower after
    timings = []

    def timed(*args, **kwargs):
        timings.append(1)
        return next(answers)

    monkeypatch.setattr(inference, "bf16_is_faster", timed)
    out = tmp_path / "cal.pth"
    assert calibrate.main(_argv(model, overlap, "--challenge", "--seeds", "0", "1", "2", "--replace", "--out", str(out))) == 0
    record = read_checkpoint(out)[1]["metrics"]["calibration"]
    assert record["precision"] == "bf16 autocast" and len(timings) == 1
    assert calibrate.pinned_amp("fp32", "auto") == "none" and calibrate.pinned_amp("fp16 autocast", "auto") == "fp16"
    assert calibrate.pinned_amp("bf16 autocast", "none") == "none"  # an arithmetic asked for is kept
