"""benchmarks/serve_crop.py: copies of a model with ``center_crop`` in their config, measured
for accuracy and CPU floor against a reference in one run (tiny model and data)."""
from __future__ import annotations

import json

import pytest

from bitmind.checkpoint import load_model, model_meta, save_checkpoint
from bitmind.models import build_model
from conftest import load_script
from validator_synth import make_folder


@pytest.fixture()
def tiny(tmp_path):
    m = build_model("npr", layers=[1, 1], width=8, input="npr_hp", stem_pool=False)
    path = save_checkpoint(m, tmp_path / "tiny.pth", model_meta(m, temperature=0.5, logit_bias=-0.1, description="tiny"))
    return path


def test_cropped_copy_keeps_weights_and_calibration(tiny, tmp_path, checkpoint_factory):
    bench = load_script("benchmarks/serve_crop.py")
    lm, cp = load_model(tiny), load_model(bench.cropped_copy(tiny, 160, tmp_path / "c.pth"))
    assert cp.model.center_crop == 160 and cp.meta["config"]["center_crop"] == 160
    assert (cp.temperature, cp.logit_bias) == (lm.temperature, lm.logit_bias) == (0.5, -0.1)
    assert all((a == b).all() for a, b in zip(lm.model.state_dict().values(), cp.model.state_dict().values()))
    assert "central 160 px" in cp.meta["description"]
    back = load_model(bench.cropped_copy(tmp_path / "c.pth", 0, tmp_path / "b.pth"))
    assert "center_crop" not in back.meta["config"]
    from bitmind.cli.ensemble import build_ensemble_checkpoint

    ens = build_ensemble_checkpoint([checkpoint_factory(tmp_path / f"m{i}.pth", seed=i) for i in range(2)], tmp_path / "e.pth")
    with pytest.raises(ValueError, match="npr"):
        bench.cropped_copy(ens, 160, tmp_path / "x.pth")


def test_measures_each_crop_in_one_run(tiny, tmp_path):
    bench = load_script("benchmarks/serve_crop.py")
    data = make_folder(tmp_path / "data", n_per_class=24, seed=2, size=96)
    out = tmp_path / "sc.json"
    res = bench.main(["--model", str(tiny), "--compare-model", str(tiny), "--data", str(data), "--crops", "0", "128",
                      "--requests", "4", "--floor-rounds", "2", "--keep", "128", "--out", str(out)])
    rows = res["rows"]
    assert [r["center_crop"] for r in rows] == [0, 128]
    for r in rows:
        assert 0.0 <= r["as_sent"]["balanced_accuracy"] <= 1.0 and r["as_sent"]["roc_auc"] is not None
        assert r["floor_ratio"] > 0 and r["floor_p50_ms"] > 0
    assert json.loads(out.read_text())["rows"][1]["center_crop"] == 128
    assert "| 128 |" in out.with_suffix(".md").read_text()
    assert load_model(tmp_path / "tiny_crop128.pth").model.center_crop == 128
