"""Every figure in docs/ comes from a script in the repository (``benchmarks/figures.py``):
each file in docs/figures is cited by a doc and named in the registry, each registry entry's
committed inputs are present, and redrawing one from the committed scores gives the numbers
committed beside it (a wrong command is caught)."""
from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

import pytest

from conftest import REPO, load_script

figures = load_script("benchmarks/figures.py")


def tracked_docs() -> dict[str, str]:
    names = subprocess.run(["git", "ls-files", "*.md"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    return {n: (REPO / n).read_text() for n in names}


def test_every_file_in_docs_figures_is_cited_and_every_figure_is_in_the_registry():
    docs = "\n".join(tracked_docs().values())
    files = sorted(p.name for p in figures.FIGURES_DIR.iterdir())
    assert files
    uncited = [f for f in files if f"figures/{f}" not in docs]
    assert not uncited, f"files in docs/figures no doc cites: {uncited}"
    pngs = {Path(f).stem for f in files if f.endswith(".png")}
    assert pngs == set(figures.FIGURES), (f"drawn by no registry entry: {sorted(pngs - set(figures.FIGURES))}; "
                                          f"entries without a figure: {sorted(set(figures.FIGURES) - pngs)}")


def test_every_registry_entry_names_a_script_and_its_committed_inputs_exist():
    for name, fig in figures.FIGURES.items():
        assert (REPO / fig.script).is_file(), name
        assert fig.kind in ("results", "data", "run"), name
        if fig.kind != "results":
            assert fig.note, f"{name}: a figure that cannot be redrawn from the repository says why"
        if fig.kind in ("results", "data"):
            assert (REPO / fig.result).is_file() and fig.compare, name
            assert not figures.missing_inputs(fig), f"{name}: {figures.missing_inputs(fig)}"
    # the shipped recipe's heat map reads the committed scores of its run
    assert "benchmarks/results/generalisation_fixed_s1_135_scores.npz" in figures.FIGURES["generalisation_fixed_s1_135"].committed_inputs()


def test_the_shipped_recipe_heat_map_redraws_with_the_committed_numbers(tmp_path, capsys):
    assert figures.main(["check", "generalisation_fixed_s1_135"]) == 0
    assert "matches" in capsys.readouterr().out
    assert figures.main(["make", "generalisation_fixed_s1_135", "--out_dir", str(tmp_path)]) == 0
    png = tmp_path / "generalisation_fixed_s1_135.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_make_writes_where_a_relative_out_dir_points_from_the_callers_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert figures.main(["make", "threshold_logo", "--out_dir", "figs"]) == 0
    assert (tmp_path / "figs" / "threshold_logo.png").is_file() and not (REPO / "figs").exists()


def test_check_catches_a_command_that_did_not_make_the_figure(monkeypatch, capsys):
    good = figures.FIGURES["generalisation_fixed_s1_135"]
    wrong = dataclasses.replace(good, args=tuple("patch96nopool_crop192" if a == "patch96nopool" else a for a in good.args))
    monkeypatch.setitem(figures.FIGURES, "generalisation_fixed_s1_135", wrong)
    assert figures.main(["check", "generalisation_fixed_s1_135"]) == 1
    assert "DIFFERS" in capsys.readouterr().out


def test_figures_of_other_kinds_are_listed_not_redrawn(capsys):
    assert figures.main(["check", "learning_curve"]) == 1
    assert "not redrawable here" in capsys.readouterr().out
    assert figures.main(["list"]) == 0
    out = capsys.readouterr().out
    assert "learning_curve" in out and "run" in out and "MISSING" not in out
    with pytest.raises(SystemExit):
        figures.main(["make", "no_such_figure"])


def test_accuracy_by_crop_draws_its_figure_from_a_report(tmp_path):
    """The figure of kind 'data' whose scoring takes minutes: its drawing, from the committed report."""
    import json

    bench = load_script("benchmarks/accuracy_by_crop.py")
    report = json.loads((REPO / figures.FIGURES["accuracy_by_crop"].result).read_text())
    assert list(report["models"]) == ["base_sd1x.pth", "npr_f2.pth"]  # the files the registry's command scores
    bench.plot(report, tmp_path / "a.png")
    assert (tmp_path / "a.png").read_bytes()[:4] == b"\x89PNG"
