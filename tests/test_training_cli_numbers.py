"""Negative numbers on the training command line: ``--lr -1e-3`` is read as the value it is
(Python 3.11's argparse took it for a missing value: "expected one argument") and refused
by the option's own check, a usage error naming it (exit 2); any option reads a negative
number in scientific notation as its value."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bitmind.training.config import build_parser, explicit_options, parse_config

REPO = Path(__file__).resolve().parents[1]


def _usage_error(argv, capsys) -> str:
    with pytest.raises(SystemExit) as ex:
        parse_config(argv)
    err = capsys.readouterr().err
    assert ex.value.code == 2, err
    assert "expected one argument" not in err and "Traceback" not in err, err
    return err.strip().splitlines()[-1]


@pytest.mark.parametrize("value", ["-1e-3", "-1E-3", "-2.5e+1", "-.5e-2", "-1", "-0.001", "-inf"])
def test_a_negative_learning_rate_is_a_usage_error_that_says_so(value, capsys):
    last = _usage_error(["--lr", value, "--device", "cpu"], capsys)
    assert "error: --lr must be positive (and finite), got -" in last, last


@pytest.mark.parametrize("argv", [["--lr", "1e-3"], ["--lr=1e-3"], ["--lr", "1E-3"]])
def test_a_positive_learning_rate_in_scientific_notation_still_works(argv):
    assert parse_config([*argv, "--device", "cpu"]).lr == 1e-3


def test_other_options_that_must_not_be_negative_say_so(capsys):
    cases = {"--lr_decay": "--lr_decay must be positive", "--weight_decay": "--weight_decay must be 0 or more",
             "--aux_weight": "--aux_weight must be 0 (off) or positive", "--dropout": "--dropout must be in [0, 1)",
             "--aug_color_jitter": "--aug_color_jitter is a strength in [0, 1]",
             "--aug_jpeg_prob": "--aug_jpeg_prob is a probability in [0, 1]"}
    for flag, says in cases.items():
        last = _usage_error([flag, "-1e-3", "--device", "cpu"], capsys)
        assert says in last, (flag, last)
    last = _usage_error(["--aug_color_jitter", "2.5", "--device", "cpu"], capsys)  # a hue shift beyond 0.5: a worker's error
    assert "--aug_color_jitter is a strength in [0, 1], got 2.5" in last, last


def test_any_option_reads_a_negative_number_in_scientific_notation_as_its_value():
    # no float option of a training run may be negative, so the parser alone shows the reading
    args = build_parser().parse_args(["--lr", "-1e-3", "--aug_blur_sigma", "-2e-1", "-1E-2", "--seed", "-3",
                                      "--lr_decay", "-.5"])
    assert (args.lr, args.aug_blur_sigma, args.seed, args.lr_decay) == (-1e-3, [-0.2, -0.01], -3, -0.5)
    assert explicit_options(["--lr", "-1e-3", "--epochs", "2"]) == {"lr", "epochs"}  # --resume / --init_from read it too
    # what is not a number is still not swallowed as a value
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--lr", "--epochs", "2"])


@pytest.mark.slow
@pytest.mark.process
def test_the_training_command_refuses_lr_minus_1e_3_in_one_line():
    r = subprocess.run([sys.executable, str(REPO / "base_miner" / "NPR" / "train_detector.py"), "--lr", "-1e-3"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines()[-1] == "train_detector.py: error: --lr must be positive (and finite), got -0.001", r.stderr
