"""Every evaluation command line takes several data roots the way the trainer does
(``--data A B``, or the flag repeated), splits each root by picture stem with the
trainer's rule, and keys per-source figures ``ROOT:CLASS/SOURCE``: ``bitmind.eval``,
``base_miner/NPR/validate.py``, ``bitmind.calibrate`` and ``benchmarks/accuracy.py``."""
import json
from pathlib import Path

import pytest

from bitmind import evaluation
from bitmind.cli import calibrate
from bitmind.cli import eval as bm_eval
from bitmind.data import split_of
from bitmind.training import parse_config

from eval_helpers import save_brightness_model, solid_image

from conftest import load_script

REPO = Path(__file__).resolve().parents[1]
N_PICTURES = 40


@pytest.fixture()
def roots(tmp_path):
    """Two roots holding the same picture stems (p0 ... p39), with other classes and
    levels, so that a split by stem must put p<k> in the same split in both."""
    one, two = tmp_path / "one", tmp_path / "two"
    for k in range(N_PICTURES):
        solid_image(one / ("fake" if k % 2 else "real") / "s" / f"p{k}.png", 20 + 5 * k)
        solid_image(two / ("real" if k % 2 else "fake") / "t" / f"p{k}.png", 230 - 5 * k)
    return one, two


def _expected(split: str, seed: int = 0) -> dict[str, int]:
    """Images per ROOT:CLASS/SOURCE in ``split``, computed from the stems alone."""
    out: dict[str, int] = {}
    for k in range(N_PICTURES):
        if split_of(f"p{k}", seed) == split:
            for key in (f"one:{'fake' if k % 2 else 'real'}/s", f"two:{'real' if k % 2 else 'fake'}/t"):
                out[key] = out.get(key, 0) + 1
    return out


def test_eval_takes_several_roots_after_one_flag_or_repeated(roots, tmp_path):
    one, two = roots
    model = save_brightness_model(tmp_path / "m.pth")
    expected = _expected("test")
    assert sum(expected.values()) > 0, "this layout must have test pictures"
    common = ["--model", str(model), "--split", "test", "--device", "cpu", "--quiet"]
    assert bm_eval.main(common + ["--data", str(one), str(two), "--json", str(tmp_path / "a.json")]) == 0
    assert bm_eval.main(common + ["--data", str(one), "--data", str(two), "--json", str(tmp_path / "b.json")]) == 0
    a, b = (json.loads((tmp_path / f"{x}.json").read_text()) for x in "ab")
    assert a["data"] == b["data"] == [str(one), str(two)]
    assert a["n"] == sum(expected.values())
    assert {k: v["n"] for k, v in a["per_source"].items()} == expected
    assert a["per_source"] == b["per_source"] and a["accuracy"] == b["accuracy"]


def test_eval_help_documents_several_roots(capsys):
    with pytest.raises(SystemExit) as e:
        bm_eval.main(["--help"])
    assert e.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--data DIR [DIR ...]" in text and "one or more data roots" in text
    assert "ROOT:CLASS/SOURCE" in text and "--data ../shared/data/sn34-mini ../shared/data/sn34-wide" in text


def test_validate_script_takes_several_roots(roots, tmp_path):
    one, two = roots
    model = save_brightness_model(tmp_path / "m.pth")
    validate = load_script("base_miner/NPR/validate.py")
    out = tmp_path / "v.json"
    # validate.py's default split is the held-out test split.
    assert validate.main(["--model", str(model), "--data", str(one), str(two), "--device", "cpu", "--quiet",
                          "--json", str(out)]) == 0
    v = json.loads(out.read_text())
    assert v["options"]["split"] == "test" and v["data"] == [str(one), str(two)]
    assert {k: s["n"] for k, s in v["per_source"].items()} == _expected("test")


def test_calibrate_pools_the_split_of_every_root(roots, tmp_path):
    one, two = roots
    model = save_brightness_model(tmp_path / "m.pth", gain=3.0)
    out = tmp_path / "cal.pth"
    assert calibrate.main(["--min_per_class", "0", "--model", str(model), "--data", str(one), str(two), "--split", "val",
                           "--device", "cpu", "--out", str(out)]) == 0
    single = calibrate.calibrate(str(model), [str(one)], str(tmp_path / "one.pth"), split="val", challenge=False, min_per_class=0,
                                 device="cpu")
    from bitmind.checkpoint import read_checkpoint

    record = read_checkpoint(out)[1]["metrics"]["calibration"]
    val = _expected("val")
    assert record["n"] == sum(val.values()) > single.record["n"] == sum(n for k, n in val.items() if k.startswith("one:"))
    # --real_target: the same fit, its boundary where that share of the split's real photos pass
    shifted = tmp_path / "cal85.pth"
    assert calibrate.main(["--min_per_class", "0", "--model", str(model), "--data", str(one), str(two), "--split", "val",
                           "--device", "cpu", "--out", str(shifted), "--real_target", "0.85"]) == 0
    rec85 = read_checkpoint(shifted)[1]["metrics"]["calibration"]
    assert rec85["real_target"] == 0.85 and rec85["temperature"] == record["temperature"]
    n_real = sum(n for k, n in val.items() if ":real/" in k)
    assert rec85["logit_bias"] != record["logit_bias"] and abs(rec85["val_real_accuracy_after"] - 0.85) <= 1 / n_real


def test_accuracy_benchmark_takes_several_roots(roots, tmp_path):
    one, two = roots
    model = save_brightness_model(tmp_path / "m.pth")
    accuracy = load_script("benchmarks/accuracy.py")
    out = tmp_path / "res" / "acc.json"
    summary = accuracy.main(["--model", str(model), "--data", str(one), str(two), "--seeds", "0",
                             "--device", "cpu", "--out", str(out)])
    assert json.loads(out.read_text())["data"] == summary["data"] == [str(one), str(two)]
    expected = _expected("test")
    assert summary["results"]["clean"]["n"] == sum(expected.values())
    assert {k: s["n"] for k, s in summary["per_source_clean"].items()} == expected
    assert set(summary["per_source_challenge_seed0"]) == set(expected)


def test_eval_and_trainer_split_a_root_alike(roots):
    """The evaluation split is the trainer's: same stems in the same split, per root."""
    one, two = roots
    cfg = parse_config(["--data", str(one), str(two)])
    assert cfg.data == [str(one), str(two)]
    ds = evaluation.build_dataset(cfg.data, split="val", split_seed=cfg.split_seed)
    from bitmind.training.trainer import build_datasets

    _, val, _ = build_datasets(cfg)
    assert sorted(src.describe(i) for src, i in ds.items) == sorted(src.describe(i) for src, i in val.items)


def test_a_root_given_twice_is_read_once(roots, tmp_path, caplog):
    """``--data d d/`` counted every picture twice (n and every per-source row doubled, one
    source listed twice); now the second is dropped with a warning, in eval and in training."""
    one, _ = roots
    model = save_brightness_model(tmp_path / "m.pth")
    once = evaluation.evaluate(model, [one], device="cpu", progress=False)
    with caplog.at_level("WARNING", logger="bitmind.data.sources"):
        twice = evaluation.evaluate(model, [one, f"{one}/"], device="cpu", progress=False)
    assert twice["n"] == once["n"] == N_PICTURES
    assert any("given more than once" in r.getMessage() for r in caplog.records)
    from bitmind.training.trainer import build_datasets

    cfg = parse_config(["--data", str(one), str(one), "--val_fraction", "0.25", "--test_fraction", "0.25"])
    train, val, counts = build_datasets(cfg)
    assert len(counts) == 1 and len(train) + len(val) == N_PICTURES - counts[str(one)]["test"]


def test_folders_that_are_not_read_and_numbered_names_are_warned_about(tmp_path, caplog):
    """Two silent ways to get other data than one thinks: a class folder in another case
    (``Fake/``: not read, so one class only), and camera-style numbered names
    (``IMG_0001.jpg`` ... read as crops of one picture ``IMG``, so the whole source falls
    in one split)."""
    from bitmind.data import LocalFolderSource, split_indices

    root = tmp_path / "cam"
    for k in range(60):
        solid_image(root / "real" / "phone" / f"IMG_{k:04d}.jpg", 40 + k)
        solid_image(root / "Fake" / "gen" / f"g{k}.png", 100 + k)
    with caplog.at_level("WARNING", logger="bitmind.data.sources"):
        src = LocalFolderSource(root)
    text = " ".join(r.getMessage() for r in caplog.records)
    assert "Fake/ are not read" in text
    assert "real/phone has 60 images but only 1 picture stem" in text
    idx = split_indices(src, 0)
    assert sorted(len(v) for v in idx.values()) == [0, 0, 60]  # what the warning is about
    caplog.clear()
    with caplog.at_level("WARNING", logger="bitmind.data.sources"):
        LocalFolderSource(REPO / "tests" / "data" / "samples")  # a normal folder: no warning
    assert not caplog.records


def test_hidden_folders_are_not_sources(tmp_path):
    """``real/.thumbnails/`` became a source of its own and pictures under a hidden sub-folder
    were read (previews of the same photos, in every split)."""
    from bitmind.data import LocalFolderSource

    root = tmp_path / "d"
    for k in range(3):
        solid_image(root / "real" / "cam" / f"p{k}.png", 40 + k)
        solid_image(root / "real" / "cam" / ".cache" / f"p{k}.png", 40 + k)
        solid_image(root / "real" / ".thumbnails" / f"t{k}.png", 90 + k)
        solid_image(root / "fake" / "gen" / f"g{k}.png", 150 + k)
    src = LocalFolderSource(root)
    assert len(src) == 6 and {src.source_name(i) for i in range(len(src))} == {"real/cam", "fake/gen"}


def test_accuracy_benchmark_says_what_is_wrong_before_evaluating(roots, tmp_path, capsys):
    """``--out DIR`` was an IsADirectoryError after every evaluation had run (minutes on real
    data), ``--split bogus`` and a missing data folder tracebacks; the report stored
    ``split_seed: null`` instead of the seed the split used."""
    one, _ = roots
    model = save_brightness_model(tmp_path / "m.pth")
    accuracy = load_script("benchmarks/accuracy.py")
    base = ["--model", str(model), "--seeds", "0", "--device", "cpu", "--plots", "none"]
    for extra, says in ((["--data", str(one), "--out", str(tmp_path)], "is a folder"),
                        (["--data", str(one), "--split", "bogus", "--out", str(tmp_path / "a.json")], "invalid choice"),
                        (["--data", str(tmp_path / "nope"), "--out", str(tmp_path / "a.json")], "nope")):
        with pytest.raises(SystemExit) as e:
            accuracy.main(base + extra)
        assert e.value.code == 2 and says in capsys.readouterr().err
    summary = accuracy.main(base + ["--data", str(one), "--out", str(tmp_path / "a.json")])
    assert summary["split_seed"] == 0
