"""bitmind.eval and base_miner/NPR/validate.py on tiny folders made here."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from bitmind.checkpoint import file_sha256, load_model
from bitmind.data import LocalFolderSource, split_indices, split_of
from bitmind.cli.eval import main
from bitmind.evaluation import build_dataset, collect_predictions, evaluate, evaluate_detailed
from bitmind.image_transforms import ValidatorPipeline, to_tensor

from eval_helpers import brightness_prob, make_textured_folder, save_brightness_model, save_tiny_npr, solid_image

REPO = Path(__file__).resolve().parents[1]
# (class/source, grey level): the Brightness model calls level > 127.5 fake.
LEVELS = [("real/a", 50), ("real/a", 100), ("real/b", 200), ("fake/x", 90), ("fake/x", 180), ("fake/x", 220)]


@pytest.fixture()
def solid_folder(tmp_path):
    root = tmp_path / "data"
    for k, (src, level) in enumerate(LEVELS):
        solid_image(root / src / f"img{k}.png", level)
    (root / "fake" / "x" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    return root


def test_eval_json_matches_hand_computation(solid_folder, tmp_path, capsys):
    model = save_brightness_model(tmp_path / "m.pth", gain=10.0, temperature=2.0, logit_bias=0.3)
    out = tmp_path / "out" / "report.json"
    rc = main(["--model", str(model), "--data", str(solid_folder), "--json", str(out), "--plots", str(tmp_path / "plots"),
               "--device", "cpu", "--quiet", "--batch_size", "4"])
    assert rc == 0
    r = json.loads(out.read_text())
    # Probabilities are sigmoid(logit / T + b) with the checkpoint's T = 2, b = 0.3.
    probs = {level: brightness_prob(level, 10.0, 2.0, 0.3) for _, level in LEVELS}
    labels = {level: int(src.startswith("fake")) for src, level in LEVELS}
    assert r["n"] == 6 and r["skipped"] == 1 and any("broken.jpg" in s for s in r["skipped_files"])
    assert r["confusion"] == {"tn": 2, "fp": 1, "fn": 1, "tp": 2}  # level 200 (real) and 90 (fake) are wrong
    assert r["accuracy"] == pytest.approx(4 / 6)
    assert r["balanced_accuracy"] == pytest.approx(2 / 3)
    assert r["real_accuracy"] == pytest.approx(2 / 3) and r["fake_accuracy"] == pytest.approx(2 / 3)
    assert r["roc_auc"] == pytest.approx(6 / 9)
    assert r["ap"] == pytest.approx((1 + 2 / 3 + 3 / 5) / 3)
    assert r["mcc"] == pytest.approx(1 / 3)
    assert r["brier"] == pytest.approx(np.mean([(probs[lv] - labels[lv]) ** 2 for lv in probs]), rel=1e-5)
    ps = r["per_source"]
    assert set(ps) == {"real/a", "real/b", "fake/x"}
    assert ps["real/a"]["n"] == 2 and ps["real/a"]["accuracy"] == 1.0
    assert ps["real/b"]["accuracy"] == 0.0 and ps["fake/x"]["accuracy"] == pytest.approx(2 / 3)
    assert ps["fake/x"]["ap"] is None and ps["fake/x"]["brier"] == pytest.approx(
        np.mean([(1 - probs[lv]) ** 2 for lv in (90, 180, 220)]), rel=1e-5)
    assert r["model"]["sha256"] == file_sha256(model) and r["model"]["arch"] == "test_brightness"
    assert r["model"]["temperature"] == 2.0 and r["model"]["logit_bias"] == 0.3 and r["model"]["path"] == str(model)
    assert r["options"]["challenge"] is False and r["options"]["split"] is None and r["data"] == [str(solid_folder)]
    for name in ("roc", "scores", "confusion"):
        assert Path(r["plots"][name]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = capsys.readouterr().out
    assert "overall" in table and "real/b" in table and "skipped 1 unreadable" in table


def test_calibration_override(solid_folder, tmp_path):
    model = save_brightness_model(tmp_path / "m.pth", gain=10.0, temperature=2.0, logit_bias=0.3)
    _, preds, ds = evaluate_detailed(model, solid_folder, temperature=1.0, logit_bias=0.0, device="cpu", progress=False)
    assert preds.temperature == 1.0 and preds.logit_bias == 0.0
    for k, p in zip(preds.index, preds.probs):
        level = dict((f"img{i}.png", lv) for i, (_, lv) in enumerate(LEVELS))[Path(ds.describe(k)).name]
        assert p == pytest.approx(brightness_prob(level, 10.0, 1.0), rel=1e-5)
    # The most confident mistakes come first: level 200 (real, p=.94) before 90 (fake, p=.19).
    wrong = [Path(preds.paths[i]).name for i in preds.mistakes()]
    assert wrong == ["img2.png", "img3.png"]


def test_split_evaluates_only_that_split_by_stem(tmp_path):
    root = tmp_path / "data"
    for k in range(30):  # 30 pictures, two crops each: crops share the stem and so the split
        for c in range(2):
            cls = "fake" if k % 2 else "real"
            solid_image(root / cls / "s" / f"p{k}_{c}.png", 20 + 7 * k)
    src = LocalFolderSource(root)
    expected = split_indices(src, seed=3)
    assert expected["test"], "this seed must give a non-empty test split"
    ds = build_dataset(root, split="test", split_seed=3)
    assert len(ds) == len(expected["test"])
    assert all(split_of(src.stem(i), 3) == "test" for _, i in ds.items)
    model = save_brightness_model(tmp_path / "m.pth")
    r = evaluate(model, [root], split="test", split_seed=3, device="cpu", progress=False)
    assert r["n"] == len(expected["test"]) and r["options"]["split"] == "test" and r["options"]["split_seed"] == 3
    assert sum(evaluate(model, [root], split=s, split_seed=3, device="cpu", progress=False)["n"]
               for s in ("train", "val", "test")) == len(src)
    with pytest.raises(ValueError):
        build_dataset(root, split="holdout")


def test_challenge_mode_is_reproducible_by_seed(tmp_path):
    root = make_textured_folder(tmp_path / "data", per_class=4)
    loaded = load_model(save_tiny_npr(tmp_path / "npr.pth"))

    def run(seed, batch_size=8, workers=0, challenge=True):
        ds = build_dataset(root, challenge=challenge, seed=seed)
        return collect_predictions(loaded, ds, batch_size=batch_size, workers=workers, progress=False), ds

    a, ds = run(0)
    b, _ = run(0, batch_size=3, workers=2)  # same seed, other batching and worker processes
    c, _ = run(1)
    plain, _ = run(0, challenge=False)
    assert np.array_equal(a.index, b.index)
    np.testing.assert_allclose(a.probs, b.probs, rtol=0, atol=1e-6)
    assert not np.allclose(a.probs, c.probs, atol=1e-6)
    assert not np.allclose(a.probs, plain.probs, atol=1e-6)
    # Image k is the validator pipeline applied with the RNG derived from (seed, k).
    k = 5
    src, i = ds.items[k]
    img = ValidatorPipeline()(src.load(i), ds.rng_for(k))
    assert img.size == (256, 256)
    with torch.inference_mode():
        ref = torch.sigmoid(loaded.model(to_tensor(img).unsqueeze(0))).item()
    assert a.probs[list(a.index).index(k)] == pytest.approx(ref, abs=1e-6)


def test_several_data_folders_are_told_apart(tmp_path):
    d1 = make_textured_folder(tmp_path / "one", per_class=2)
    d2 = make_textured_folder(tmp_path / "two", per_class=2, seed=7)
    model = save_tiny_npr(tmp_path / "npr.pth")
    r = evaluate(model, [d1, d2], device="cpu", progress=False)
    assert r["n"] == 8
    assert set(r["per_source"]) == {"one:real/cams", "one:fake/gen", "two:real/cams", "two:fake/gen"}


def test_uncalibrated_flag(solid_folder, tmp_path):
    model = save_brightness_model(tmp_path / "m.pth", gain=10.0, temperature=2.0, logit_bias=0.3)
    assert main(["--model", str(model), "--data", str(solid_folder), "--uncalibrated", "--quiet", "--device", "cpu",
                 "--json", str(tmp_path / "r.json")]) == 0
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["model"]["temperature"] == 1.0 and r["model"]["logit_bias"] == 0.0
    assert r["model"]["checkpoint_calibration"] == {"temperature": 2.0, "logit_bias": 0.3}
    expected = np.mean([(brightness_prob(lv, 10.0) - src.startswith("fake")) ** 2 for src, lv in LEVELS])
    assert r["brier"] == pytest.approx(expected, rel=1e-5)


def test_bad_inputs_exit_with_message(tmp_path, capsys):
    data = make_textured_folder(tmp_path / "data", per_class=2)
    assert main(["--model", str(tmp_path / "missing.pth"), "--data", str(data), "--quiet"]) == 2
    assert "missing.pth" in capsys.readouterr().err
    model = save_tiny_npr(tmp_path / "npr.pth")
    assert main(["--model", str(model), "--data", str(tmp_path / "nodata"), "--quiet"]) == 2
    assert "nodata" in capsys.readouterr().err


def _run(args, cwd):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=300)


def test_command_lines_from_repo_root_and_npr_folder(tmp_path):
    root = tmp_path / "data"
    for k in range(30):
        solid_image(root / ("fake" if k % 2 else "real") / "s" / f"p{k}.png", 20 + 7 * k)
    model = save_tiny_npr(tmp_path / "npr.pth")
    n_test = len(split_indices(LocalFolderSource(root), seed=0)["test"])
    # validate.py from base_miner/NPR: held-out test split by default.
    p = _run(["validate.py", "--model", str(model), "--data", str(root), "--device", "cpu", "--quiet",
              "--json", str(tmp_path / "v.json")], cwd=REPO / "base_miner" / "NPR")
    assert p.returncode == 0, p.stderr
    v = json.loads((tmp_path / "v.json").read_text())
    assert v["options"]["split"] == "test" and v["n"] == n_test and "overall" in p.stdout
    # The same from the repository root, on another split.
    p = _run(["base_miner/NPR/validate.py", "--model", str(model), "--data", str(root), "--split", "val", "--quiet",
              "--device", "cpu"], cwd=REPO)
    assert p.returncode == 0, p.stderr
    # python -m bitmind.eval from an unrelated folder, challenge mode.
    p = _run(["-m", "bitmind.eval", "--model", str(model), "--data", str(root), "--challenge", "--seed", "4", "--quiet",
              "--device", "cpu", "--json", str(tmp_path / "e.json")], cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    e = json.loads((tmp_path / "e.json").read_text())
    assert e["n"] == 30 and e["options"]["challenge"] is True and e["options"]["seed"] == 4
    assert e["options"]["pipeline"] == {"plain_share": 0.2, "jpeg_quality": 75}


def test_eval_scores_exactly_what_the_predictor_serves_on_cpu(tmp_path):
    """bitmind.eval takes the miner's forward (batch norms folded on a CPU), so it gives the
    predictor's probabilities for the same images, not those of another (fp32 eager) path."""
    from PIL import Image

    from bitmind.miner.predict import Predictor

    root = make_textured_folder(tmp_path / "data", per_class=3)
    model = save_tiny_npr(tmp_path / "m.pth", temperature=1.7)
    ds = build_dataset([root])
    preds = collect_predictions(load_model(model), ds, batch_size=4, device="cpu", progress=False)
    predictor = Predictor(str(model), device="cpu", workers=1)
    try:
        assert predictor.status()["optimized"]  # the prepared forward serves on a CPU
        served = [predictor.predict_image(Image.open(p)) for p in preds.paths]
    finally:
        predictor.close()
    assert len(served) == len(preds) == 6
    np.testing.assert_allclose(preds.probs, served, rtol=0, atol=1e-6)
