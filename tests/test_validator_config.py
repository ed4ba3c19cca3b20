"""The validator neuron's command line: defaults, the challenge split, refused values."""
from __future__ import annotations

import pytest

from bitmind.data import open_source, split_indices
from bitmind.validator.config import challenge_generator, loop_config, validator_config
from validator_synth import make_folder


def test_defaults_challenge_every_image(tmp_path):
    data = make_folder(tmp_path / "d", n_per_class=10, seed=3, size=32)
    cfg = validator_config(["--neuron.data", str(data)])
    assert cfg.neuron.split is None and cfg.neuron.split_seed == 0 and cfg.netuid == 34
    gen = challenge_generator(cfg)
    assert sum(len(v) for groups in gen.by_label.values() for v in groups.values()) == 20
    assert loop_config(cfg, None).sample_size == 50


def test_split_restricts_challenges_to_held_out_pictures(tmp_path):
    data = make_folder(tmp_path / "d", n_per_class=30, seed=4, size=32)
    cfg = validator_config(["--neuron.data", str(data), "--neuron.split", "test", "--neuron.split_seed", "0"])
    gen = challenge_generator(cfg)
    src = open_source(str(data))
    test_paths = {src.describe(i) for i in split_indices(src, seed=0)["test"]}
    pooled = {s.describe(i) for groups in gen.by_label.values() for items in groups.values() for s, i in items}
    assert pooled == test_paths and 0 < len(pooled) < 60
    # another split seed, another held-out set
    other = challenge_generator(validator_config(["--neuron.data", str(data), "--neuron.split", "test", "--neuron.split_seed", "1"]))
    assert {s.describe(i) for groups in other.by_label.values() for items in groups.values() for s, i in items} != pooled


@pytest.mark.parametrize("bad", [["--neuron.split", "holdout"], ["--neuron.split_seed", "x"], []])
def test_bad_values_are_refused(tmp_path, bad):
    data = [] if bad == [] else ["--neuron.data", str(tmp_path)]
    with pytest.raises(SystemExit):
        validator_config(data + bad)


@pytest.mark.parametrize("bad", [
    # each was accepted: a traceback every round (sample_size -1), weights or syncs never (0), every
    # miner timed out (timeout 0), a crash after round 1 (round_interval inf), a ScoreBook error
    # after the chain set-up (alpha 0), "cannot open challenge data" (plain_share 3)
    ["--neuron.sample_size", "-1"], ["--neuron.epoch_length", "0"], ["--neuron.sync_every", "0"],
    ["--neuron.timeout", "0"], ["--neuron.timeout", "-2"], ["--neuron.round_interval", "inf"],
    ["--neuron.alpha", "0"], ["--neuron.alpha", "1.5"], ["--neuron.plain_share", "3"], ["--neuron.rounds", "0"],
])
def test_values_no_validator_can_use_are_usage_errors(tmp_path, bad, capsys):
    with pytest.raises(SystemExit) as e:
        validator_config(["--neuron.data", str(tmp_path), *bad])
    assert e.value.code == 2 and bad[0] in capsys.readouterr().err


def test_values_at_their_edges_parse(tmp_path):
    n = validator_config(["--neuron.data", str(tmp_path), "--neuron.alpha", "1", "--neuron.plain_share", "0",
                          "--neuron.round_interval", "0", "--neuron.sample_size", "1"]).neuron
    assert (n.alpha, n.plain_share, n.round_interval, n.sample_size) == (1.0, 0.0, 0.0, 1)
