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
