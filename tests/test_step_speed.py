"""benchmarks/step_speed.py end to end on a CPU: tiny synthetic batches, two variants of a LOGO spec."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import REPO, load_script
from test_generalisation import make_pools


def test_step_speed_times_each_setting_without_writing_in_the_repo(tmp_path):
    pools = make_pools(tmp_path / "pools")  # the roots only decide the LOGO folds: no picture is read
    out = tmp_path / "step.json"
    ckpt = REPO / "base_miner" / "checkpoints" / "step_speed"
    results = REPO / "benchmarks" / "results" / "step_speed_cpu.json"
    before = results.stat().st_mtime_ns if results.exists() else None
    bs, steps, split = 8, 2, 2
    res = load_script("benchmarks/step_speed.py").main([
        "--spec", str(REPO / "base_miner" / "NPR" / "sweeps" / "logo_fixed_s0_78.json"),
        "--data", str(pools["crops"]), str(pools["aligned"]), "--challenge_data", str(pools["chal"]),
        "--device", "cpu", "--batch_size", str(bs), "--image_size", "112", "--steps", str(steps), "--warmup", "1",
        "--split_steps", str(split), "--variants", "2", "--keep", "0.5",
        "--settings", "spec", "fixed_shapes", "one_model", "--json", str(out), "--tune_out", str(tmp_path / "tuned.json")])
    assert json.loads(out.read_text()) == json.loads(json.dumps(res))
    tuned = json.loads((tmp_path / "tuned.json").read_text())  # no tunable setting ran: the spec as it was
    assert "turned on nothing" in tuned["_tuned"] and res["tuning"] == {}
    assert tuned["base"] == json.loads((REPO / "base_miner" / "NPR" / "sweeps" / "logo_fixed_s0_78.json").read_text())["base"]
    cfg = res["config"]
    assert res["machine"]["device"] == "cpu" and res["machine"]["cpu_count"] >= 1
    assert cfg["variants_in_spec"] > 2 and cfg["variants"] == 2 and cfg["batch_size"] == bs
    everything, fold = cfg["variant_names"]
    assert "." not in everything and fold.startswith(everything + ".minus-")
    assert cfg["masked"] == [fold]  # the fold leaves a family out: a mask; the everything model none
    assert cfg["patch_size"] == {everything: 96, fold: 96}  # 112 px images: crop runs

    assert list(res["settings"]) == ["spec", "fixed_shapes", "one_model"]
    for name, r in res["settings"].items():
        assert r["ms_per_batch"] > 0 and r["host_ms_per_batch"] > 0 and r["steps"] == steps, name
        assert r["images_per_second"] == pytest.approx(bs * 1000.0 / r["ms_per_batch"])
        assert r["ms_per_batch_per_variant"] == pytest.approx(r["ms_per_batch"] / r["variants"])
        assert r["host_ms_per_batch"] <= r["ms_per_batch"] and r["amp"] == "none" and not r["cudnn_benchmark"]
        s = r["split"]
        assert s["steps"] == split and all(v >= 0 for v in s["ms"].values()) and s["ms"]["step"] > 0
        assert s["ms_sum"] == pytest.approx(sum(s["ms"].values()))
    spec, fixed, one = (res["settings"][k] for k in ("spec", "fixed_shapes", "one_model"))
    assert spec["variants"] == fixed["variants"] == 2 and one["variants"] == 1
    assert spec["masked_variants"] == 1 and fixed["masked_variants"] == 0 and one["masked_variants"] == 0
    # select: the everything model gets the whole batch, the fold about half of it (keep 0.5)
    rows = {n: p["rows"] for n, p in spec["split"]["per_variant"].items()}
    assert rows[everything] == bs and 0 < rows[fold] < bs
    assert all(p["rows"] == bs for p in fixed["split"]["per_variant"].values())
    assert list(one["split"]["per_variant"]) == [everything]
    assert spec["split"]["per_variant"][fold]["step"] > 0
    assert "fastest with every model" in res["verdict"] and "one alone" in res["verdict"]

    # nothing in the repository: the variants' run folders lived in a temporary folder, now gone
    tmp_ckpt = Path(cfg["checkpoints_dir"])
    assert not tmp_ckpt.exists() and REPO not in tmp_ckpt.parents
    assert not ckpt.exists()
    assert (results.stat().st_mtime_ns if results.exists() else None) == before


def test_step_speed_refuses_cuda_only_settings_on_a_cpu(tmp_path):
    pools = make_pools(tmp_path / "pools")
    with pytest.raises(SystemExit):
        load_script("benchmarks/step_speed.py").main([
            "--spec", str(REPO / "base_miner" / "NPR" / "sweeps" / "logo_fixed_s0_78.json"),
            "--data", str(pools["crops"]), "--device", "cpu", "--settings", "cudnn_benchmark",
            "--json", str(tmp_path / "x.json")])


def test_machine_info_names_the_cpu_and_leaves_cuda_out_on_a_cpu():
    """What the speed benchmarks record about their machine (bitmind.common.machine_info)."""
    import os

    import torch

    from bitmind.common import machine_info

    m = machine_info(torch.device("cpu"))
    assert m["cpu_count"] == os.cpu_count() and m["torch"] == torch.__version__ and m["device"] == "cpu"
    assert m["device_name"] == m.get("cpu_model", m["processor"]) and "cuda" not in m
    assert machine_info()["device"] == "cpu"


def test_tuned_spec_takes_the_settings_that_measured_faster(tmp_path):
    """``--tune_out``: the options of each setting at least ``min_gain`` faster than ``spec``,
    in the spec's base; the rest left as they were; the result still builds its sweep."""
    from bitmind.training.logo import spec_with_overrides
    from bitmind.training.sweep import SweepSpec

    mod = load_script("benchmarks/step_speed.py")
    raw = json.loads((REPO / "base_miner" / "NPR" / "sweeps" / "logo_fixed_s0_78.json").read_text())
    settings = {"spec": {"ms_per_batch": 100.0}, "fused_adam": {"ms_per_batch": 90.0}, "bucketed": {"ms_per_batch": 97.0},
                "fp32": {"ms_per_batch": 50.0}}  # fp32 is only measured, never tuned in
    tuned, decided = mod.tuned_spec(raw, settings, min_gain=1.08)
    assert tuned["base"]["fused_adam"] is True and "share_multiple" not in tuned["base"]
    assert tuned["base"]["cudnn_benchmark"] is False and "amp" not in tuned["base"]
    assert decided["fused_adam"]["taken"] and not decided["bucketed"]["taken"] and set(decided) == {"fused_adam", "bucketed"}
    assert "fused_adam (1.11x)" in tuned["_tuned"] and "fused_adam" not in raw["base"]  # the input is not changed
    pools = make_pools(tmp_path / "pools")
    sweep = SweepSpec.from_dict(spec_with_overrides(tuned, "t", data=[str(pools["crops"])], device="cpu"))
    assert sweep.base.fused_adam and sweep.variant_config(next(iter(sweep.variants))).fused_adam
    with pytest.raises(ValueError, match="reference"):
        mod.tuned_spec(raw, {"fused_adam": {"ms_per_batch": 1.0}}, 1.08)


def test_an_aux_arm_is_timed_with_its_head(tmp_path):
    """A variant with ``aux_weight`` (logo_swa_aux_s1.json's patch96aux) is built and stepped
    with its head and the head's loss, as the sweep trains it; the plain arm without."""
    import torch

    from bitmind.training.logo import spec_with_overrides
    from bitmind.training.sweep import SweepSpec

    mod = load_script("benchmarks/step_speed.py")
    raw = json.loads((REPO / "base_miner" / "NPR" / "sweeps" / "logo_swa_aux_s1.json").read_text())
    pools = make_pools(tmp_path / "pools")
    sweep = SweepSpec.from_dict(spec_with_overrides(raw, "t", data=[str(pools["crops"]), str(pools["aligned"])], device="cpu",
                                                    checkpoints_dir=str(tmp_path / "ck")))
    batches = mod.Batches(4, 112, 64, 0, 1, pin=False)
    aux, plain = mod.build_variants(sweep, ["patch96aux", "patch96nopool"], {}, torch.device("cpu"), None,
                                    aux=mod.synthetic_aux(batches.n_items, 0))
    assert aux.net.config["num_classes"] == 1 + mod.SYNTHETIC_AUX_CLASSES and plain.net.config["num_classes"] == 1
    mod.train_step([aux, plain], batches(0), torch.device("cpu"), channels_last=False)
    assert float(aux.aux_loss_sum) > 0 and float(plain.aux_loss_sum) == 0
    mod.free([aux, plain], torch.device("cpu"))
