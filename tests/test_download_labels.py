"""bitmind.download_data on local Hugging Face datasets whose classes come from a ``label``
column: string labels, ClassLabel names in either order, 0/1 integers, labels that cannot be
mapped, and ``--label_map``. Real pictures are red and fake ones blue, so each row's class can
be checked against its pixels. No network."""
import json
from pathlib import Path

import pytest
from PIL import Image

import bitmind.cli.download_data as dd

RED, BLUE = (255, 0, 0), (0, 0, 255)  # real, fake


def _save(path: Path, labels, colours, feature) -> Path:
    """A save_to_disk dataset of 32x32 pictures of one colour each, with a ``label`` column."""
    import datasets

    imgs = [Image.new("RGB", (32, 32), c) for c in colours]
    feats = datasets.Features({"image": datasets.Image(), "label": feature})
    datasets.Dataset.from_dict({"image": imgs, "label": labels}, features=feats).save_to_disk(str(path))
    return path


class NoHub:
    """Stands in for datasets.load_dataset: records calls, serves an empty dataset."""

    def __init__(self):
        self.calls = []

    def __call__(self, path, **kw):
        import datasets

        self.calls.append(path)
        return datasets.DatasetDict({"train": datasets.Dataset.from_dict({"image": [None]})})


@pytest.fixture
def hub(monkeypatch):
    import datasets

    h = NoHub()
    monkeypatch.setattr(datasets, "load_dataset", h)
    return h


def _summary(tmp_path, path, *extra):
    out = tmp_path / "o.json"
    rc = dd.main(["--datasets", str(path), "--verify", "-1", "--json", str(out), *extra])
    assert rc == 0
    (o,) = json.loads(out.read_text())
    assert o["ok"] and o["kind"] == "local" and o["summary"]["format"] == "hf"
    return o["summary"]


def _check_rows(path, colours, label_map=None):
    """Each row's class, as download_data and training (``HFDatasetSource`` with a label
    column) read it, agrees with its colour (red real, blue fake)."""
    from bitmind.data.sources import HFDatasetSource, open_hf_dataset

    ds = open_hf_dataset(str(path))
    src = HFDatasetSource(str(path), role=None, dataset=ds, label_column="label", label_map=label_map)
    labels = [src.label(i) for i in range(len(src))]
    assert labels == dd.resolve_labels(ds, "label", label_map)[0]
    for i, (label, colour) in enumerate(zip(labels, colours)):
        pixel = ds[i]["image"].convert("RGB").getpixel((0, 0))
        assert pixel == colour
        assert label == (0 if colour == RED else 1), f"row {i}: {pixel} read as {label}"


def _check_counts(summary, name, n_real, n_fake):
    assert summary["n"] == n_real + n_fake
    assert (summary["n_real"], summary["n_fake"]) == (n_real, n_fake)
    expected = {k: v for k, v in {f"fake/{name}": n_fake, f"real/{name}": n_real}.items() if v}
    assert summary["per_source"] == expected
    assert summary["checked"] == n_real + n_fake and summary["unreadable"] == 0


def test_string_labels_are_read_by_name(tmp_path, hub, capsys):
    import datasets

    labels = ["Real", "AI", "fake", " Real ", "real", "AI_Generated", "Photo"]
    colours = [RED, BLUE, BLUE, RED, RED, BLUE, RED]
    path = _save(tmp_path / "strings", labels, colours, datasets.Value("string"))
    s = _summary(tmp_path, path)
    _check_counts(s, "strings", n_real=4, n_fake=3)
    assert s["labels"] == {"Real": "real", "AI": "fake", "fake": "fake", " Real ": "real", "real": "real",
                           "AI_Generated": "fake", "Photo": "real"}
    assert "real 4, fake 3" in capsys.readouterr().out
    _check_rows(path, colours)
    assert hub.calls == []


def test_classlabel_fake_first_is_read_by_its_names(tmp_path, hub):
    """names=["fake", "real"]: index 0 is fake. It was read as 0 = real, every row flipped."""
    import datasets

    colours = [RED, BLUE, BLUE, RED, RED]
    path = _save(tmp_path / "fakefirst", [1, 0, 0, 1, 1], colours, datasets.ClassLabel(names=["fake", "real"]))
    s = _summary(tmp_path, path)
    _check_counts(s, "fakefirst", n_real=3, n_fake=2)
    assert s["labels"] == {"real": "real", "fake": "fake"}
    _check_rows(path, colours)


def test_classlabel_real_first_and_other_names(tmp_path, hub):
    import datasets

    colours = [RED, BLUE, RED, BLUE, BLUE]
    path = _save(tmp_path / "realfirst", [0, 1, 0, 1, 1], colours, datasets.ClassLabel(names=["Real", "Synthetic"]))
    s = _summary(tmp_path, path)
    _check_counts(s, "realfirst", n_real=2, n_fake=3)
    _check_rows(path, colours)
    # Names in the other order with other words: still by name.
    path2 = _save(tmp_path / "genfirst", [1, 0, 1, 0, 0], colours, datasets.ClassLabel(names=["generated", "authentic"]))
    _check_counts(_summary(tmp_path, path2), "genfirst", n_real=2, n_fake=3)
    _check_rows(path2, colours)


def test_integer_labels_keep_0_real_1_fake(tmp_path, hub):
    import datasets

    colours = [RED, BLUE, BLUE, RED, BLUE]
    path = _save(tmp_path / "ints", [0, 1, 1, 0, 1], colours, datasets.Value("int64"))
    s = _summary(tmp_path, path)
    _check_counts(s, "ints", n_real=2, n_fake=3)
    _check_rows(path, colours)


@pytest.mark.parametrize("labels,feature,named", [
    (["real", "unknown", "fake", "maybe"], "string", ["'unknown'", "'maybe'"]),
    ([0, 1, 2, 1], "int64", ["'2'"]),
    ([0, 1, 2, 1], "classlabel", ["'other'"]),
])
def test_unmappable_labels_stop_before_anything_is_written(tmp_path, hub, capsys, labels, feature, named):
    """One line naming the values, exit 2, no download (the hub dataset after it is not
    fetched), no --json, no cache folder. It was a KeyError traceback (strings) or a summary
    that counted label 2 as neither class."""
    import datasets

    feat = {"string": datasets.Value("string"), "int64": datasets.Value("int64"),
            "classlabel": datasets.ClassLabel(names=["real", "fake", "other"])}[feature]
    path = _save(tmp_path / "odd", labels, [RED, BLUE, RED, BLUE], feat)
    out, cache = tmp_path / "o.json", tmp_path / "cache"
    capsys.readouterr()  # the dataset's own saving progress
    rc = dd.main(["--datasets", str(path), "ffhq-256", "--json", str(out), "--cache_dir", str(cache)])
    captured = capsys.readouterr()
    assert rc == 2
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(path) in lines[0]
    assert all(v in lines[0] for v in named) and "--label_map" in lines[0] and ":real" in lines[0]
    assert hub.calls == [] and not out.exists() and not cache.exists()
    # Called directly, summarise_local reports the same as that dataset's failure.
    o = dd.summarise_local(dd.parse_target(str(path)))
    assert not o.ok and all(v in o.error for v in named)
    # A role for the whole dataset still works (the label column is then not read).
    assert dd.main(["--datasets", f"{path}:fake", "--json", str(out)]) == 0
    assert json.loads(out.read_text())[0]["summary"]["n_fake"] == 4


def test_label_map_option(tmp_path, hub, capsys):
    import datasets

    colours = [RED, BLUE, RED, BLUE]
    path = _save(tmp_path / "custom", ["original", "edited", "Original", "unknown"], colours, datasets.Value("string"))
    s = _summary(tmp_path, path, "--label_map", "ORIGINAL=real", "edited=fake", "unknown=fake")
    _check_counts(s, "custom", n_real=2, n_fake=2)
    _check_rows(path, colours, dd.parse_label_map(["original=real", "edited=fake", "unknown=fake"]))
    # It overrides the built-in names and the 0/1 convention, and a ClassLabel index works too.
    flipped = _save(tmp_path / "flipped", [1, 0, 1, 0], colours, datasets.Value("int64"))
    _check_counts(_summary(tmp_path, flipped, "--label_map", "1=real", "0=fake"), "flipped", n_real=2, n_fake=2)
    cl = _save(tmp_path / "cl", [0, 1, 0, 1], colours, datasets.ClassLabel(names=["a", "b"]))
    _check_counts(_summary(tmp_path, cl, "--label_map", "a=real", "1=fake"), "cl", n_real=2, n_fake=2)
    # A malformed entry is a usage error (exit 2) before anything runs.
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        dd.main(["--datasets", str(path), "--label_map", "edited=maybe"])
    assert e.value.code == 2 and "VALUE=real or VALUE=fake" in capsys.readouterr().err
    assert hub.calls == []


def test_label_map_matches_floats_and_booleans_and_never_lets_an_index_override_a_name(tmp_path, hub):
    """A float column [0.0, 1.0] with --label_map 0=fake 1=real was read 0.0 -> real (the keys
    were "0.0" / "1.0", so the map never matched and the default applied: the reverse of what
    was asked). A ClassLabel index key ("0") matched a class *named* "0" and another by index."""
    import datasets

    colours = [BLUE, RED, BLUE, RED]
    floats = _save(tmp_path / "floats", [0.0, 1.0, 0.0, 1.0], colours, datasets.Value("float32"))
    _check_counts(_summary(tmp_path, floats, "--label_map", "0=fake", "1=real"), "floats", n_real=2, n_fake=2)
    _check_rows(floats, colours, dd.parse_label_map(["0=fake", "1=real"]))
    bools = _save(tmp_path / "bools", [False, True, False, True], colours, datasets.Value("bool"))
    _check_rows(bools, colours, dd.parse_label_map(["0=fake", "1=real"]))
    _check_rows(bools, colours, dd.parse_label_map(["false=fake", "true=real"]))
    plain = _save(tmp_path / "plain_bools", [False, True, False, True], [RED, BLUE, RED, BLUE], datasets.Value("bool"))
    _check_rows(plain, [RED, BLUE, RED, BLUE])  # unmapped: False real, True fake
    # names "real" and "0": the key 0 is the class named "0" (index 1), never index 0 ("real")
    named = _save(tmp_path / "named", [0, 1, 0, 1], [RED, BLUE, RED, BLUE], datasets.ClassLabel(names=["real", "0"]))
    _check_rows(named, [RED, BLUE, RED, BLUE], dd.parse_label_map(["0=fake"]))
    # ClassLabel names "0" / "1" (folders named 0/ and 1/) follow the 0 real / 1 fake convention
    digits = _save(tmp_path / "digits", [0, 1, 1, 0], [RED, BLUE, BLUE, RED], datasets.ClassLabel(names=["0", "1"]))
    _check_rows(digits, [RED, BLUE, BLUE, RED])


def test_missing_labels_and_many_values_give_a_short_error(tmp_path, hub, capsys):
    """NaN never equals itself, so every NaN row was listed again (200k rows: a 2.8 MB line); a
    1000-class label column listed every name. Now a missing label is one value (None) and at
    most ten values are listed."""
    import datasets

    from bitmind.data.sources import LabelError, resolve_labels

    nan = float("nan")
    ds = datasets.Dataset.from_dict({"label": [0.0, nan, 1.0] + [nan] * 5000})
    with pytest.raises(LabelError) as e:
        resolve_labels(ds, "label", name="nans")
    assert "value(s) None (values found: '0', None, '1')" in str(e.value) and len(str(e.value)) < 400
    many = datasets.Dataset.from_dict({"label": list(range(1000))},
                                      features=datasets.Features({"label": datasets.ClassLabel(names=[f"n{i:04d}" for i in range(1000)])}))
    with pytest.raises(LabelError) as e:
        resolve_labels(many, "label", name="imagenet-like")
    msg = str(e.value)
    assert "'n0009' and 990 more" in msg and "and 1000 more" not in msg and len(msg) < 600
    assert "--label_map n0000=real or n0000=fake" in msg
    # in row order also where the dataset is a selection of another (no Arrow shortcut there)
    picked = datasets.Dataset.from_dict({"label": ["fake", "real", "fake"]}).select([2, 1, 0, 1])
    assert resolve_labels(picked, "label")[0] == [1, 0, 1, 0]
