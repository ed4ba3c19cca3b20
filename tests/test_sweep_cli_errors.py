"""A sweep spec the command line cannot run ends as a usage error: one line on stderr naming
what is wrong and where (the base, which variant, the file), exit status 2, no traceback, and
nothing read or written. And the lines a Ctrl-C makes a sweep say (the first press, the stop
after the epoch) go to stderr, with the line a second press ends with, not into the run's output."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bitmind.shutdown import GracefulStop
from bitmind.training import sweep as sweep_mod
from bitmind.training.sweep import SweepSpec, main, run_sweep
from validator_synth import make_folder

REPO = Path(__file__).resolve().parents[1]


def _base(out: Path, **extra) -> dict:
    return {"data": [str(out / "no-such-data")], "checkpoints_dir": str(out / "ck"), "name": "s", "epochs": 1,
            "device": "cpu", "workers": 0, "progress": False, **extra}


def _spec_file(tmp_path: Path, spec) -> Path:
    path = tmp_path / "spec.json"
    path.write_text(spec if isinstance(spec, str) else json.dumps(spec))
    return path


def _refused(usage_error, argv) -> str:
    """The one line ``main(argv)`` ends with: a usage error (exit 2), its message argparse's last line."""
    err = usage_error(main, argv)
    assert "Traceback" not in err, err
    return err.rstrip("\n").splitlines()[-1].split(" error: ", 1)[1]


# (spec or text of the file, given the output folder) -> the line it is refused with
CASES = {
    "unknown base option": (lambda out: {"base": _base(out, bogus_option=1), "variants": {"a": {}}},
                            "unknown base option(s): 'bogus_option'"),
    "base typo": (lambda out: {"base": {**_base(out), "epoch": 3}, "variants": {"a": {}}},
                  "unknown base option(s): 'epoch' (did you mean 'epochs'?)"),
    "variant typo": (lambda out: {"base": _base(out), "variants": {"a": {}, "b": {"lr_decy": 0.5}}},
                     "variant 'b': unknown option(s): 'lr_decy' (did you mean 'lr_decay'?)"),
    "variant typo of a base option": (lambda out: {"base": _base(out), "variants": {"a": {"batchsize": 8}}},
                                      "variant 'a': unknown option(s): 'batchsize' (did you mean 'batch_size', an "
                                      "option of 'base'?)"),
    "shared option in a variant": (lambda out: {"base": _base(out), "variants": {"a": {"epochs": 3}}},
                                   "variant 'a' sets ['epochs'], which all variants share (set them in 'base')"),
    "base value of the wrong type": (lambda out: {"base": _base(out, epochs="ten"), "variants": {"a": {}}},
                                     "base option 'epochs' must be an integer, got \"ten\""),
    "a list of the wrong type": (lambda out: {"base": _base(out, layers=[1, "2"]), "variants": {"a": {}}},
                                 "base option 'layers' must be a list of integers, got [1, \"2\"]"),
    "variant value of the wrong type": (lambda out: {"base": _base(out), "variants": {"a": {"lr": "fast"}}},
                                        "variant 'a': option 'lr' must be a number, got \"fast\""),
    "sweep option of the wrong type": (lambda out: {"base": _base(out), "variants": {"a": {"train_fraction": "half"}}},
                                       "variant 'a': option 'train_fraction' must be a number, got \"half\""),
    "spec option of the wrong type": (lambda out: {"base": _base(out), "val_seeds": 3, "variants": {"a": {}}},
                                      "the spec's option 'val_seeds' must be a list of integers, got 3"),
    "true is not a number": (lambda out: {"base": _base(out, epochs=True), "variants": {"a": {}}},
                             "base option 'epochs' must be an integer, got true"),
    "no variant": (lambda out: {"base": _base(out), "variants": {}}, "a sweep needs at least one variant"),
    "variants not an object": (lambda out: {"base": _base(out), "variants": ["a"]},
                               "the spec's variants must be a JSON object of {name: {options}}, got an array"),
    "variant not an object": (lambda out: {"base": _base(out), "variants": {"a": 1}},
                              "variant 'a' must be a JSON object of options, got a number"),
    "base not an object": (lambda out: {"base": ["epochs"], "variants": {"a": {}}},
                           "the spec's base must be a JSON object of options, got an array"),
    "spec not an object": (lambda out: [1, 2], 'a sweep spec is a JSON object ({"base": {...}, "variants": {...}}), '
                                               "got an array"),
    "a value no run can use": (lambda out: {"base": _base(out, epochs=0), "variants": {"a": {}}},
                               "--epochs must be at least 1, got 0"),
    "a variant's value no run can use": (lambda out: {"base": _base(out), "variants": {"a": {"input": "nrp"}}},
                                         "variant 'a': --input 'nrp': one of"),
    # a top-level key no code reads would run with its default, unnoticed
    "top-level typo": (lambda out: {"base": _base(out), "variants": {"a": {}}, "val_seed": [0, 1]},
                       "unknown sweep spec key(s): 'val_seed' (did you mean 'val_seeds'?); a key starting with '_' is a "
                       "comment"),
    "top-level key without its unit": (lambda out: {"base": _base(out), "variants": {"a": {}}, "time_budget": 900},
                                       "unknown sweep spec key(s): 'time_budget' (did you mean 'time_budget_s'?)"),
    "a LOGO spec given to the sweep": (lambda out: {"base": _base(out), "recipes": {"a": {}}},
                                       "a LOGO spec (it has 'recipes', not 'variants'): run it with "
                                       "benchmarks/generalisation.py train"),
    "a sweep-only option of a variant no run can use": (lambda out: {"base": _base(out), "variants": {"a": {"train_fraction": 0}}},
                                                        "variant 'a': train_fraction must be in (0, 1], got 0.0"),
}


@pytest.mark.parametrize("case", CASES)
def test_a_spec_the_sweep_cannot_run_is_a_usage_error_in_one_line(case, tmp_path, usage_error):
    spec, said = CASES[case]
    line = _refused(usage_error, ["--spec", str(_spec_file(tmp_path, spec(tmp_path)))])
    assert line.startswith(said), line
    assert not (tmp_path / "ck").exists()  # refused before anything was read or written


def test_a_spec_file_that_is_missing_or_not_json_is_a_usage_error_in_one_line(tmp_path, usage_error):
    missing = tmp_path / "nope.json"
    assert _refused(usage_error, ["--spec", str(missing)]) == f"cannot read the spec {missing}: No such file or directory"
    assert _refused(usage_error, ["--spec", str(tmp_path)]) == f"cannot read the spec {tmp_path}: Is a directory"
    broken = _spec_file(tmp_path, '{"base": {"epochs": 1},\n "variants": {"a": {}}')
    assert _refused(usage_error, ["--spec", str(broken)]) == (f"the spec {broken} is not JSON: Expecting ',' delimiter "
                                                              "at line 2 column 23")


def test_a_spec_error_is_a_value_error_that_names_the_option():
    """``SweepSpec.from_dict`` (what ``generalisation.py train`` and the benchmarks build sweeps
    with) raises ``SpecError``, a ValueError as before, so their callers can tell it apart."""
    with pytest.raises(sweep_mod.SpecError, match=r"'epochz' \(did you mean 'epochs'\?\)"):
        SweepSpec.from_dict({"base": {"epochz": 3}, "variants": {"a": {}}})
    assert issubclass(sweep_mod.SpecError, ValueError)
    # a path or a tuple from Python is what the options take; null switches a sweep option off
    spec = SweepSpec.from_dict({"base": {"checkpoints_dir": REPO, "layers": (1, 1)},
                                "variants": {"a": {"swa_start": None, "exclude_sources": None}}, "time_budget_s": None})
    assert spec.variant_extras("a")["swa_start"] == 0 and spec.time_budget_s == 0


def test_comment_and_record_keys_are_not_typos():
    """``_doc`` (any key starting with ``_``) is a comment; ``logo`` and ``ran`` are what a LOGO
    run's ``logo_spec.json`` records beside its sweep, which runs again as a sweep spec."""
    spec = SweepSpec.from_dict({"_doc": "why", "_note": 1, "logo": {"folds": []}, "ran": {"epochs": 1},
                                "base": {"layers": [1, 1]}, "variants": {"a": {}}})
    assert list(spec.variants) == ["a"]


def test_an_option_value_no_run_can_use_is_a_config_error_and_a_spec_error_is_one_too():
    """The usage errors are typed: ``TrainConfig.check`` raises ``ConfigError`` (a ValueError, so its
    callers that catch ValueError still do), also for what the validators it asks refuse (patch
    size, tile, pool, device, family shares); ``SpecError`` is a ``ConfigError``."""
    from bitmind.training.config import ConfigError, TrainConfig

    assert issubclass(sweep_mod.SpecError, ConfigError) and issubclass(ConfigError, ValueError)
    for bad in ({"epochs": 0}, {"patch_size": 3}, {"tile_shuffle": 7}, {"pool": "max"}, {"device": "tpu"},
                {"balance": "family", "family_share": ["gans"]}, {"pair_patches": True}):
        with pytest.raises(ConfigError):
            TrainConfig(**{"device": "cpu", **bad}).check()
    spec = SweepSpec.from_dict({"base": {"device": "cpu"}, "variants": {"a": {"swa_start": 99}, "b": {"input": "nrp"}}})
    for name in ("a", "b"):
        with pytest.raises(ConfigError, match=f"variant '{name}'"):
            spec.variant_config(name), spec.variant_extras(name)


def _plain_value_error(*a, **kw):
    raise ValueError("an internal bug, not the user's spec")


def test_a_value_error_that_is_not_a_usage_error_keeps_its_traceback(tmp_path, monkeypatch, capsys):
    """``main`` turns only ``ConfigError`` (a spec or an option value the user must mend) into the
    one usage line; another ValueError raised while the spec is checked (a bug) propagates as it
    is, not as "error: <message>", exit 2, as if the user had written a bad spec."""
    from bitmind.training.config import TrainConfig

    monkeypatch.setattr(TrainConfig, "_device_type", _plain_value_error)  # inside TrainConfig.check
    path = _spec_file(tmp_path, {"base": _base(tmp_path), "variants": {"a": {}}})
    with pytest.raises(ValueError, match="an internal bug") as e:
        main(["--spec", str(path)])
    assert type(e.value) is ValueError  # not a ConfigError relabelled, and not a SystemExit
    assert "error:" not in capsys.readouterr().err
    monkeypatch.undo()
    monkeypatch.setattr(sweep_mod, "sweep_marks", _plain_value_error)  # after the spec is checked
    with pytest.raises(ValueError, match="an internal bug"):
        main(["--spec", str(path)])


@pytest.mark.process
def test_the_command_line_ends_an_unknown_option_in_one_line(tmp_path):
    """As a person runs it: ``python -m bitmind.training.sweep --spec SPEC.json``."""
    spec = _spec_file(tmp_path, {"base": _base(tmp_path, bogus_option=1), "variants": {"a": {}}})
    r = subprocess.run([sys.executable, "-m", "bitmind.training.sweep", "--spec", str(spec)], capture_output=True,
                       text=True, timeout=300, cwd=REPO)
    assert r.returncode == 2 and "Traceback" not in r.stderr and r.stdout == "", (r.returncode, r.stderr[-2000:])
    assert r.stderr.rstrip("\n").splitlines()[-1] == "sweep.py: error: unknown base option(s): 'bogus_option'"


@pytest.mark.process
def test_the_command_line_ends_a_top_level_typo_in_one_line(tmp_path):
    """A typo'd top-level key (``val_seed``) ran with the default seeds, unnoticed: now refused
    like an unknown option, exit status 2, one line naming the closest key."""
    spec = _spec_file(tmp_path, {"base": _base(tmp_path), "variants": {"a": {}}, "val_seed": [0, 1]})
    r = subprocess.run([sys.executable, "-m", "bitmind.training.sweep", "--spec", str(spec)], capture_output=True,
                       text=True, timeout=300, cwd=REPO)
    assert r.returncode == 2 and "Traceback" not in r.stderr and r.stdout == "", (r.returncode, r.stderr[-2000:])
    assert r.stderr.rstrip("\n").splitlines()[-1] == ("sweep.py: error: unknown sweep spec key(s): 'val_seed' (did you "
                                                      "mean 'val_seeds'?); a key starting with '_' is a comment")
    assert not (tmp_path / "ck").exists()


def test_the_first_ctrl_c_is_said_on_stderr(capsys):
    stop = GracefulStop().install()
    try:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.requested
        with pytest.raises(KeyboardInterrupt):  # the second press: at once
            os.kill(os.getpid(), signal.SIGINT)
    finally:
        stop.uninstall()
    said = capsys.readouterr()
    assert "Ctrl-C: stopping after this epoch is saved (press again to stop now)" in said.err
    assert "Ctrl-C" not in said.out


def test_a_sweep_stopped_by_ctrl_c_says_so_on_stderr(tmp_path, monkeypatch, capsys):
    torch.set_num_threads(1)
    data = make_folder(tmp_path / "data", n_per_class=8, seed=3, size=48)
    real = sweep_mod.train_one_epoch

    def epoch(*a, **kw):  # the first press while epoch 0 trains
        os.kill(os.getpid(), signal.SIGINT)
        return real(*a, **kw)

    monkeypatch.setattr(sweep_mod, "train_one_epoch", epoch)
    spec = {"base": {**_base(tmp_path, epochs=3), "data": [str(data)], "batch_size": 8, "val_fraction": 0.25,
                     "test_fraction": 0.15, "layers": [1, 1], "width": 8}, "val_seeds": [0], "variants": {"plain": {}}}
    summary = run_sweep(SweepSpec.from_dict(spec))
    assert summary["stopped"] == "interrupted" and summary["epochs_run"] == 1
    said = capsys.readouterr()
    assert "Ctrl-C: stopping after this epoch is saved" in said.err
    assert f"stopped after epoch 0 (Ctrl-C): {tmp_path / 'ck' / 's'} keeps every variant's best" in said.err
    assert "Ctrl-C" not in said.out and "variant " in said.out  # the run's own output stays on stdout


def _empty_folder(path: Path) -> str:
    path.mkdir()
    return str(path)


# (LOGO spec, given the output folder) -> the line generalisation.py train refuses it with
LOGO_CASES = {
    "a base typo": (lambda out: {"base": {"epoch": 3}, "recipes": {"a": {"input": "npr_hp"}}, "folds": ["gans"]},
                    "unknown base option(s): 'epoch' (did you mean 'epochs'?)"),
    "a value no run can use": (lambda out: {"base": {"epochs": 0}, "recipes": {"a": {"input": "npr_hp"}}, "folds": ["gans"]},
                               "--epochs must be at least 1, got 0"),
    "not an object": (lambda out: [1], "a LOGO spec is a JSON object, got list"),
    "not JSON": (lambda out: "{", "is not JSON: Expecting property name enclosed in double quotes at line 1 column 2"),
    "a data folder that is not there": (lambda out: {"base": {"data": [str(out / "no-data")]},
                                                     "recipes": {"a": {"input": "npr_hp"}}, "folds": ["gans"]},
                                        "data folder not found: "),
    "a top-level typo": (lambda out: {"base": {}, "recipes": {"a": {"input": "npr_hp"}}, "folds": ["gans"], "val_seed": [0]},
                         "error: unknown LOGO spec key(s): 'val_seed' (did you mean 'val_seeds'?); a key starting with "
                         "'_' is a comment"),
    "a top-level typo, before the data is read": (lambda out: {"base": {"data": [str(out / "no-data")]},
                                                               "recipes": {"a": {}}, "contrls": {}},
                                                  "error: unknown LOGO spec key(s): 'contrls' (did you mean 'controls'?)"),
    "a sweep spec given to train": (lambda out: {"base": {}, "variants": {"a": {}}},
                                    "error: a sweep spec (it has 'variants', not 'recipes'): run it with python -m "
                                    "bitmind.training.sweep"),
    "a fold_recipes typo": (lambda out: {"base": {}, "recipes": {"a": {}}, "fold_recipes": ["b"]},
                            "error: fold_recipes names recipes the spec does not have: ['b']"),
    "a root without pictures": (lambda out: {"base": {"data": [_empty_folder(out / "empty")]}, "recipes": {"a": {}}},
                                "error: no images under "),
}


@pytest.mark.parametrize("case", LOGO_CASES)
def test_generalisation_train_refuses_a_spec_it_cannot_run_in_one_line_before_writing(case, tmp_path, usage_error):
    """``benchmarks/generalisation.py train`` builds its sweep from the same ``SweepSpec``: a spec
    it cannot run is the same one-line usage error, before the sweep folder (and the
    ``logo_spec.json`` it would hold) is written."""
    from conftest import load_script

    gen = load_script("benchmarks/generalisation.py")
    spec, said = LOGO_CASES[case]
    raw = spec(tmp_path)
    path = _spec_file(tmp_path, raw)
    own_data = isinstance(raw, dict) and "data" in raw["base"]  # (else the command line gives a folder of pictures)
    data = [] if own_data else ["--data", str(make_folder(tmp_path / "d", n_per_class=2, size=32))]
    err = usage_error(gen.main, ["train", "--spec", str(path), "--name", "t", *data, "--checkpoints_dir", str(tmp_path / "ck")])
    assert "Traceback" not in err, err
    assert said in err.rstrip("\n").splitlines()[-1], err
    assert not (tmp_path / "ck").exists()


def test_generalisation_train_keeps_the_traceback_of_a_value_error_that_is_not_a_usage_error(tmp_path, monkeypatch, capsys):
    """``cmd_train`` turns a ``ConfigError`` (``TrainConfig.check``, a LOGO block it cannot build) or
    an unreadable data root into a usage line; another ValueError (a bug) is not relabelled."""
    from conftest import load_script

    from bitmind.training.config import TrainConfig

    gen = load_script("benchmarks/generalisation.py")
    monkeypatch.setattr(TrainConfig, "_device_type", _plain_value_error)  # inside TrainConfig.check
    path = _spec_file(tmp_path, {"base": {}, "recipes": {"a": {"input": "npr_hp"}}, "folds": ["gans"]})
    data = str(make_folder(tmp_path / "d", n_per_class=2, size=32))
    with pytest.raises(ValueError, match="an internal bug") as e:
        gen.main(["train", "--spec", str(path), "--name", "t", "--data", data, "--checkpoints_dir", str(tmp_path / "ck")])
    assert type(e.value) is ValueError
    assert "error:" not in capsys.readouterr().err
    assert not (tmp_path / "ck").exists()


def test_the_command_line_overrides_the_validation_draws_and_a_resume_must_keep_them(tmp_path, usage_error):
    """``--val_seeds`` / ``--val_every`` replace the spec's (a quick try of final.json's six draws
    took 12 minutes on two cores); what ran is recorded, and a resume that asks for other draws
    is refused: they choose every variant's best epoch."""
    torch.set_num_threads(1)
    data = make_folder(tmp_path / "data", n_per_class=8, seed=3, size=48)
    spec = {"base": {**_base(tmp_path, epochs=2), "data": [str(data)], "batch_size": 8, "val_fraction": 0.25,
                     "test_fraction": 0.15, "layers": [1, 1], "width": 8},
            "val_seeds": [0, 1, 2, 3, 4, 5], "variants": {"plain": {}}}
    path = _spec_file(tmp_path, spec)
    summary = main(["--spec", str(path), "--val_seeds", "7", "--val_every", "2"])
    assert summary["val_seeds"] == [7]
    ran = json.loads((tmp_path / "ck" / "s" / "spec.json").read_text())
    assert (ran["val_seeds"], ran["val_every"]) == ([7], 2)
    refused = _refused(usage_error, ["--spec", str(path), "--resume"])
    assert "val_seeds: [7] -> [0, 1, 2, 3, 4, 5]" in refused and "pass --val_seeds 7 --val_every 2 as the sweep started with" in refused


def test_a_validation_interval_below_one_is_a_usage_error(tmp_path, usage_error):
    """``--val_every 0`` was read as 1 without a word."""
    path = _spec_file(tmp_path, {"base": _base(tmp_path), "variants": {"a": {}}})
    assert "--val_every" in usage_error(main, ["--spec", str(path), "--val_every", "0"])
