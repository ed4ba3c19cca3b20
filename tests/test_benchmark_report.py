"""bitmind.report.write_report: the JSON at ``out`` and the markdown table beside it, as the
benchmark scripts (logo_paired.py, aux_attribution.py, serve_crop.py, ...) write them."""
from __future__ import annotations

import json

import pytest

from bitmind.report import report_path, write_report
from conftest import load_script

RESULT = {"arm": "patch96aux01", "regimes": {"validator": {"auc": 0.75, "folds": ["gans", "sdxl"]}}, "n": 3, "none": None}
MD = "| fold | AUC |\n|---|---|\n| gans | 0.750 |\n| mean | – |\n"


def test_writes_the_json_and_the_markdown_beside_it(tmp_path):
    out = tmp_path / "res.json"
    md_path = write_report(out, RESULT, MD)
    assert md_path == tmp_path / "res.md"
    assert json.loads(out.read_text()) == RESULT
    assert out.read_text() == json.dumps(RESULT, indent=2)  # indent 2, no trailing newline: as the scripts wrote it
    assert md_path.read_text() == MD
    assert sorted(p.name for p in tmp_path.iterdir()) == ["res.json", "res.md"]


def test_creates_the_parent_folders_and_takes_a_str(tmp_path):
    out = tmp_path / "a" / "b" / "deeper.v2.json"
    md_path = write_report(str(out), RESULT, MD)
    assert out.is_file() and md_path == tmp_path / "a" / "b" / "deeper.v2.md" and md_path.read_text() == MD


def test_indent_and_trailing_newline(tmp_path):
    """serve_crop.py's form: indent 1 and a newline at the end."""
    out = tmp_path / "sc.json"
    write_report(out, RESULT, MD, indent=1, trailing_newline=True)
    text = out.read_text()
    assert text == json.dumps(RESULT, indent=1) + "\n"
    assert text.endswith("}\n") and '\n "arm"' in text and json.loads(text) == RESULT


def test_rewrites_what_is_there(tmp_path):
    out = tmp_path / "r.json"
    write_report(out, {"old": 1, "longer": "x" * 100}, "old table\n" * 20)
    write_report(out, {"new": 2}, "new\n")
    assert json.loads(out.read_text()) == {"new": 2} and (tmp_path / "r.md").read_text() == "new\n"


@pytest.mark.parametrize("which", ["json", "md"])
def test_an_interrupted_write_leaves_the_old_files_whole(tmp_path, monkeypatch, which):
    """A Ctrl-C (or a crash) mid-write: each file is the old one or the new one, never half,
    and no temporary file is left beside them; another script reads it with read_report."""
    from pathlib import Path

    out = tmp_path / "r.json"
    write_report(out, RESULT, MD)
    real_write_text = Path.write_text

    def half_then_interrupt(self, text, *a, **kw):
        if (which == "json") == text.startswith("{"):
            real_write_text(self, text[: len(text) // 2], *a, **kw)
            raise KeyboardInterrupt
        return real_write_text(self, text, *a, **kw)

    monkeypatch.setattr(Path, "write_text", half_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        write_report(out, {"new": 2, "pad": "y" * 200}, "new table\n" * 30)
    monkeypatch.undo()
    md = tmp_path / "r.md"
    if which == "json":  # stopped at the first file: both old
        assert json.loads(out.read_text()) == RESULT and md.read_text() == MD
    else:  # the JSON is whole and new, the table old
        assert json.loads(out.read_text())["new"] == 2 and md.read_text() == MD
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json", "r.md"]


def test_a_json_named_md_is_refused_before_anything_is_written(tmp_path):
    """Its table would go to the same path and overwrite the JSON."""
    with pytest.raises(ValueError, match=r"\.md"):
        write_report(tmp_path / "sub" / "res.md", {"a": 1}, MD)
    assert not (tmp_path / "sub").exists()


@pytest.mark.parametrize("script, args", [
    ("benchmarks/aux_attribution.py", ["--scores", "missing.npz", "--spec", "missing.json", "--arm", "a"]),
    ("benchmarks/logo_paired.py", ["--a", "missing.npz", "--b", "missing.npz", "--spec", "missing.json"]),
])
def test_a_scripts_out_named_md_is_a_usage_error_before_any_work(tmp_path, capsys, script, args):
    """Refused while the options are read (the inputs named here do not even exist), not after
    the work, when write_report would refuse it with a traceback."""
    with pytest.raises(SystemExit) as e:
        load_script(script).main([*args, "--out", str(tmp_path / "res.md")])
    assert e.value.code == 2 and "ends in .md" in capsys.readouterr().err
    assert report_path("") == "" and report_path("r.json") == "r.json"
