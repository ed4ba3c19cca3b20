"""benchmarks/loader_speed.py end to end on tiny pools (CPU, workers 0 and 1)."""
from __future__ import annotations

import json

import torch

from conftest import REPO, load_script
from test_generalisation import make_pools


def test_loader_speed_times_every_worker_count_and_mode(tmp_path):
    pools = make_pools(tmp_path / "pools")
    spec = json.loads((REPO / "base_miner" / "NPR" / "sweeps" / "logo_longer_s1.json").read_text())
    # 2 whole batches per epoch (no parts: TrainConfig.loader_parts): the timing crosses epochs
    spec["base"].update({"batch_size": 4, "samples_per_epoch": 8, "loader_parts": 1})
    (tmp_path / "tiny.json").write_text(json.dumps(spec))
    out = tmp_path / "speed.json"
    batches, bs = 3, 4
    res = load_script("benchmarks/loader_speed.py").main(["--spec", str(tmp_path / "tiny.json"), "--data", str(pools["crops"]), str(pools["aligned"]),
                               "--challenge_data", str(pools["chal"]), "--device", "cpu", "--workers", "0", "1",
                               "--batches", str(batches), "--warmup", "1", "--items", "12", "--busy_ms", "1",
                               "--json", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(res))
    m = res["machine"]
    assert m["cpu_count"] >= 1 and m["torch"] == torch.__version__ and m["device"] == "cpu"
    assert res["main_torch_threads"] >= 1
    cfg = res["config"]
    assert cfg["batch_size"] == bs and cfg["batches_per_epoch"] == 2 and cfg["sampler"] == "FamilySampler"
    assert cfg["pair_aligned"] and cfg["pin_memory"] is False and cfg["variants_in_spec"] > 1
    assert set(res["loaders"]) == {"0", "1"}
    for w, modes in res["loaders"].items():
        assert set(modes) == {"loader", "to_device", "unpinned", "busy"}
        for mode, r in modes.items():
            assert r["images_per_second"] > 0 and r["seconds"] > 0, (w, mode)
            assert r["loader_batch"] == bs
            assert r["images"] == batches * r["loader_batch"] and r["batches"] == batches
            assert r["first_batch_s"] > 0 and r["batch_wait_ms"]["max"] >= r["batch_wait_ms"]["median"] > 0
            assert r["epochs_crossed"] >= 1  # 1 + 3 batches of a 2-batch epoch
            assert r["workers"] == int(w) and r["main_cpu_per_wall"] >= 0
        if w == "1":
            assert 0 <= modes["loader"].get("workers_busy", 0) <= 1.5
        assert modes["busy"]["ceiling_images_per_second"] == bs / 0.001
    items = res["items"]
    assert items["n"] == 12 and items["mean_ms"] > 0 and items["items_per_second"] > 0
    # the sampled items of the three pools: crops and round trips (TrainAugment), ready-made challenges (FlipOnly)
    kinds = items["by_augment"]
    assert sum(r["n"] for r in kinds.values()) == 12
    assert set(kinds) == {"TrainAugment", "FlipOnly"}  # this seed draws both kinds in its first 12
    for r in [*kinds.values(), *items["by_source"].values()]:
        assert r["n"] > 0 and r["mean_ms"] > 0 and r["load_ms"] > 0 and r["unreadable"] == 0
    assert all(name.split("/")[0] in ("real", "fake") for name in items["by_source"])
    assert res["sampler_ms_per_epoch"] > 0
    c = res["collate"]
    assert c["batch_size"] == bs and c["main_threads_ms"] > 0 and c["one_thread_ms"] > 0 and c["main_threads"] >= 1
