"""An operator's mistake on the command line of the harness, the demo and the local chain
is one line ``error: ...`` on stderr and exit status 2, found before anything expensive
starts (a chain folder, wallets, a miner), as ``python -m bitmind.eval`` does it."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bitmind import local_chain
from bitmind.cli import demo

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "tests" / "data" / "samples"  # CLASS/SOURCE layout, shipped in the repository
NOT_AN_IMAGE = REPO / "README.md"


def the_error_line(stderr: str) -> str:
    """The one non-empty stderr line, which must start with ``error:`` (no traceback)."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one error line, got {len(lines)}:\n{stderr}"
    assert lines[0].startswith("error:"), stderr
    return lines[0]


def run_module(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, cwd=REPO, timeout=600)


# --------------------------------------------------------------------------- harness
def _harness_case(case: str, tmp_path: Path, model: Path) -> tuple[list[str], list[str]]:
    """(arguments, words the error line must hold) for one mistake."""
    good = ["--models", str(model), "--data", str(SAMPLES)]
    if case == "missing model":
        return ["--models", str(tmp_path / "nope.pth"), "--data", str(SAMPLES)], ["nope.pth", "not found"]
    if case == "not a model":
        return ["--models", str(NOT_AN_IMAGE), "--data", str(SAMPLES)], ["README.md"]
    if case == "model is a folder":
        return ["--models", str(tmp_path), "--data", str(SAMPLES)], [str(tmp_path), "not a file"]
    if case == "missing data":
        return ["--models", str(model), "--data", str(tmp_path / "nope")], ["nope", "not found"]
    if case == "json is a folder":
        return good + ["--json", str(tmp_path)], ["--json", "folder"]
    if case == "root is a file":
        return ["--models", str(model), "--data", str(SAMPLES), "--root", str(NOT_AN_IMAGE)], ["--root", "file"]
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["missing model", "not a model", "model is a folder", "missing data",
                                  "json is a folder", "root is a file"])
def test_harness_bad_input_is_one_error_line_before_any_chain(case, tmp_path, tiny_model):
    args, words = _harness_case(case, tmp_path, tiny_model)
    chain = tmp_path / "chain"
    if "--root" not in args:
        args += ["--root", str(chain)]  # the local chain folder the harness would create first
    p = run_module("bitmind.validator.harness", *args, "--challenges", "2")
    assert p.returncode == 2, p.stdout + p.stderr
    line = the_error_line(p.stderr)
    for w in words:
        assert w in line, line
    assert "kept changing" not in line and "Traceback" not in p.stderr
    assert not chain.exists(), "the harness opened a local chain before checking its inputs"


def test_run_harness_raises_before_starting_a_miner(tmp_path, tiny_model, monkeypatch):
    from bitmind.validator import harness

    def no_network(*a, **k):
        pytest.fail("the local network was started for a bad input")

    monkeypatch.setattr(harness.LocalNetwork, "__init__", no_network)
    with pytest.raises(harness.HarnessInputError, match="not found"):
        harness.run_harness([tmp_path / "nope.pth"], str(SAMPLES), challenges=1)
    with pytest.raises(harness.HarnessInputError, match="README.md"):
        harness.run_harness([NOT_AN_IMAGE], str(SAMPLES), challenges=1)
    with pytest.raises(harness.HarnessInputError, match="data folder not found"):
        harness.run_harness([tiny_model], str(tmp_path / "nope"), challenges=1)
    with pytest.raises(harness.HarnessInputError, match="folder"):
        harness.run_harness([tiny_model], str(SAMPLES), challenges=1, json_out=tmp_path)


# --------------------------------------------------------------------------- demo
@pytest.fixture
def no_miner(monkeypatch):
    """Fail the test if the demo creates its chain or starts the miner process."""
    def started(*a, **k):
        pytest.fail("the demo set up the chain / started the miner for a bad input")

    monkeypatch.setattr(local_chain, "local_setup", started)
    monkeypatch.setattr(demo.subprocess, "Popen", started)


@pytest.mark.parametrize("case", ["missing image", "not an image", "image is a folder", "model not a model"])
def test_demo_bad_input_is_one_error_line_before_the_miner(case, tmp_path, tiny_model, no_miner, capsys):
    root = tmp_path / "chain"
    args = {"missing image": ["--image", str(tmp_path / "nope.jpg")],
            "not an image": ["--image", str(NOT_AN_IMAGE)],
            "image is a folder": ["--image", str(tmp_path)],
            "model not a model": ["--model", str(NOT_AN_IMAGE)]}[case]
    if "--model" not in args:
        args += ["--model", str(tiny_model)]
    code = demo.main(args + ["--root", str(root)])
    err = capsys.readouterr().err
    assert code == 2, err
    line = the_error_line(err)
    assert {"missing image": "nope.jpg", "image is a folder": "folder"}.get(case, "README.md") in line, line
    if case == "missing image":
        assert "not found" in line
    assert "BytesIO" not in line and "demo failed" not in err
    assert not root.exists(), "the demo created its chain folder before checking its inputs"


def test_demo_module_missing_image_starts_no_miner(tmp_path):
    root = tmp_path / "chain"
    p = run_module("bitmind.demo", "--image", str(tmp_path / "nope.jpg"), "--root", str(root))
    assert p.returncode == 2, p.stdout + p.stderr
    line = the_error_line(p.stderr)
    assert "nope.jpg" in line and "not found" in line
    assert "starting miner" not in p.stdout and not (root / "miner.log").exists() and not root.exists()


# --------------------------------------------------------------------------- local chain
@pytest.mark.parametrize("argv, words", [
    (["show", "{file}"], ["README.md", "not a folder"]),
    (["show", "{file}/sub"], ["README.md", "Not a directory"]),
    (["setup", "{file}"], ["README.md", "not a folder"]),
    (["setup", "{file}/sub"], ["README.md", "not a folder"]),
])
def test_local_chain_root_that_is_a_file(argv, words, tmp_path, capsys):
    f = tmp_path / "README.md"
    f.write_text("not a chain\n")
    assert local_chain.main([a.format(file=f) for a in argv]) == 2
    line = the_error_line(capsys.readouterr().err)
    for w in words:
        assert w in line, line
    assert f.read_text() == "not a chain\n"


def test_local_chain_module_show_a_file(tmp_path):
    p = run_module("bitmind.local_chain", "show", "README.md")
    assert p.returncode == 2, p.stdout + p.stderr
    assert "README.md" in the_error_line(p.stderr)
