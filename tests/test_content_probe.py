"""benchmarks/content_probe.py: a linear read-out of a detector's pooled features naming each real
photo's kind. What must hold: kinds that differ in what they show are told apart, kinds that do
not are near chance, every model is read on the same pictures, and unusable input is refused."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from conftest import load_script
from eval_helpers import save_tiny_npr

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _kind(folder, n, make, seed):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(make(rng)).save(folder / f"{folder.name}{i}_0.png")


def _stripes(rng):  # a scene of vertical stripes of random brightness
    cols = rng.integers(0, 256, 8, dtype=np.uint8).repeat(8)
    return np.tile(cols[None, :, None], (64, 1, 3))


def _noise(rng):  # a flat grey scene with fine grain
    return np.clip(128 + rng.normal(0, 4, (64, 64, 3)), 0, 255).astype(np.uint8)


@pytest.fixture
def probe_data(tmp_path):
    root = tmp_path / "data"
    _kind(root / "real" / "stripes", 15, _stripes, 0)
    _kind(root / "real" / "grain", 15, _noise, 1)
    _kind(root / "real" / "grain2", 15, _noise, 2)  # the same scene as grain: only chance tells them apart
    _kind(root / "real" / "few", 3, _noise, 3)  # under one picture per fold: left out
    _kind(root / "fake" / "gen", 6, _noise, 4)
    return root


def test_kinds_that_differ_in_content_are_told_apart_and_the_rest_is_near_chance(tmp_path, probe_data):
    script = load_script("benchmarks/content_probe.py")
    model = save_tiny_npr(tmp_path / "m.pth")
    out = tmp_path / "probe.json"
    result = script.main(["--model", f"tiny={model}", str(model), "--data", str(probe_data), "--per_kind", "12",
                          "--out", str(out)])
    assert json.loads(out.read_text()) == result and out.with_suffix(".md").exists()
    assert result["counts"] == {"real/grain": 12, "real/grain2": 12, "real/stripes": 12}  # "few" left out, fakes not read
    assert set(result["models"]) == {"tiny", "m.pth"}
    r = result["models"]["tiny"]
    assert r["chance"] == pytest.approx(1 / 3) and r["n"] == 36
    lo, hi = r["balanced_accuracy_ci95"]
    assert lo <= r["balanced_accuracy"] <= hi and hi - lo > 0.01  # resampling 12 pictures a kind moves it
    assert r["recall"]["real/stripes"] >= 0.9  # a different scene: named
    assert r["recall"]["real/grain"] + r["recall"]["real/grain2"] < 1.6  # the same scene: confused with each other
    assert result["models"]["m.pth"]["balanced_accuracy"] == r["balanced_accuracy"]  # same file, same pictures, same folds
    assert result["models"]["m.pth"]["minus_first"] == {"model": "tiny", "difference": 0.0, "ci95": [0.0, 0.0]}
    assert "minus_first" not in r and "predictions" not in r
    assert "| **balanced accuracy** |" in out.with_suffix(".md").read_text()


def test_unusable_input_is_refused(tmp_path, probe_data, capsys):
    script = load_script("benchmarks/content_probe.py")
    model = save_tiny_npr(tmp_path / "m.pth")
    with pytest.raises(SystemExit, match="nothing to tell apart"):  # one family of generated pictures
        script.main(["--families", "--model", str(model), "--data", str(probe_data), "--out", str(tmp_path / "f.json")])
    with pytest.raises(SystemExit):
        script.main(["--model", str(model), "--data", str(probe_data), "--per_kind", "3", "--out", str(tmp_path / "x.json")])
    assert "--per_kind must be at least 5" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        script.main(["--model", str(model), "--data", str(probe_data), "--out", str(tmp_path / "x.md")])


def test_the_untrained_control_is_the_same_network_with_fresh_weights(tmp_path, probe_data):
    import torch

    script = load_script("benchmarks/content_probe.py")
    model = save_tiny_npr(tmp_path / "m.pth", seed=5)
    trained, fresh = script.load_network(str(model)), script.load_network(f"untrained:{model}", seed=1)
    assert type(fresh) is type(trained) and not fresh.training
    a, b = dict(trained.named_parameters()), dict(fresh.named_parameters())
    assert a.keys() == b.keys() and all(not torch.equal(a[k], b[k]) for k in a if a[k].dim() > 1)
    assert torch.equal(script.load_network(f"untrained:{model}", seed=1).fc1.weight, fresh.fc1.weight)  # seeded
    result = script.main(["--model", f"ctrl=untrained:{model}", "--data", str(probe_data), "--per_kind", "12",
                          "--out", str(tmp_path / "u.json")])
    assert result["models"]["ctrl"]["path"] == f"untrained:{model}" and result["models"]["ctrl"]["n"] == 36
