"""Where ``python -m bitmind.eval`` writes, and what its table says (operator audit of the
thirty-fourth session): a report never lands on the model, a picture or a data folder; it is
written at once, through no link; a failed write loses no result; one-class data, pictures
of a source that could not be read and the forward's precision are said."""
import json
import os

import pytest

from bitmind.cli.eval import main
from bitmind.evaluation import evaluate

from eval_helpers import save_brightness_model, solid_image

LEVELS = [("real/a", 50), ("real/a", 100), ("fake/x", 180), ("fake/x", 220)]


@pytest.fixture()
def data(tmp_path):
    root = tmp_path / "data"
    for k, (src, level) in enumerate(LEVELS):
        solid_image(root / src / f"img{k}.png", level)
    return root


@pytest.fixture()
def model(tmp_path):
    return save_brightness_model(tmp_path / "m.pth", gain=10.0)


def _run(model, data, *extra) -> int:
    return main(["--model", str(model), "--data", str(data), "--device", "cpu", "--quiet", *extra])


def test_a_report_is_never_written_over_the_model(model, data, capsys):
    before = model.read_bytes()
    assert _run(model, data, "--json", str(model)) == 2
    assert "is the model file" in capsys.readouterr().err and model.read_bytes() == before
    link = model.parent / "link.json"
    link.symlink_to(model)  # the same file by another name
    assert _run(model, data, "--json", str(link)) == 2
    assert "is the model file" in capsys.readouterr().err and model.read_bytes() == before


def test_a_report_is_not_written_over_a_picture_or_into_the_data(model, data, tmp_path, capsys):
    picture = data / "real" / "a" / "img0.png"
    before = picture.read_bytes()
    assert _run(model, data, "--json", str(picture)) == 2
    assert "model, picture or dataset file" in capsys.readouterr().err and picture.read_bytes() == before
    assert _run(model, data, "--json", str(data / "real" / "report.json")) == 2
    assert "where the pictures are read from" in capsys.readouterr().err and not (data / "real" / "report.json").exists()
    assert _run(model, data, "--plots", str(data / "fake" / "plots")) == 2  # plots there would be read as pictures
    assert "where the pictures are read from" in capsys.readouterr().err and not (data / "fake" / "plots").exists()
    assert _run(model, data, "--json", str(tmp_path / "fakes.parquet")) == 2  # an hf: dataset file
    assert "model, picture or dataset file" in capsys.readouterr().err and not (tmp_path / "fakes.parquet").exists()
    # beside real/ and fake/, at the root, nothing is read as a picture: allowed (review finding)
    assert _run(model, data, "--json", str(data / "report.json"), "--plots", str(data / "plots")) == 0
    assert json.loads((data / "report.json").read_text())["n"] == 4 and (data / "plots" / "roc.png").exists()


def test_a_linked_report_path_replaces_the_link_not_its_target(model, data, tmp_path):
    elsewhere = tmp_path / "keep.txt"
    elsewhere.write_text("someone else's file")
    link = tmp_path / "out.json"
    link.symlink_to(elsewhere)
    assert _run(model, data, "--json", str(link)) == 0
    assert elsewhere.read_text() == "someone else's file"
    assert not link.is_symlink() and json.loads(link.read_text())["n"] == 4


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes read-only files")
def test_a_read_only_report_is_refused_before_inference(model, data, tmp_path, capsys):
    out = tmp_path / "r.json"
    out.write_text("{}")
    out.chmod(0o444)
    assert _run(model, data, "--json", str(out)) == 2
    assert "read-only" in capsys.readouterr().err


def test_a_failed_write_still_prints_the_table(model, data, tmp_path, capsys, monkeypatch):
    import bitmind.evaluation as evaluation

    def full_disk(report, path):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(evaluation, "write_report_json", full_disk)
    assert _run(model, data, "--json", str(tmp_path / "r.json")) == 2
    out, err = capsys.readouterr()
    assert "overall" in out and "real/a" in out  # the result is on screen
    assert "could not be written" in err and "No space left" in err


def test_ctrl_c_says_nothing_was_written(model, data, tmp_path, capsys, monkeypatch):
    import bitmind.cli.eval as cli

    def interrupted(*a, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "evaluate", interrupted)
    assert _run(model, data, "--json", str(tmp_path / "r.json")) == 130
    assert "interrupted: no report written" in capsys.readouterr().err and not (tmp_path / "r.json").exists()


def test_one_class_data_is_said_and_a_source_of_unreadable_pictures_is_named(model, tmp_path, capsys):
    root = tmp_path / "real_only"
    solid_image(root / "real" / "a" / "a.png", 50)
    solid_image(root / "real" / "a" / "b.png", 200)
    (root / "real" / "broken").mkdir(parents=True)
    (root / "real" / "broken" / "x.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    out = tmp_path / "r.json"
    assert _run(model, root, "--json", str(out)) == 0
    text = capsys.readouterr().out
    assert "note: only real photos were evaluated" in text and "AUC needs both classes" in text
    assert "real/broken (1 unreadable)" in text and "not in the table" in text
    report = json.loads(out.read_text())
    assert report["skipped_by_source"] == {"real/broken": 1} and "real/broken" not in report["per_source"]


def test_the_report_says_which_arithmetic_the_forward_ran_in(model, data, monkeypatch):
    monkeypatch.setenv("BITMIND_CPU_BF16", "0")
    report = evaluate(model, data, device="cpu", progress=False)
    assert report["options"]["precision"] == "fp32"


def test_amp_chooses_the_arithmetic_whatever_the_cpu(model, data, tmp_path, monkeypatch):
    """On a CPU with native bf16, "auto" scores in bf16 only where a timing says it is
    faster: two evaluations could run in different arithmetic (the shipped file's balanced
    accuracy read 0.836 and 0.834 on one machine). ``--amp none`` is fp32 everywhere and
    ``--amp bf16`` bf16 everywhere, whatever the CPU says of itself."""
    monkeypatch.setenv("BITMIND_CPU_BF16", "1")  # a CPU that says it runs bf16 natively
    assert evaluate(model, data, device="cpu", progress=False, amp="none")["options"]["precision"] == "fp32"
    monkeypatch.setenv("BITMIND_CPU_BF16", "0")  # one that says it does not
    assert evaluate(model, data, device="cpu", progress=False, amp="bf16")["options"]["precision"] == "bf16 autocast"
    out = tmp_path / "r.json"
    assert _run(model, data, "--amp", "none", "--json", str(out)) == 0
    assert json.loads(out.read_text())["options"]["precision"] == "fp32"


def test_forward_precision_names_each_serving_form():
    import torch

    from bitmind.inference import CpuBf16, forward_precision

    net = torch.nn.Conv2d(3, 1, 1)
    assert forward_precision(net, None) == "fp32"
    assert forward_precision(CpuBf16(net), None) == "bf16 autocast"
    assert forward_precision(net, torch.bfloat16) == "bf16 autocast"
    assert forward_precision(net, torch.float16) == "fp16 autocast"
