"""Guards of ``bitmind.calibrate``, ``bitmind.eval`` and ``bitmind.model_info`` against the
inputs an audit found them mishandling: data with one class or no readable picture (the
stored calibration was wiped and the run said all was well), a calibration worse than the
stored one (it replaced it), a model trained with other split fractions (the "val" split
evaluated was part of the trainer's training split), and usage errors ending in tracebacks."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bitmind.checkpoint import file_sha256, model_meta, read_checkpoint, save_checkpoint
from bitmind.cli import calibrate
from bitmind.cli import eval as bm_eval
from bitmind.cli import model_info
from bitmind.data import LocalFolderSource, split_of
from bitmind.models import build_model

from conftest import load_script
from eval_helpers import save_brightness_model, solid_image

STORED = {"temperature": 0.7, "logit_bias": -1.0}
N_PICTURES = 40


def _brightness(path, gain: float = 20.0, **meta):
    m = build_model("test_brightness", gain=gain)
    return save_checkpoint(m, path, meta=model_meta(m, arch="test_brightness", **meta))


@pytest.fixture()
def one_class(tmp_path):
    root = tmp_path / "onlyreal"
    for k in range(6):
        solid_image(root / "real" / "cam" / f"r{k}.png", 40 + 30 * k)
    return root


@pytest.fixture()
def unreadable(tmp_path):
    root = tmp_path / "allbad"
    for cls in ("real", "fake"):
        (root / cls / "s").mkdir(parents=True)
        for k in range(3):
            (root / cls / "s" / f"{cls}{k}.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    return root


@pytest.fixture()
def many_stems(tmp_path):
    """40 picture stems, alternately real and fake, so splits of different fractions differ."""
    root = tmp_path / "many"
    for k in range(N_PICTURES):
        solid_image(root / ("fake" if k % 2 else "real") / "s" / f"p{k}.png", 20 + 5 * k)
    return root


def test_calibrate_logits_refuses_data_it_cannot_calibrate_on():
    from bitmind.calibration import CalibrationDataError, calibrate_logits

    assert issubclass(CalibrationDataError, ValueError)
    with pytest.raises(CalibrationDataError, match="real and fake"):
        calibrate_logits(np.array([0.5, -1.0, 2.0]), np.zeros(3))
    with pytest.raises(CalibrationDataError, match="real and fake"):
        calibrate_logits(np.array([0.5, 1.0]), np.ones(2), keep_if_better=False)
    with pytest.raises(CalibrationDataError, match="no "):
        calibrate_logits(np.array([]), np.array([]))


@pytest.mark.parametrize("out", [True, False], ids=["--out", "over --model"])
@pytest.mark.parametrize("data", ["one_class", "unreadable"])
def test_calibrate_on_unusable_data_is_an_error_and_writes_nothing(data, out, request, tmp_path, capsys):
    """Before: identity written over the stored calibration (T 0.7 -> 1), exit status 0."""
    root = request.getfixturevalue(data)
    model = _brightness(tmp_path / "m.pth", **STORED)
    sha = file_sha256(model)
    argv = ["--min_per_class", "0", "--model", str(model), "--data", str(root), "--split", "all", "--device", "cpu"]
    dest = tmp_path / "cal.pth"
    rc = calibrate.main(argv + (["--out", str(dest)] if out else []))
    err = capsys.readouterr().err
    assert rc == 2 and "error:" in err and "Traceback" not in err
    assert ("real and fake" if data == "one_class" else "none of the 6 images") in err
    assert not dest.exists() and file_sha256(model) == sha


def _outlier_folder(root):
    """Dark real photos, bright fakes and one black fake: with the brightness model (gain 20)
    the Platt fit (NLL) bends to the outlier and is worse, by the class-balanced Brier score,
    than both the identity map and the stored calibration ``STORED``."""
    for k, level in enumerate([60, 70, 80, 90, 100, 110, 120, 140]):
        solid_image(root / "real" / "cam" / f"r{k}.png", level)
    for k, level in enumerate([135, 150, 160, 170, 180, 190, 200, 0]):
        solid_image(root / "fake" / "gen" / f"f{k}.png", level)
    return root


def test_a_fit_no_better_than_the_stored_calibration_keeps_the_stored_one(tmp_path, capsys):
    """Before: the fit was compared with the identity map, lost, and the identity was
    written, wiping the stored calibration that was better than both."""
    from bitmind.calibration import apply_calibration, balanced_brier, fit_platt

    root = _outlier_folder(tmp_path / "data")
    model = _brightness(tmp_path / "m.pth", **STORED)
    src = LocalFolderSource(root)
    z = np.array([20.0 * (lv / 255 - 0.5) for lv in [60, 70, 80, 90, 100, 110, 120, 140, 135, 150, 160, 170, 180, 190, 200, 0]])
    y = np.r_[np.zeros(8), np.ones(8)]
    assert len(src) == 16
    t, b = fit_platt(z, y)
    fit, stored = (balanced_brier(y, apply_calibration(z, *tb)) for tb in ((t, b), tuple(STORED.values())))
    assert stored < fit  # what makes this data a test of the keep rule

    out = tmp_path / "cal.pth"
    assert calibrate.main(["--min_per_class", "0", "--model", str(model), "--data", str(root), "--split", "all", "--device", "cpu", "--out", str(out)]) == 0
    meta = read_checkpoint(out)[1]
    assert (meta["temperature"], meta["logit_bias"]) == (STORED["temperature"], STORED["logit_bias"])
    rec = meta["metrics"]["calibration"]
    assert rec["kept"] is False and rec["val_balanced_brier_before"] == pytest.approx(stored)
    assert (rec["previous_temperature"], rec["previous_logit_bias"]) == (0.7, -1.0)
    capsys.readouterr()
    # --replace stores the new fit whatever the stored calibration was
    assert calibrate.main(["--min_per_class", "0", "--model", str(model), "--data", str(root), "--split", "all", "--device", "cpu", "--out", str(out),
                           "--replace"]) == 0
    assert read_checkpoint(out)[1]["temperature"] == pytest.approx(t)


def test_model_info_shows_a_record_with_missing_figures(tmp_path, capsys):
    """Before: TypeError (None.__format__) on a record whose fake accuracy is None."""
    cal = {"method": "class-balanced Platt scaling", "n": 20, "val_real_accuracy_after": 0.9, "val_fake_accuracy_after": None}
    path = _brightness(tmp_path / "m.pth", temperature=1.0, logit_bias=0.0, metrics={"calibration": cal})
    assert model_info.main([str(path)]) == 0
    text = capsys.readouterr().out
    assert "real photos 0.900 called real, fakes n/a caught" in text


def _counts(split: str, seed: int, val: float, test: float) -> int:
    fractions = (1.0 - val - test, val, test)  # as bitmind.training.trainer.build_datasets computes them
    return sum(split_of(f"p{k}", seed, fractions) == split for k in range(N_PICTURES))


def test_eval_and_calibrate_split_as_the_checkpoints_run_did(many_stems, tmp_path, capsys):
    """Before: the default 80/10/10 split (seed 0) whatever fractions the model was trained
    with, so "--split val" held pictures the model was trained on."""
    from bitmind.evaluation import evaluate_detailed
    from bitmind.training import parse_config
    from bitmind.training.trainer import build_datasets

    cfg = parse_config(["--data", str(many_stems), "--val_fraction", "0.3", "--test_fraction", "0.2", "--split_seed", "2"])
    model = _brightness(tmp_path / "m.pth", train_options=cfg.to_dict())
    assert _counts("val", 2, 0.3, 0.2) != _counts("val", 0, 0.1, 0.1)  # the fractions matter on this data
    _, val, _ = build_datasets(cfg)
    _, _, ds = evaluate_detailed(model, [many_stems], split="val", device="cpu", progress=False)
    assert sorted(s.describe(i) for s, i in ds.items) == sorted(s.describe(i) for s, i in val.items)

    js = tmp_path / "r.json"
    assert bm_eval.main(["--model", str(model), "--data", str(many_stems), "--split", "val", "--device", "cpu", "--quiet",
                         "--json", str(js)]) == 0
    r = json.loads(js.read_text())
    assert r["n"] == _counts("val", 2, 0.3, 0.2)
    assert r["options"]["split_seed"] == 2 and r["options"]["split_fractions"] == pytest.approx([0.5, 0.3, 0.2])
    assert "0.5/0.3/0.2" in capsys.readouterr().out
    # the command line overrides what the checkpoint says
    assert bm_eval.main(["--model", str(model), "--data", str(many_stems), "--split", "test", "--device", "cpu", "--quiet",
                         "--json", str(js), "--val_fraction", "0.05", "--test_fraction", "0.25", "--split_seed", "0"]) == 0
    assert json.loads(js.read_text())["n"] == _counts("test", 0, 0.05, 0.25)

    out = tmp_path / "cal.pth"
    assert calibrate.main(["--min_per_class", "0", "--model", str(model), "--data", str(many_stems), "--split", "val", "--device", "cpu",
                           "--out", str(out), "--replace"]) == 0
    rec = read_checkpoint(out)[1]["metrics"]["calibration"]
    assert rec["n"] == _counts("val", 2, 0.3, 0.2) and rec["split_seed"] == 2
    assert rec["split_fractions"] == pytest.approx([0.5, 0.3, 0.2])


def test_a_checkpoint_without_training_options_gets_the_default_split(many_stems, tmp_path):
    model = _brightness(tmp_path / "m.pth")
    from bitmind.evaluation import evaluate

    r = evaluate(model, [many_stems], split="val", device="cpu", progress=False)
    assert r["n"] == _counts("val", 0, 0.1, 0.1) and r["options"]["split_seed"] == 0


@pytest.mark.parametrize("case", ["missing model", "missing data", "real_target 1.5", "fractions"])
def test_calibrate_usage_errors_are_one_line(case, many_stems, tmp_path, capsys):
    model = _brightness(tmp_path / "m.pth", **STORED)
    argv = {"missing model": ["--model", str(tmp_path / "absent.pth"), "--data", str(many_stems)],
            "missing data": ["--model", str(model), "--data", str(tmp_path / "absent")],
            "real_target 1.5": ["--model", str(model), "--data", str(many_stems), "--real_target", "1.5"],
            "fractions": ["--model", str(model), "--data", str(many_stems), "--val_fraction", "0.6", "--test_fraction", "0.5"]}[case]
    assert calibrate.main(argv + ["--device", "cpu", "--out", str(tmp_path / "o.pth")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o.pth").exists()


def test_calibrate_refuses_an_unknown_split(many_stems, tmp_path, usage_error):
    model = _brightness(tmp_path / "m.pth")
    err = usage_error(calibrate.main, ["--model", str(model), "--data", str(many_stems), "--split", "bogus"])
    assert "invalid choice: 'bogus'" in err


def test_eval_on_nothing_readable_is_an_error(unreadable, tmp_path, capsys):
    """Before: exit status 0 and a table of n = 0."""
    model = save_brightness_model(tmp_path / "m.pth")
    assert bm_eval.main(["--model", str(model), "--data", str(unreadable), "--device", "cpu", "--quiet"]) == 2
    captured = capsys.readouterr()
    assert "error:" in captured.err and "none of the 6 images" in captured.err and "overall" not in captured.out


@pytest.mark.parametrize("command", ["eval", "calibrate"])
def test_cuda_without_a_gpu_is_an_error_not_a_traceback(command, many_stems, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    model = save_brightness_model(tmp_path / "m.pth")
    main = bm_eval.main if command == "eval" else calibrate.main
    assert main(["--model", str(model), "--data", str(many_stems), "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "cuda" in err and "Traceback" not in err


def test_an_ensemble_splits_as_its_members_were_trained(many_stems, tmp_path, capsys):
    """Before: an ensemble file has no training options of its own, so eval and calibrate used
    the default 80/10/10 split, whose "val" held pictures its members trained on."""
    from bitmind.cli.ensemble import build_ensemble_checkpoint
    from bitmind.evaluation import evaluate, trained_split

    split = {"split_seed": 2, "val_fraction": 0.3, "test_fraction": 0.2}
    a = _brightness(tmp_path / "a.pth", train_options=split)
    b = _brightness(tmp_path / "b.pth", gain=10.0, train_options=split)
    ens = build_ensemble_checkpoint([a, b], tmp_path / "ens.pth")
    r = evaluate(ens, [many_stems], split="val", device="cpu", progress=False)
    assert r["n"] == _counts("val", 2, 0.3, 0.2) and r["options"]["split_seed"] == 2
    # members trained on different splits: no split is right for all, so the caller must choose
    other = _brightness(tmp_path / "c.pth", train_options={**split, "split_seed": 5})
    mixed = build_ensemble_checkpoint([a, other], tmp_path / "mixed.pth")
    meta = read_checkpoint(mixed)[1]
    with pytest.raises(ValueError, match="different splits.*--split_seed"):
        trained_split(meta)
    assert trained_split(meta, split_seed=5) == (5, pytest.approx((0.5, 0.3, 0.2)))
    assert bm_eval.main(["--model", str(mixed), "--data", str(many_stems), "--split", "val", "--device", "cpu",
                         "--quiet"]) == 2
    assert "different splits" in capsys.readouterr().err
    # a member that stores no split options was split as the trainer splits by default: the same as (0, 0.1, 0.1)
    plain = _brightness(tmp_path / "d.pth")
    dflt = _brightness(tmp_path / "e.pth", train_options={"split_seed": 0, "val_fraction": 0.1, "test_fraction": 0.1})
    assert trained_split(read_checkpoint(build_ensemble_checkpoint([plain, dflt], tmp_path / "pd.pth"))[1]) == (
        0, pytest.approx((0.8, 0.1, 0.1)))
    # ship_paired chooses the split the same way, and takes the options the error names
    ship_paired = load_script("benchmarks/ship_paired.py")
    with pytest.raises(SystemExit) as e:
        ship_paired.main(["--a", str(a), "--b", str(mixed), "--data", str(many_stems), "--device", "cpu",
                          "--out", str(tmp_path / "sp.json")])
    assert e.value.code == 2 and "different splits" in capsys.readouterr().err


def test_eval_refuses_an_output_path_it_cannot_write_before_evaluating(many_stems, tmp_path, capsys, monkeypatch):
    """``--json DIR`` (IsADirectoryError), ``--json FILE/x.json`` and ``--plots FILE``
    (FileExistsError) were tracebacks raised after the whole evaluation; now one line, before it."""
    from bitmind import evaluation

    model = _brightness(tmp_path / "m.pth")
    afile = tmp_path / "a.txt"
    afile.write_text("x")
    ran = []
    monkeypatch.setattr(bm_eval, "evaluate", lambda *a, **k: ran.append(1) or evaluation.evaluate(*a, **k))
    for flag, bad, says in (("--json", tmp_path, "is a folder"), ("--json", afile / "x.json", "is a file"),
                            ("--plots", afile, "is a file")):
        assert bm_eval.main(["--model", str(model), "--data", str(many_stems), "--device", "cpu", "--quiet",
                             flag, str(bad)]) == 2
        assert says in capsys.readouterr().err
    assert not ran
    out = tmp_path / "new" / "deeper" / "r.json"  # a folder that does not exist yet is fine: it is made
    assert bm_eval.main(["--model", str(model), "--data", str(many_stems), "--device", "cpu", "--quiet",
                         "--json", str(out)]) == 0 and out.is_file()


def test_calibrate_on_too_few_pictures_of_a_class_writes_nothing(many_stems, tmp_path, capsys):
    """A fit on a handful of pictures (the audit's: 3 pictures, 6 seeds) stored T=20 over the
    shipped calibration and was called "better" on those same pictures; below --min_per_class
    nothing is read or written, and the line says how to fit on more."""
    model = _brightness(tmp_path / "m.pth", **STORED)
    sha = file_sha256(model)
    argv = ["--model", str(model), "--data", str(many_stems), "--split", "val", "--device", "cpu", "--challenge",
            "--seeds", "0", "1", "2", "3", "4", "5"]
    assert calibrate.main(argv) == 2
    err = capsys.readouterr().err
    assert "fewer than 20 of a class" in err and "--min_per_class" in err and file_sha256(model) == sha
    assert calibrate.main(argv + ["--min_per_class", "1", "--out", str(tmp_path / "o.pth")]) == 0  # lowered knowingly


def test_a_file_given_as_data_is_named_as_a_file_not_as_missing(tmp_path, capsys):
    """``--data mining_models/base.pth`` said "data folder not found" of a file that is there."""
    model = save_brightness_model(tmp_path / "m.pth")
    assert bm_eval.main(["--model", str(model), "--data", str(model), "--device", "cpu", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"data folder {model} is a file, not a folder" in err and "not found" not in err
