"""``hf:PATH`` data specs (training, ``bitmind.eval``, ``bitmind.calibrate``, the validator) read a
local Hugging Face dataset's ``label`` column as ``bitmind.download_data`` does: a ClassLabel by
its names in either order, strings by name. Without a label column and without ``:real`` /
``:fake`` the spec is an error; with a role the column is ignored, with a warning naming how many
rows disagree. Real pictures are dark and fake ones bright, so each row's class can be checked
against its pixels (and the brightness model of ``eval_helpers`` scores them by hand). No network."""
import json
import logging
from pathlib import Path

import pytest
from PIL import Image

from bitmind.data import open_source
from bitmind.data.sources import LabelError
from bitmind.evaluation import open_sources

from eval_helpers import save_brightness_model

DARK, BRIGHT = 40, 220  # real, fake


def _save(path: Path, classes: list[str], feature="classlabel", names=("fake", "real"), label=True) -> Path:
    """A save_to_disk dataset of 32x32 solid pictures, dark for "real" and bright for "fake",
    with a ``label`` column as ``feature``: a ClassLabel of ``names``, or the strings as written."""
    import datasets

    imgs = [Image.new("RGB", (32, 32), (DARK,) * 3 if c == "real" else (BRIGHT,) * 3) for c in classes]
    cols, feats = {"image": imgs}, {"image": datasets.Image()}
    if label:
        if feature == "classlabel":
            cols["label"] = [list(names).index(c) for c in classes]
            feats["label"] = datasets.ClassLabel(names=list(names))
        else:
            cols["label"] = list(classes)
            feats["label"] = datasets.Value("string")
    datasets.Dataset.from_dict(cols, features=datasets.Features(feats)).save_to_disk(str(path))
    return path


# 16 real, 21 fake, interleaved (the audit's dataset had 37 rows: real 16, fake 21)
CLASSES = ["real", "fake"] * 16 + ["fake"] * 5
assert CLASSES.count("real") == 16 and CLASSES.count("fake") == 21


def _rows_match_pixels(src, n):
    assert len(src) == n
    for i in range(n):
        level = src.load(i).getpixel((0, 0))[0]
        assert src.label(i) == (0 if level == DARK else 1), f"row {i} (level {level}) read as {src.label(i)}"
        assert src.source_name(i) == f"{'fake' if level == BRIGHT else 'real'}/{src.name}"


@pytest.mark.parametrize("names", [("fake", "real"), ("real", "fake")])
def test_hf_spec_without_role_reads_classlabel_by_name(tmp_path, names):
    path = _save(tmp_path / "hfds", CLASSES, names=names)
    src = open_source(f"hf:{path}")
    _rows_match_pixels(src, 37)
    assert [src.label(i) for i in range(37)] == [int(c == "fake") for c in CLASSES]
    per_source = {}
    for i in range(len(src)):
        per_source[src.source_name(i)] = per_source.get(src.source_name(i), 0) + 1
    assert per_source == {"real/hfds": 16, "fake/hfds": 21}
    assert src.label_mapping == {"real": "real", "fake": "fake"}


def test_hf_spec_without_role_reads_string_labels(tmp_path):
    classes = ["real", "fake", "real", "fake"]
    written = ["Authentic", "AI_generated", "real", "FAKE"]
    path = _save(tmp_path / "strs", classes, feature="string")
    import datasets

    ds = datasets.load_from_disk(str(path)).remove_columns("label").add_column("label", written)
    ds.save_to_disk(str(tmp_path / "strs2"))
    src = open_source(f"hf:{tmp_path / 'strs2'}")
    assert [src.label(i) for i in range(4)] == [0, 1, 0, 1]
    _rows_match_pixels(src, 4)


def test_eval_reads_the_label_column_and_reports_both_halves(tmp_path):
    from bitmind.cli.eval import main

    path = _save(tmp_path / "hfds", CLASSES, names=("fake", "real"))
    model = save_brightness_model(tmp_path / "m.pth", gain=10.0)
    out = tmp_path / "r.json"
    assert main(["--model", str(model), "--data", f"hf:{path}", "--json", str(out), "--device", "cpu",
                 "--quiet", "--batch_size", "8"]) == 0
    r = json.loads(out.read_text())
    assert r["n"] == 37
    assert r["confusion"] == {"tn": 16, "fp": 0, "fn": 0, "tp": 21}
    assert r["balanced_accuracy"] == pytest.approx(1.0)
    assert {k: v["n"] for k, v in r["per_source"].items()} == {"real/hfds": 16, "fake/hfds": 21}


def test_several_roots_keep_per_source_keys(tmp_path):
    a = _save(tmp_path / "a" / "hfds", ["real", "fake", "fake"])
    b = _save(tmp_path / "b" / "other", ["real"], label=False)
    srcs = open_sources([f"hf:{a}", f"hf:{b}:real"])
    names = sorted({s.source_name(i) for s in srcs for i in range(len(s))})
    assert names == ["hfds:fake/hfds", "hfds:real/hfds", "other:real/other"]


def test_hf_spec_without_role_or_label_column_is_an_error(tmp_path):
    path = _save(tmp_path / "nolabel", ["fake", "fake"], label=False)
    with pytest.raises(LabelError) as e:
        open_source(f"hf:{path}")
    msg = str(e.value)
    assert str(path) in msg and "'label'" in msg and ":real" in msg and ":fake" in msg
    assert [open_source(f"hf:{path}:fake").label(i) for i in range(2)] == [1, 1]


def test_eval_without_role_or_label_column_exits_with_message(tmp_path, capsys):
    from bitmind.cli.eval import main

    path = _save(tmp_path / "nolabel", ["fake", "fake"], label=False)
    model = save_brightness_model(tmp_path / "m.pth", gain=10.0)
    assert main(["--model", str(model), "--data", f"hf:{path}", "--device", "cpu", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "no role given" in err and "append :real or :fake" in err


def test_unreadable_labels_name_the_values_and_say_label_map_is_not_taken_here(tmp_path):
    import datasets

    imgs = [Image.new("RGB", (8, 8)) for _ in range(2)]
    datasets.Dataset.from_dict({"image": imgs, "label": ["unknown", "real"]},
                               features=datasets.Features({"image": datasets.Image(), "label": datasets.Value("string")})
                               ).save_to_disk(str(tmp_path / "odd"))
    with pytest.raises(LabelError, match="'unknown'.*download_data only"):
        open_source(f"hf:{tmp_path / 'odd'}")
    # an explicit label_map (the downloader's semantics) is honoured
    src = open_source(f"hf:{tmp_path / 'odd'}", label_map={"unknown": "fake"})
    assert [src.label(i) for i in range(2)] == [1, 0]


def test_role_suffix_overrides_the_column_with_a_warning(tmp_path, caplog):
    path = _save(tmp_path / "hfds", CLASSES, names=("fake", "real"))
    with caplog.at_level(logging.WARNING, logger="bitmind.data.sources"):
        src = open_source(f"hf:{path}:real")
    assert [src.label(i) for i in range(37)] == [0] * 37
    assert {src.source_name(i) for i in range(37)} == {"real/hfds"}
    (msg,) = [r.getMessage() for r in caplog.records if "ignored" in r.getMessage()]
    assert "'label' column is ignored because :real was given" in msg
    assert "21 of them are fake" in msg and "all 37 rows are read as real" in msg


def test_role_that_agrees_with_the_column_is_not_warned_about(tmp_path, caplog):
    path = _save(tmp_path / "fakes", ["fake"] * 4)
    with caplog.at_level(logging.WARNING, logger="bitmind.data.sources"):
        src = open_source(f"hf:{path}:fake")
    assert [src.label(i) for i in range(4)] == [1] * 4
    assert not [r for r in caplog.records if "ignored" in r.getMessage()]


def test_the_downloader_summarises_a_dataset_as_an_hf_spec_reads_it(tmp_path, caplog):
    """One rule for both: a dataset with neither a role nor a label column was summarised as
    fake by ``bitmind.download_data`` while the ``hf:`` spec of the same path refused it; a
    role overriding a disagreeing column was warned about by the spec only."""
    from bitmind.cli.download_data import parse_target, summarise_local

    bare = _save(tmp_path / "bare", CLASSES, label=False)
    out = summarise_local(parse_target(str(bare)))
    assert not out.ok and ":real or :fake" in (out.error or "")
    labelled = _save(tmp_path / "labelled", CLASSES)
    with caplog.at_level(logging.WARNING, logger="bitmind.data.sources"):
        out = summarise_local(parse_target(f"{labelled}:real"))
    assert out.error is None and "column says 21 of them are fake" in caplog.text
