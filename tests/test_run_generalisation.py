"""base_miner/NPR/run_generalisation.sh: the LOGO run as one command (round trips, sweep,
scores, analysis and, with SHIP_VARIANT, the calibrated everything model; with MINIGAN, small
GAN fakes as training-only data). The shipped
base.pth came out of this path (logo_longer.json), so it must run end to end: tiny pools,
a tiny network and a tiny random decoder in the TAEF2 layout, on the CPU."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from bitmind.checkpoint import load_model
from test_generalisation import TINY
from test_train_base_model import _pools
from validator_synth import tiny_taesd_weights

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "base_miner" / "NPR" / "run_generalisation.sh"


def test_script_runs_logo_with_a_seed_and_ships_the_everything_model(tmp_path):
    data = _pools(tmp_path)
    models = tmp_path / "models"
    tiny_taesd_weights(models / "taef2")
    spec = {"base": {"batch_size": 8, "workers": 0, "progress": False, "val_fraction": 0.25, "test_fraction": 0.25,
                     "balance": "family", "pair_aligned": True, "samples_per_epoch": 32, "aug_validator_prob": 0.0,
                     "aug_jpeg_prob": 0.0, "lr": 1e-3, "epochs": 5},
            "val_seeds": [0], "folds": ["sdxl", "midjourney"], "controls": {}, "ensemble_members": 0,
            "recipes": {"tiny": {**TINY, "input": "npr_hp", "stem_pool": False, "patch_size": 32}}}
    (tmp_path / "logo.json").write_text(json.dumps(spec))
    work = tmp_path / "work"
    baselines = tmp_path / "baselines"  # npr_f2 only: base_sd1x is missing, so it is left out
    baselines.mkdir()
    (baselines / "npr_f2.pth").symlink_to(REPO / "mining_models" / "npr_f2.pth")
    env = {**os.environ, "LOGO_SPEC": str(tmp_path / "logo.json"), "TRAIN_SEED": "7", "EPOCHS": "1", "DEVICE": "cpu",
           "BASELINES_DIR": str(baselines),
           "WORKERS": "0", "POOLS": "crop32", "SHIP_VARIANT": "tiny", "PYTHON": sys.executable,
           "MINIGAN": "1", "MINIGAN_ARGS": "--size 16 --steps 2 --count 12 --crops 8 --width 8 --batch_size 4"}
    res = subprocess.run(["bash", str(SCRIPT), str(data), str(models), str(work)], capture_output=True, text=True,
                         timeout=900, env=env)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    run = work / "checkpoints" / "logo"
    logo_spec = json.loads((run / "logo_spec.json").read_text())
    assert logo_spec["base"]["seed"] == 7 and logo_spec["ran"]["epochs"] == 1  # TRAIN_SEED, EPOCHS
    assert logo_spec["base"]["train_data"] == [str(work / "minigan")]  # MINIGAN: the small GANs' pictures, training only
    assert len(list((work / "minigan" / "fake" / "minigan-nearest").glob("*.png"))) == 12
    assert set(logo_spec["variants"]) >= {"tiny", "tiny.minus-sdxl", "tiny.minus-midjourney", "tiny_crop32"}
    result = json.loads((work / "generalisation.json").read_text())
    assert set(result["regimes"]["validator"]["folds"]["tiny"]) == {"sdxl", "midjourney"}
    assert set(result["regimes"]["validator"]["folds"]["tiny_crop32"]) == {"sdxl", "midjourney"}  # POOLS
    assert (work / "generalisation.png").stat().st_size > 1000
    assert set(result["regimes"]["validator"]["baselines"]) == {"npr_f2"}  # BASELINES_DIR, the missing one skipped
    assert "baseline base_sd1x not scored" in res.stdout
    shipped = load_model(work / "base.pth")  # SHIP_VARIANT, with the shipped boundary rule
    assert shipped.meta["metrics"]["calibration"]["real_target"] == 0.85
    assert shipped.meta["train_options"]["seed"] == 7 and shipped.meta["config"]["stem_pool"] is False
