"""The top-level keys of sweep and LOGO specs: a key no code reads (``val_seed`` for ``val_seeds``,
``time_budget`` for ``time_budget_s``) is refused with the closest known one, not run with the
default; the allow-lists are exactly the keys the code reads, plus comments (``_doc``) and what a
LOGO run records (``logo``, ``ran``). Every committed spec passes through the same checks in
``tests/test_sweep_and_models.py::test_every_committed_sweep_spec_is_one_the_code_accepts``
(``SweepSpec.from_dict`` and ``logo_sweep_spec`` check the keys)."""
from __future__ import annotations

import inspect
import re

import pytest

from bitmind.training import logo as logo_mod
from bitmind.training.logo import LOGO_KEYS, SWEEP_KEYS, check_logo_keys, logo_sweep_spec
from bitmind.training.sweep import DOC_KEYS, SPEC_KEYS, SPEC_TYPES, SpecError, SweepSpec

SOURCES = ["real/coco", "fake/sdxl", "fake/flux1-dev"]


def _read_keys(function, name: str) -> set[str]:
    """The literal keys ``function`` reads from its dict ``name`` (``name.get("k"``, ``name["k"]``)."""
    return set(re.findall(rf'\b{name}(?:\.get\(|\[)"(\w+)"', inspect.getsource(function)))


def test_the_allow_lists_are_the_keys_the_code_reads():
    """Both ways: a key the code reads that the list lacks would be refused in a good spec; a
    listed key the code does not read would be ignored again, unnoticed."""
    assert _read_keys(SweepSpec.from_dict, "d") | set(SPEC_TYPES) == SPEC_KEYS - DOC_KEYS
    assert _read_keys(logo_mod.logo_sweep_spec, "logo") | set(SWEEP_KEYS) == LOGO_KEYS
    assert set(SWEEP_KEYS) == {"base", *SPEC_TYPES}  # what a LOGO spec hands its sweep is what the sweep reads
    out = logo_sweep_spec({"base": {}, "val_seeds": [0], "val_from": 1, "val_every": 2, "time_budget_s": 60,
                           "ensemble_members": 2, "state_every_s": 30.0, "recipes": {"a": {}}}, SOURCES)
    assert set(out) <= SPEC_KEYS and set(out) >= set(SWEEP_KEYS) | {"variants", "logo"}
    SweepSpec.from_dict(out)  # a LOGO spec's sweep spec is never refused for its own keys


@pytest.mark.parametrize("key, close", [("val_seed", "val_seeds"), ("time_budget", "time_budget_s"),
                                        ("ensemble_member", "ensemble_members"), ("variant", "variants")])
def test_a_sweep_spec_with_a_top_level_typo_is_refused_naming_the_closest_key(key, close):
    spec = {"base": {}, "variants": {"a": {}}, key: 1}
    with pytest.raises(SpecError, match=rf"^unknown sweep spec key\(s\): '{key}' \(did you mean '{close}'\?\); "
                                        r"a key starting with '_' is a comment$"):
        SweepSpec.from_dict(spec)


def test_an_unknown_key_far_from_every_known_one_is_named_alone():
    with pytest.raises(SpecError, match=r"^unknown sweep spec key\(s\): 'zzz'; "):
        SweepSpec.from_dict({"base": {}, "variants": {"a": {}}, "zzz": 1})


@pytest.mark.parametrize("key, close", [("val_seed", "val_seeds"), ("time_budget", "time_budget_s"),
                                        ("fold", "folds"), ("control", "controls"), ("recipe", "recipes"),
                                        ("fold_recipe", "fold_recipes")])
def test_a_logo_spec_with_a_top_level_typo_is_refused_naming_the_closest_key(key, close):
    """``check_logo_keys`` (what ``generalisation.py train`` asks before it reads the data) and
    ``logo_sweep_spec`` (what every LOGO spec is expanded with, the benchmarks' too)."""
    spec = {"base": {}, "recipes": {"a": {}}, key: 1}
    said = rf"^unknown LOGO spec key\(s\): '{key}' \(did you mean '{close}'\?\)"
    with pytest.raises(SpecError, match=said):
        check_logo_keys(spec)
    with pytest.raises(SpecError, match=said):
        logo_sweep_spec(spec, SOURCES)


def test_comments_pass_and_a_spec_of_the_other_kind_is_told_apart():
    check_logo_keys({"_doc": "why", "_anything": [1], "recipes": {"a": {}}})
    SweepSpec.from_dict({"_doc": "why", "base": {}, "variants": {"a": {}}})
    with pytest.raises(SpecError, match="a sweep spec .* python -m bitmind.training.sweep"):
        check_logo_keys({"base": {}, "variants": {"a": {}}})
    with pytest.raises(SpecError, match="a LOGO spec .* benchmarks/generalisation.py train"):
        SweepSpec.from_dict({"base": {}, "recipes": {"a": {}}})


def test_a_control_with_a_typo_is_refused_and_its_keys_are_the_ones_read():
    """A control's ``exclue`` would be ignored and the control trained as its recipe, unnoticed."""
    src = inspect.getsource(logo_mod.logo_sweep_spec) + inspect.getsource(logo_mod._control_excludes)
    assert set(re.findall(r'\b(?:cdef|control)(?:\.get\(|\[)"(\w+)"', src)) == logo_mod.CONTROL_KEYS
    spec = {"recipes": {"a": {}}, "controls": {"no_sdxl": {"exclue": ["sdxl"]}}}
    said = r"^unknown control 'no_sdxl' key\(s\): 'exclue' \(did you mean 'exclude'\?\)"
    with pytest.raises(SpecError, match=said):
        check_logo_keys(spec)
    with pytest.raises(SpecError, match=said):
        logo_sweep_spec(spec, SOURCES)
    with pytest.raises(SpecError, match="control 'x' must be a JSON object"):
        check_logo_keys({"recipes": {"a": {}}, "controls": {"x": ["sdxl"]}})
    out = logo_sweep_spec({"recipes": {"a": {}}, "controls": {"c": {"_doc": "why", "exclude": ["sdxl"], "folds": False}}},
                          SOURCES)
    assert out["variants"]["a.c"]["exclude_sources"] == ["fake/sdxl"]


def test_every_committed_result_spec_is_a_sweep_spec_the_code_accepts():
    """The sweep-shaped specs the benchmarks write beside their results (``logo_spec.json``
    copies with ``ran``, ``merged_runs``, ``residual_logo``) stay readable as sweep specs (a
    benchmark such as step_speed.py takes one with --spec)."""
    import glob
    import json

    specs = [json.load(open(f)) for f in sorted(glob.glob("benchmarks/results/*_spec.json"))]
    sweeps = [d for d in specs if isinstance(d, dict) and d.get("variants")]  # (pooling_npr_f2: no variants)
    assert len(sweeps) > 30 and any("merged_runs" in d for d in sweeps) and any("residual_logo" in d for d in sweeps)
    for d in sweeps:
        SweepSpec.from_dict(d)
