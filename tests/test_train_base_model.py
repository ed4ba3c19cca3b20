"""base_miner/NPR/train_base_model.sh: the shipped model's recipe as one command. Its spec
must be the recipe the shipped file records, and the script must run end to end (tiny
pools, a tiny network and a tiny random decoder in the TAEF2 layout, on the CPU)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bitmind.checkpoint import load_model, read_checkpoint
from test_generalisation import TINY, _img, make_pools
from validator_synth import tiny_taesd_weights

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "base_miner" / "NPR" / "train_base_model.sh"
RECIPE_KEYS = ("epochs", "batch_size", "samples_per_epoch", "balance", "pair_aligned", "lr", "lr_schedule",
               "warmup_epochs", "dropout", "weight_decay", "label_smoothing", "aug_validator_prob", "aug_plain_share",
               "aug_jpeg_prob", "aug_jpeg_quality", "aug_blur_prob", "aug_color_jitter_prob", "early_stop_patience")


def _default_ship_spec() -> Path:
    """The spec ``train_base_model.sh`` trains when SPEC is not set (its ``SPEC=${SPEC:-...}`` line)."""
    (line,) = [x for x in SCRIPT.read_text().splitlines() if x.startswith("SPEC=${SPEC:-")]
    return REPO / line[len("SPEC=${SPEC:-"):-1]


def test_ship_spec_is_the_recipe_the_shipped_file_records():
    """The one command's default recipe is the shipped file's: every recipe option it records."""
    spec = json.loads(_default_ship_spec().read_text())
    _, meta = read_checkpoint(REPO / "mining_models" / "base.pth")
    shipped = meta["train_options"]
    (name, recipe), = spec["recipes"].items()
    assert spec["fold_recipes"] == [] and spec["time_budget_s"] == 0
    for k in RECIPE_KEYS:
        assert spec["base"][k] == shipped[k], k
    for k, v in recipe.items():
        assert shipped[k] == v, k
    # what the recipe leaves at its default, the file must have trained with the default too
    # (a default spec without the head would otherwise pass against a file trained with it)
    assert shipped.get("aux_weight", 0.0) == recipe.get("aux_weight", 0.0)
    assert shipped["seed"] == 1  # train_base_model.sh's TRAIN_SEED default


def test_ship_aux01_spec_is_the_plain_ship_recipe_plus_the_head_at_0_1():
    """ship_aux01.json (shipped since the twenty-ninth session) is ship_base.json (the file
    before) with only the auxiliary head added, as its LOGO arm patch96aux01 measured it."""
    sweeps = REPO / "base_miner" / "NPR" / "sweeps"
    base, aux, logo = (json.loads((sweeps / f).read_text()) for f in ("ship_base.json", "ship_aux01.json", "logo_aux01_s0_52.json"))
    assert {k: v for k, v in aux.items() if k not in ("_doc", "recipes")} == {k: v for k, v in base.items() if k not in ("_doc", "recipes")}
    assert aux["recipes"] == {"patch96aux01": {**base["recipes"]["patch96nopool"], "aux_weight": 0.1}}
    assert aux["recipes"]["patch96aux01"] == logo["recipes"]["patch96aux01"]


def test_ship_swa_spec_is_the_ship_recipe_plus_weight_averaging_only():
    sweeps = REPO / "base_miner" / "NPR" / "sweeps"
    base, swa = (json.loads((sweeps / f).read_text()) for f in ("ship_base.json", "ship_swa.json"))
    assert swa["base"] == base["base"] and swa["fold_recipes"] == [] and swa["val_seeds"] == base["val_seeds"]
    (name, recipe), = swa["recipes"].items()
    assert {k: v for k, v in recipe.items() if k != "swa_start"} == base["recipes"]["patch96nopool"]
    assert 0 < recipe["swa_start"] == swa["val_from"] < base["base"]["epochs"]  # only averages are selected


def test_ship_aux_spec_is_the_ship_recipe_plus_the_aux_head_of_its_logo_arm():
    sweeps = REPO / "base_miner" / "NPR" / "sweeps"
    base, aux, logo = (json.loads((sweeps / f).read_text()) for f in ("ship_base.json", "ship_aux.json", "logo_swa_aux_s1.json"))
    assert {k: v for k, v in aux.items() if k not in ("_doc", "recipes")} == {k: v for k, v in base.items() if k not in ("_doc", "recipes")}
    (name, recipe), = aux["recipes"].items()
    assert {k: v for k, v in recipe.items() if k != "aux_weight"} == base["recipes"]["patch96nopool"]
    assert recipe == logo["recipes"]["patch96aux"]  # what LOGO measures is what would ship


def _pools(root: Path) -> Path:
    """DATA_ROOT with the three pools the script expects, tiny."""
    p = make_pools(root / "made")
    data = root / "data"
    data.mkdir()
    shutil.copytree(p["crops"], data / "sn34-mini")
    shutil.copytree(p["chal"], data / "sn34-validator")
    n = 1000
    for cls, src in (("real", "lowlight"), ("fake", "midjourney-v3")):
        (data / "sn34-wide" / cls / src).mkdir(parents=True)
        for i in range(8):
            n += 1
            _img(n, 64, smooth=cls == "fake").save(data / "sn34-wide" / cls / src / f"w{src}{i}_0.jpg", quality=90)
    return data


@pytest.mark.parametrize("ship_spec", ["ship_base.json", "ship_swa.json", "ship_aux.json"])
def test_script_trains_calibrates_and_scores_the_recipe(tmp_path, ship_spec):
    data = _pools(tmp_path)
    models = tmp_path / "models"
    tiny_taesd_weights(models / "taef2")
    spec = json.loads((REPO / "base_miner" / "NPR" / "sweeps" / ship_spec).read_text())
    spec["base"].update({"batch_size": 8, "samples_per_epoch": 32, "progress": False, "val_fraction": 0.25,
                         "test_fraction": 0.25, "lr": 1e-3})
    spec["val_seeds"] = [0]
    (variant, recipe), = spec["recipes"].items()  # the script ships the spec's one recipe, whatever its name
    recipe.update({**TINY, "patch_size": 32})
    epochs = "1"
    if "swa_start" in recipe:  # average from the second of two epochs, and select only averages
        recipe["swa_start"], spec["val_from"], epochs = 1, 1, "2"
    (tmp_path / "tiny.json").write_text(json.dumps(spec))
    work = tmp_path / "work"
    extra = tmp_path / "minigan"  # training-only pictures (TRAIN_DATA), as mini_gan writes them
    (extra / "fake" / "minigan-nearest").mkdir(parents=True)
    for i in range(6):
        _img(2000 + i, 64, smooth=True).save(extra / "fake" / "minigan-nearest" / f"g{i}.png")
    env = {**os.environ, "SPEC": str(tmp_path / "tiny.json"), "EPOCHS": epochs, "WORKERS": "0", "DEVICE": "cpu",
           "PYTHON": sys.executable, "TRAIN_DATA": str(extra)}
    res = subprocess.run(["bash", str(SCRIPT), str(data), str(models), str(work)], capture_output=True,
                         text=True, timeout=900, env=env)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    made = list((work / "aligned" / "fake" / "aligned-taef2").rglob("*.*"))
    assert len(made) == 16 + 8 + 16  # a round trip of every real photo: crops of both pools, and the challenges
    lm = load_model(work / "base.pth")
    assert lm.meta["config"]["stem_pool"] is False and lm.meta["config"]["input"] == "npr_hp"
    assert lm.meta["train_options"]["patch_size"] == 32 and lm.meta["metrics"]["calibration"]["real_target"] == 0.85
    assert lm.meta["train_options"]["seed"] == 1  # the shipped file's training seed, by default
    assert lm.meta["train_options"]["train_data"] == [str(extra)]  # TRAIN_DATA reached the trainer
    hist = json.loads((work / "checkpoints" / "ship" / variant / "history.json").read_text())
    if "swa_start" in recipe:  # the shipped file is the weight average, and says so
        assert lm.meta["train_options"]["swa_start"] == 1 and [r["averaged"] for r in hist] == [True]
    else:
        assert not any(r["averaged"] for r in hist)
    if "aux_weight" in recipe:  # shipped as the detector alone (a plain file's shapes), trained with the head
        assert lm.meta["train_options"]["aux_classes"][0] == "real" and lm.model.config["num_classes"] == 1
        trained = load_model(work / "checkpoints" / "ship" / variant / "model_epoch_best.pth")
        assert trained.model.config["num_classes"] == 1 + len(lm.meta["train_options"]["aux_classes"])
    else:
        assert "aux_classes" not in lm.meta["train_options"] and lm.model.config.get("num_classes", 1) == 1
    acc = json.loads((work / "accuracy_validator.json").read_text())
    assert str(data / "sn34-validator") in json.dumps(acc) and "roc_auc" in json.dumps(acc)
    # and the shipped file scored on the same pictures beside it, paired (step 6)
    paired = json.loads((work / "ship_paired.json").read_text())
    assert paired["a"] == "mining_models/base.pth" and paired["b"] == str(work / "base.pth")
    assert paired["pictures"] == acc["results"]["as sent"]["n"] and (work / "ship_paired.md").is_file()
    assert paired["models"]["a"]["sha256"] != paired["models"]["b"]["sha256"]
    assert paired["metrics"]["balanced_accuracy"]["ci95"] is not None
    if ship_spec == "ship_base.json":  # RESUME=1 once the training ran to its end: kept, the later steps run again
        best = work / "checkpoints" / "ship" / variant / "model_epoch_best.pth"
        before = best.stat().st_mtime_ns
        (work / "base.pth").unlink()
        again = subprocess.run(["bash", str(SCRIPT), str(data), str(models), str(work)], capture_output=True,
                               text=True, timeout=900, env={**env, "RESUME": "1", "COMPARE_WITH": ""})
        assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
        assert "already ran to its end" in again.stdout and best.stat().st_mtime_ns == before
        assert load_model(work / "base.pth").meta["metrics"]["calibration"]["real_target"] == 0.85


def test_script_names_what_is_missing(tmp_path):
    (tmp_path / "data" / "sn34-mini").mkdir(parents=True)
    res = subprocess.run(["bash", str(SCRIPT), str(tmp_path / "data"), str(tmp_path / "models"), str(tmp_path / "w")],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "sn34-wide not found" in res.stderr and not (tmp_path / "w").exists()


def _empty_roots(tmp_path: Path) -> tuple[Path, Path]:
    """DATA_ROOT and MODELS_ROOT with every folder the script checks for, empty: enough to
    reach the checks that come after that one."""
    data, models = tmp_path / "data", tmp_path / "models"
    for d in (data / "sn34-mini", data / "sn34-wide", data / "sn34-validator", models / "taef2"):
        d.mkdir(parents=True)
    return data, models


def test_script_refuses_a_spec_without_exactly_one_recipe(tmp_path):
    data, models = _empty_roots(tmp_path)
    spec = json.loads((REPO / "base_miner" / "NPR" / "sweeps" / "ship_base.json").read_text())
    spec["recipes"]["other"] = dict(spec["recipes"]["patch96nopool"])
    (tmp_path / "two.json").write_text(json.dumps(spec))
    env = {**os.environ, "SPEC": str(tmp_path / "two.json"), "PYTHON": sys.executable}
    res = subprocess.run(["bash", str(SCRIPT), str(data), str(models), str(tmp_path / "w")],
                         capture_output=True, text=True, timeout=60, env=env)
    assert res.returncode == 2 and "exactly one recipe" in res.stderr and not (tmp_path / "w").exists()


def test_script_names_a_missing_train_data_root(tmp_path):
    data, models = _empty_roots(tmp_path)
    env = {**os.environ, "TRAIN_DATA": str(tmp_path / "nope")}
    res = subprocess.run(["bash", str(SCRIPT), str(data), str(models), str(tmp_path / "w")],
                         capture_output=True, text=True, timeout=60, env=env)
    assert res.returncode == 2 and "TRAIN_DATA root" in res.stderr and "nope" in res.stderr
    assert not (tmp_path / "w").exists()
