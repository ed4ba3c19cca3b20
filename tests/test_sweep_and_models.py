"""Model options (input modes, stem pool, layer3), the ensemble architecture, the cosine
schedule and the multi-variant sweep (one data stream, several models)."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bitmind.checkpoint import load_model, read_checkpoint, save_checkpoint, model_meta
from bitmind.models import build_model
from bitmind.models.npr import highpass_residual, input_features, npr_residual
from bitmind.training import TrainConfig
from bitmind.training.sweep import SweepSpec, ensemble_report, run_sweep
from bitmind.training.loop import lr_at
from validator_synth import make_folder

from conftest import load_script
from train_helpers import tiny_sweep_base

REPO = Path(__file__).resolve().parents[1]
TINY = {"layers": [1, 1], "width": 8}


def test_shipped_checkpoints_load_with_the_extended_npr():
    # the earlier single model (written before input/stem_pool existed) still loads as plain NPR
    lm = load_model(REPO / "mining_models" / "npr_f2.pth")
    assert lm.model.config["input"] == "npr" and lm.model.config["stem_pool"] is True
    # the shipped model: one residual network (NPR + high-pass), class-balanced calibration in the file
    lm = load_model(REPO / "mining_models" / "base.pth")
    assert lm.arch == "npr" and lm.model.config["input"] == "npr_hp"
    cal = lm.meta["metrics"]["calibration"]
    assert lm.temperature != 1.0 and cal["method"].startswith("class-balanced Platt scaling")
    assert cal["real_target"] == 0.85 and lm.logit_bias == cal["logit_bias"] < cal["platt_bias"]  # the boundary rule
    fast = load_model(REPO / "mining_models" / "base_fast.pth")
    assert fast.meta["metrics"]["calibration"]["real_target"] == 0.85 and fast.model.config["stem_pool"] is True
    assert lm.meta["train_options"]["patch_size"] == 96 and lm.meta["train_options"]["balance"] == "family"
    # the cheaper serve beside it is the same file on the central 192 px: same weights and calibration
    crop = load_model(REPO / "mining_models" / "base_crop192.pth")
    assert crop.model.config == {**lm.model.config, "center_crop": 192}
    assert (crop.temperature, crop.logit_bias) == (lm.temperature, lm.logit_bias)
    for key, value in lm.model.state_dict().items():
        assert torch.equal(crop.model.state_dict()[key], value), key
    # the previous (SD v1.x only) ensemble is kept beside it
    lm = load_model(REPO / "mining_models" / "base_sd1x.pth")
    assert lm.arch == "ensemble"
    assert sorted(m["config"]["input"] for m in lm.model.config["members"]) == ["npr_hp", "rgb"]


@pytest.mark.parametrize("mode,channels", [("npr", 3), ("hp", 3), ("npr_hp", 6), ("rgb", 3), ("rgb_npr_hp", 9),
                                          ("npr_hp_norm", 6), ("npr_hp_periodic", 20)])
def test_input_modes(mode, channels):
    x = torch.rand(2, 3, 32, 32)
    assert input_features(x, mode).shape == (2, channels, 32, 32)
    net = build_model("npr", input=mode, **TINY).eval()
    assert net(x).shape == (2, 1)


def test_residuals_ignore_flat_content():
    flat = torch.full((1, 3, 16, 16), 0.7)
    assert npr_residual(flat).abs().max() == 0
    assert highpass_residual(flat).abs().max() < 1e-6
    # a pixel-level checkerboard is all detail
    board = (torch.arange(16)[:, None] + torch.arange(16)[None, :]) % 2
    assert highpass_residual(board.float().expand(1, 3, 16, 16)).abs().mean() > 0.3


def test_normalised_residuals_ignore_detail_strength():
    """npr_hp_norm keeps the pattern of the fine detail and drops its strength: halving the
    contrast of a textured picture halves npr_hp but leaves npr_hp_norm (almost) unchanged,
    while a flat region stays near zero instead of being blown up."""
    torch.manual_seed(0)
    x = torch.rand(1, 3, 32, 32)
    soft = 0.25 + 0.5 * x
    plain, plain_soft = input_features(x, "npr_hp"), input_features(soft, "npr_hp")
    assert torch.allclose(plain_soft, plain * 0.5, atol=1e-5)
    norm, norm_soft = input_features(x, "npr_hp_norm"), input_features(soft, "npr_hp_norm")
    assert (norm_soft - norm).abs().max() < 0.01 * norm.abs().max()
    assert norm.pow(2).mean().sqrt() == pytest.approx(1.0, abs=0.1)
    flat = torch.full((1, 3, 32, 32), 0.4)
    flat[..., :16] += 0.001 * torch.randn(1, 3, 32, 16)  # sensor-level noise under eps
    assert input_features(flat, "npr_hp_norm")[..., 2:14].pow(2).mean().sqrt() < 0.3


def _stripes(period: float, size: int = 64, horizontal: bool = True, phase: float = 0.0) -> torch.Tensor:
    """A grey picture whose brightness repeats every ``period`` pixels along rows (or columns)."""
    t = 0.5 + 0.2 * torch.cos(2 * torch.pi * (torch.arange(size, dtype=torch.float32) + phase) / period)
    img = t[None, :].expand(size, size) if horizontal else t[:, None].expand(size, size)
    return img.expand(1, 3, size, size).clone()


def test_periodic_energy_peaks_at_the_period_of_a_pattern_wherever_its_phase():
    """The local spectrum channels of npr_hp_periodic: a pattern that repeats every 4 pixels
    along rows peaks at 1/4 cycle per pixel in the row channels, whatever its phase; the same
    pattern along columns peaks in the column channels instead; a period-8 pattern shrunk
    2.7x (a validator's down-scaling, antialiased) peaks near its new frequency 0.34; a
    flat picture reads 0 everywhere; bf16 autocast gives the float32 answer."""
    from bitmind.models.npr import PERIODIC_FREQUENCIES, periodic_energy
    k, inner = len(PERIODIC_FREQUENCIES), (slice(None), slice(None), slice(16, 48), slice(16, 48))
    freqs = torch.tensor(PERIODIC_FREQUENCIES)
    for phase in (0.0, 1.0, 2.5):
        e = periodic_energy(_stripes(4, phase=phase))[inner].mean((0, 2, 3))
        assert freqs[e[:k].argmax()] == 0.25
    e = periodic_energy(_stripes(4, horizontal=False))[inner].mean((0, 2, 3))
    assert freqs[e[k:].argmax()] == 0.25 and min(e[k + 2] - e[k + 1], e[k + 2] - e[k + 3]) > 1  # a peak
    assert e[2] < e[1] < e[0]  # along rows it is constant: only the window's leak from zero frequency
    small = F.interpolate(_stripes(8, size=256), scale_factor=1 / 2.7, mode="bilinear", antialias=True)
    e = periodic_energy(small)[..., 16:-16, 16:-16].mean((0, 2, 3))
    assert freqs[e[:k].argmax()] in (0.3125, 0.375)
    assert periodic_energy(torch.full((1, 3, 32, 32), 0.3)).abs().max() < 1e-4
    x = torch.rand(2, 3, 48, 48)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        half = periodic_energy(x)
    assert torch.allclose(half.float(), periodic_energy(x), atol=0.05)


@pytest.mark.parametrize("opts", [{"input": "npr_hp_periodic"}, {"input": "npr_hp", "center_crop": 160}])
def test_periodic_input_and_center_crop_models_are_served_like_any_other(tmp_path, opts):
    """npr_hp_periodic and center_crop go through the predictor's CPU preparation (batch
    norms folded, channels-last) and answer what the eager model answers."""
    from bitmind.image_transforms import base_transforms
    from bitmind.miner.predict import Predictor
    from PIL import Image

    torch.manual_seed(4)
    m = build_model("npr", stem_pool=False, **opts, **TINY).eval()
    path = save_checkpoint(m, tmp_path / "p.pth", model_meta(m, "npr"))
    pred = Predictor(str(path), device="cpu", amp="none")
    try:
        img = Image.fromarray((np.random.default_rng(1).random((260, 300, 3)) * 255).astype("uint8"))
        ref = load_model(path)
        with torch.no_grad():
            expect = float(ref.probabilities(ref.model(base_transforms(img)[None]).reshape(-1))[0])
        assert abs(pred.predict_image(img) - expect) < 1e-3
    finally:
        pred.close()


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="input mode"):
        build_model("npr", input="fft")
    with pytest.raises(ValueError, match="layers"):
        build_model("npr", layers=[1])
    with pytest.raises(ValueError, match="at least one"):
        build_model("ensemble", members=[])


def test_layer3_and_no_stem_pool_change_the_network():
    base = build_model("npr", **TINY)
    deep = build_model("npr", layers=[1, 1, 1], width=8)
    assert sum(p.numel() for p in deep.parameters()) > sum(p.numel() for p in base.parameters())
    x = torch.rand(1, 3, 64, 64)
    feats = {}
    nopool = build_model("npr", stem_pool=False, **TINY).eval()
    nopool.layer1.register_forward_hook(lambda m, a, o: feats.__setitem__("nopool", o.shape))
    base.eval().layer1.register_forward_hook(lambda m, a, o: feats.__setitem__("pool", o.shape))
    nopool(x), base(x)
    assert feats["nopool"][-1] == 2 * feats["pool"][-1]


def test_ensemble_is_the_mean_of_its_members_and_round_trips(tmp_path):
    torch.manual_seed(0)
    a, b = build_model("npr", **TINY).eval(), build_model("npr", input="hp", **TINY).eval()
    ens = build_model("ensemble", members=[{"arch": "npr", "config": a.config}, {"arch": "npr", "config": b.config}]).eval()
    ens.members[0].load_state_dict(a.state_dict())
    ens.members[1].load_state_dict(b.state_dict())
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(ens(x), (a(x) + b(x)) / 2, atol=1e-6)
    path = save_checkpoint(ens, tmp_path / "ens.pth", model_meta(ens, "ensemble"))
    lm = load_model(path)
    with torch.no_grad():
        assert torch.allclose(lm.model(x), ens(x), atol=1e-6)


def test_cosine_schedule_warms_up_then_decays():
    cfg = TrainConfig(lr=1e-3, epochs=10, lr_schedule="cosine", warmup_epochs=2)
    lrs = [lr_at(cfg, e) for e in range(10)]
    assert lrs[0] < lrs[1] < lrs[2] == pytest.approx(1e-3)  # two warm-up epochs below lr, full lr at epoch 2
    assert all(x > y for x, y in zip(lrs[2:], lrs[3:]))
    assert lrs[-1] >= 1e-5
    with pytest.raises(ValueError):
        lr_at(TrainConfig(lr_schedule="nope"), 3)


def test_spec_refuses_shared_options_in_a_variant():
    with pytest.raises(ValueError, match="share"):
        SweepSpec.from_dict({"variants": {"a": {"epochs": 3}}})
    with pytest.raises(ValueError, match="at least one"):
        SweepSpec.from_dict({"variants": {}})
    tiles = SweepSpec.from_dict({"variants": {"ok": {"patch_size": 96, "tile_shuffle": 32},
                                              "bad": {"patch_size": 96, "tile_shuffle": 40}}})
    assert tiles.variant_config("ok").tile_shuffle == 32 and tiles.variant_extras("ok")
    with pytest.raises(ValueError, match="variant 'bad': tile_shuffle"):
        tiles.variant_extras("bad")


def test_a_sweep_variant_crops_its_pairs_alike_in_its_part_of_the_batch(tmp_path):
    from bitmind.training.sweep import _Variant

    spec = SweepSpec.from_dict({"base": {"checkpoints_dir": str(tmp_path), "name": "s", "balance": "family", "pair_aligned": True,
                                         "batch_size": 8, "patch_size": 32, "device": "cpu", **TINY},
                                "variants": {"paired": {"pair_patches": True}, "plain": {}}})
    seen = {}
    for name in ("paired", "plain"):
        mask = torch.tensor([k != 3 for k in range(20)])  # the variant's subset drops item 3
        v = _Variant(name, spec.variant_config(name), spec.variant_extras(name), torch.device("cpu"), mask=mask)
        v.align_pairs({11: 12, 5: 6})  # round trip -> its real photo
        v.step = lambda x, y, target=None, aux=None, history=None, content=None, name=name: seen.setdefault(name, x)
        x = torch.rand(6, 3, 64, 64)
        x[3] = x[1]  # round trip 11 and its photo 12; with item 3 dropped they are rows 1-2 of the part
        v.train_batch(x, torch.zeros(6), torch.tensor([0, 11, 3, 12, 5, 7]), {})
    part = seen["paired"]
    assert part.shape == (5, 3, 32, 32) and torch.equal(part[1], part[2])  # same place in the same picture
    assert not torch.equal(seen["plain"][1], seen["plain"][2])  # each its own patch, as base.pth was trained


def test_a_sweep_with_an_unusable_variant_stops_before_reading_data(tmp_path):
    spec = SweepSpec.from_dict({"base": tiny_sweep_base(tmp_path, tmp_path / "no-such-data", "bad", epochs=1),
                                "variants": {"fine": {}, "typo": {"input": "nrp"}}})
    with pytest.raises(ValueError, match="variant 'typo': --input 'nrp'"):
        run_sweep(spec)
    assert not (tmp_path / "ck" / "bad").exists()  # nothing written either


def test_ensemble_report_tries_every_combination_best_first():
    labels = np.array([0, 0, 1, 1])
    # a and b each err on a different image; together they are right everywhere
    logits = {"a": np.array([-2.0, 1.0, 2.0, 2.0]), "b": np.array([1.0, -2.0, 2.0, 2.0]), "c": np.array([3.0, 3.0, -3.0, -3.0])}
    rep = ensemble_report(logits, labels)
    assert sorted(len(r["members"]) for r in rep) == [2, 2, 2, 3]
    assert rep[0]["members"] == ["a", "b"] and rep[0]["accuracy"] == 1.0
    assert [r["accuracy"] for r in rep] == sorted((r["accuracy"] for r in rep), reverse=True)
    assert len(ensemble_report(logits, labels, max_members=2)) == 3


def test_sweep_trains_every_variant_on_one_stream(tmp_path):
    torch.set_num_threads(1)
    data = make_folder(tmp_path / "data", n_per_class=12, seed=5, size=64)
    spec = SweepSpec.from_dict({
        "base": tiny_sweep_base(tmp_path, data, "s", epochs=2),
        "val_seeds": [0, 1],
        "variants": {"plain": {}, "hp_seed1": {"input": "hp", "seed": 1, "tile_shuffle": 16,
                                                       "aug_freq_mask_prob": 1.0, "aug_freq_mask_max_freq": 0.5}},
    })
    summary = run_sweep(spec)
    out = tmp_path / "ck" / "s"
    assert json.loads((out / "sweep.json").read_text())["epochs"] == 2
    assert set(summary["variants"]) == {"plain", "hp_seed1"}
    assert len(summary["ensembles"]) == 1
    n_val = summary["val_challenges"]
    for name in ("plain", "hp_seed1"):
        run = out / name
        assert len(json.loads((run / "history.json").read_text())) == 2
        assert (run / "curves.png").is_file()
        state, meta = read_checkpoint(run / "model_epoch_best.pth")
        assert meta["metrics"]["val_seeds"] == [0, 1] and "temperature" in meta
        assert np.load(run / "val_logits_best.npy").shape == (2, n_val)
    _, meta = read_checkpoint(out / "hp_seed1" / "model_epoch_best.pth")
    assert meta["config"]["input"] == "hp" and meta["train_options"]["seed"] == 1
    assert meta["train_options"]["tile_shuffle"] == 16 and "tile_shuffle" not in meta["config"]  # training only
    assert meta["train_options"]["aug_freq_mask_prob"] == 1.0 and "aug_freq_mask_prob" not in meta["config"]
    assert meta["train_options"]["aug_freq_mask_max_freq"] == 0.5
    # two draws of the same validation images
    assert n_val % 2 == 0 and n_val > 0
    from bitmind.training.sweep import main
    rep = main(["--report", str(out)])
    assert set(rep["variants"]) == {"plain", "hp_seed1"} and rep["ensembles"][0]["members"] == ["hp_seed1", "plain"]
    assert (out / "sweep_report.json").is_file()


def test_subsets_are_nested_and_about_the_asked_share():
    from bitmind.data import in_subset

    stems = [f"pic{i}" for i in range(4000)]
    quarter = {s for s in stems if in_subset(s, 0.25)}
    half = {s for s in stems if in_subset(s, 0.5)}
    assert quarter < half  # nested: more data adds pictures, never swaps them
    assert abs(len(quarter) / 4000 - 0.25) < 0.03 and abs(len(half) / 4000 - 0.5) < 0.03
    assert all(in_subset(s, 1.0) for s in stems[:50])
    assert {s for s in stems if in_subset(s, 0.25, seed=1)} != quarter
    with pytest.raises(ValueError):
        in_subset("x", 0.0)


def test_update_bn_on_kept_batches_estimates_their_statistics():
    # the sweep re-estimates an averaged model's batch norms with torch's update_bn on a
    # plain list of in-memory batches: check that contract
    from torch.optim.swa_utils import update_bn

    net = torch.nn.Sequential(torch.nn.BatchNorm2d(3)).eval()
    batches = [torch.randn(4, 3, 8, 8) * 2 + torch.tensor([1.0, -2.0, 5.0]).view(1, 3, 1, 1) for _ in range(3)]
    update_bn(batches, net)
    allx = torch.cat(batches)
    assert torch.allclose(net[0].running_mean, allx.mean(dim=(0, 2, 3)), atol=1e-5)
    assert torch.allclose(net[0].running_var, allx.var(dim=(0, 2, 3)), rtol=0.05)
    assert net[0].momentum == 0.1 and not net.training  # restored


def test_sweep_subset_and_weight_averaging_variants(tmp_path):
    torch.set_num_threads(1)
    data = make_folder(tmp_path / "data", n_per_class=16, seed=6, size=64)
    spec = SweepSpec.from_dict({
        "base": tiny_sweep_base(tmp_path, data, "s", epochs=3),
        "val_seeds": [0], "val_from": 1,
        "variants": {"all": {}, "half": {"train_fraction": 0.5}, "swa": {"swa_start": 1},
                     "reals_only": {"exclude_sources": ["fake/synth"]}},
    })
    summary = run_sweep(spec)
    n = summary["variants"]["all"]["training_images"]
    assert 0 < summary["variants"]["half"]["training_images"] < n
    from bitmind.training.trainer import build_datasets

    train_labels = build_datasets(spec.base)[0].labels()
    assert summary["variants"]["reals_only"]["training_images"] == train_labels.count(0) < n
    out = tmp_path / "ck" / "s"
    hist = {v: json.loads((out / v / "history.json").read_text()) for v in ("all", "half", "swa")}
    assert [r["epoch"] for r in hist["all"]] == [1, 2]  # epoch 0 not validated (val_from)
    assert [r["averaged"] for r in hist["swa"]] == [True, True] and not any(r["averaged"] for r in hist["all"])
    _, meta = read_checkpoint(out / "half" / "model_epoch_best.pth")
    assert meta["train_options"]["train_fraction"] == 0.5
    # the averaged model is a plain, servable checkpoint
    lm = load_model(out / "swa" / "model_epoch_best.pth")
    assert lm.arch == "npr" and lm.model(torch.rand(1, 3, 64, 64)).shape == (1, 1)
    with pytest.raises(ValueError):
        SweepSpec.from_dict({"base": {}, "variants": {"x": {"train_fraction": 1.5}}}).variant_extras("x")
    # an average that would start after the last epoch is refused before any data is read
    for start in (3, 10, -1):
        with pytest.raises(ValueError, match="swa_start"):
            SweepSpec.from_dict({"base": {"epochs": 3}, "variants": {"x": {"swa_start": start}}}).variant_extras("x")
    assert SweepSpec.from_dict({"base": {"epochs": 3}, "variants": {"x": {"swa_start": 2}}}).variant_extras("x")["swa_start"] == 2
    # members of different sweeps on the same validation draws can be paired in one report
    import shutil

    from bitmind.training.sweep import report_from_dir

    other = tmp_path / "ck" / "t"
    shutil.copytree(out, other)
    rep = report_from_dir([out, other], max_members=2, out=tmp_path / "both.json")
    assert "s/half" in rep["variants"] and "t/swa" in rep["variants"] and rep["sweeps"] == [str(out), str(other)]
    assert json.loads((tmp_path / "both.json").read_text())["ensembles"] == rep["ensembles"]
    best = report_from_dir([out, other], max_members=2, top=1)
    assert best["ensembles"] == rep["ensembles"][:1] and best["ensembles_tried"] == len(rep["ensembles"]) > 1
    arr = np.load(other / "half" / "val_logits_best.npy")
    arr[1] = 1 - arr[1]  # other validation challenges: refuse to compare
    np.save(other / "half" / "val_logits_best.npy", arr)
    with pytest.raises(ValueError, match="other challenges"):
        report_from_dir([out, other])


def test_ensemble_cli_combines_member_checkpoints(tmp_path):
    from bitmind.cli.ensemble import build_ensemble_checkpoint, main

    torch.manual_seed(1)
    a, b = build_model("npr", **TINY).eval(), build_model("npr", input="rgb", **TINY).eval()
    pa = save_checkpoint(a, tmp_path / "a.pth", model_meta(a, "npr", metrics={"val": {"accuracy": 0.8}, "epoch": 3}))
    pb = save_checkpoint(b, tmp_path / "b.pth", model_meta(b, "npr"))
    out = main(["--members", str(pa), str(pb), "--out", str(tmp_path / "e.pth")])
    lm = load_model(out)
    assert lm.arch == "ensemble" and [m["config"]["input"] for m in lm.model.config["members"]] == ["npr", "rgb"]
    assert lm.meta["members"][0]["epoch"] == 3 and len(lm.meta["members"][0]["sha256"]) == 64
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(lm.model(x), (a(x) + b(x)) / 2, atol=1e-6)
    with pytest.raises(ValueError, match="already an ensemble"):
        build_ensemble_checkpoint([out, pa], tmp_path / "x.pth")
    with pytest.raises(ValueError, match="at least two"):
        build_ensemble_checkpoint([pa], tmp_path / "x.pth")
    # --out naming a member replaced that member's model with the ensemble (the model was lost): refused
    kept = pa.read_bytes()
    with pytest.raises(SystemExit) as e:
        main(["--members", str(pa), str(pb), "--out", str(tmp_path / "." / "a.pth")])
    assert e.value.code == 2 and pa.read_bytes() == kept
    with pytest.raises(SystemExit) as e:  # a missing member: one line, not a traceback
        main(["--members", str(pa), str(tmp_path / "nope.pth"), "--out", str(tmp_path / "y.pth")])
    assert e.value.code == 2


def test_predictor_serves_an_ensemble_with_cpu_folding(tmp_path):
    from bitmind.cli.ensemble import build_ensemble_checkpoint
    from bitmind.miner.predict import Predictor
    from PIL import Image

    torch.manual_seed(2)
    paths = []
    for i, mode in enumerate(("npr_hp", "rgb")):
        m = build_model("npr", input=mode, **TINY).eval()
        paths.append(save_checkpoint(m, tmp_path / f"m{i}.pth", model_meta(m, "npr")))
    out = build_ensemble_checkpoint(paths, tmp_path / "ens.pth")
    pred = Predictor(str(out), device="cpu")
    try:
        img = Image.fromarray((np.random.default_rng(0).random((300, 200, 3)) * 255).astype("uint8"))
        p = pred.predict_image(img)
        assert 0.0 <= p <= 1.0
        ref = load_model(out)
        from bitmind.image_transforms import base_transforms
        with torch.no_grad():
            expect = float(ref.probabilities(ref.model(base_transforms(img)[None]).reshape(-1))[0])
        assert abs(p - expect) < 1e-3
    finally:
        pred.close()



def test_learning_curve_benchmark_reads_a_sweep_folder(tmp_path):
    lc = load_script("benchmarks/learning_curve.py")
    rng = np.random.default_rng(0)
    y = np.repeat([0.0, 1.0], 200)
    variants = {}
    for frac, noise in ((0.25, 3.0), (0.5, 2.0), (1.0, 1.0)):  # more data -> cleaner logits
        for fam in ("rgb", "npr_hp"):
            name = f"{fam}_{frac}"
            variants[name] = {"input": fam, "train_fraction": frac} if frac < 1 else {"input": fam}
            (tmp_path / name).mkdir()
            np.save(tmp_path / name / "val_logits_best.npy", np.stack([(2 * y - 1) + noise * rng.standard_normal(len(y)), y]))
    (tmp_path / "spec.json").write_text(json.dumps({"base": {"epochs": 3}, "val_seeds": [0], "variants": variants}))
    res = lc.main(["--sweep", str(tmp_path), "--out", str(tmp_path / "lc.json"), "--figure", str(tmp_path / "lc.png")])
    assert [r["fraction"] for r in res["rows"]] == [0.25, 0.5, 1.0]
    acc = [r["ensemble"]["accuracy"] for r in res["rows"]]
    assert acc[0] < acc[1] < acc[2] and set(res["rows"][0]["members"]) == {"rgb", "npr_hp"}
    assert res["extrapolation"]["gain_per_doubling"] > 0 and (tmp_path / "lc.png").stat().st_size > 0
    assert json.loads((tmp_path / "lc.json").read_text())["val_challenges"] == 400


def test_distillation_pulls_the_student_towards_its_teacher(tmp_path):
    from validator_synth import constant_npr

    torch.set_num_threads(1)
    data = make_folder(tmp_path / "data", n_per_class=16, seed=7, size=64)
    teacher = constant_npr(tmp_path / "teacher.pth", prob=0.9)  # says "90% AI" whatever the image
    spec = SweepSpec.from_dict({
        "base": tiny_sweep_base(tmp_path, data, "kd", epochs=4, lr=1e-2, dropout=0.0),
        "val_seeds": [0],
        "variants": {"labels": {}, "student": {"distill_from": str(teacher), "distill_weight": 1.0}},
    })
    assert spec.variant_extras("labels")["distill_weight"] == 0.0
    summary = run_sweep(spec)
    out = tmp_path / "ck" / "kd"
    last = {v: json.loads((out / v / "history.json").read_text())[-1] for v in ("labels", "student")}
    # the student learnt the teacher's constant 0.9 (its real-photo accuracy collapses); the label-trained one did not
    assert last["student"]["val_real_acc"] < 0.2 and last["labels"]["val_real_acc"] > 0.5
    _, meta = read_checkpoint(out / "student" / "model_epoch_best.pth")
    assert meta["train_options"]["distill_from"] == str(teacher)
    assert summary["variants"]["student"]["options"]["distill_weight"] == 1.0
    with pytest.raises(ValueError):
        SweepSpec.from_dict({"base": {}, "variants": {"x": {"distill_from": "t.pth", "distill_weight": 2}}}).variant_extras("x")


def test_unseen_generator_benchmark_scores_models_and_members(tmp_path):

    from bitmind.cli.ensemble import main as ensemble_main
    from validator_synth import tiny_taesd_weights

    ug = load_script("benchmarks/unseen_generator.py")
    torch.set_num_threads(1)
    data = make_folder(tmp_path / "data", n_per_class=30, seed=8, size=64)
    torch.manual_seed(2)
    a, b = build_model("npr", **TINY).eval(), build_model("npr", input="rgb", **TINY).eval()
    pa = save_checkpoint(a, tmp_path / "a.pth", model_meta(a, "npr"))
    pb = save_checkpoint(b, tmp_path / "b.pth", model_meta(b, "npr"))
    ens = ensemble_main(["--members", str(pa), str(pb), "--out", str(tmp_path / "e.pth")])
    res = ug.main(["--data", str(data), "--taef2", str(tiny_taesd_weights(tmp_path / "w")), "--models", str(ens), str(pa),
                   "--work", str(tmp_path / "pool"), "--out", str(tmp_path / "u.json")])
    n_test_real = len(list((tmp_path / "pool" / "real").rglob("*.png")))
    assert res["pool"]["real"] == res["pool"]["fake"] == n_test_real > 0  # one round trip per held-out real photo
    assert set(res["models"]) == {str(ens), f"{ens} member 0 (npr)", f"{ens} member 1 (rgb)", str(pa)}
    for row in res["models"].values():
        assert set(row) == {"clean", "challenge"} and 0.0 <= row["clean"]["fake_detection"] <= 1.0
    assert json.loads((tmp_path / "u.json").read_text())["pool"] == res["pool"]


def test_every_committed_sweep_spec_is_one_the_code_accepts():
    """A typo in a committed spec would surface only on a GPU machine, after the data upload:
    every spec in base_miner/NPR/sweeps/ must expand (LOGO specs over the pools' sources),
    give each variant a training configuration and sweep options, and build its network."""
    import dataclasses

    from bitmind.models.registry import build_model
    from bitmind.training.logo import logo_sweep_spec
    from bitmind.training.sweep import SweepSpec

    fakes = ["sd1x", "sd15", "sd2", "sdxl", "flux1-dev", "flux1-schnell", "sd35", "midjourney-v3", "stylegan-family",
             "biggan-progan", "pix2pixhd-spade", "vqgan", "aligned-taef2"]
    reals = ["imagenet", "faces", "celebahq", "urban100", "lowlight", "photostyle", "mmpose_misc", "coco", "bsd100"]
    sources = [f"fake/{s}" for s in fakes] + [f"real/{s}" for s in reals]
    specs = sorted((REPO / "base_miner" / "NPR" / "sweeps").glob("*.json"))
    assert len(specs) >= 20
    built = set()
    for path in specs:
        d = json.loads(path.read_text())
        sweep = d if "variants" in d else logo_sweep_spec(d, sources)
        spec = SweepSpec.from_dict(sweep)
        for name in spec.variants:
            cfg = spec.variant_config(name)
            spec.variant_extras(name)
            key = json.dumps([cfg.arch, cfg.model_config()], sort_keys=True)
            if key not in built:
                build_model(cfg.arch, **cfg.model_config())
                built.add(key)
        assert dataclasses.asdict(spec.base), path.name
    # and a typo is caught, not ignored
    bad = json.loads(specs[0].read_text())
    bad["base"]["epochz"] = 3
    with pytest.raises(ValueError, match="epochz"):
        SweepSpec.from_dict(bad if "variants" in bad else logo_sweep_spec(bad, sources))


def test_npr_top_pool_reads_the_strongest_locations_and_describes_itself(tmp_path):
    """``pool="topNN"``: the image logit is the mean of the NN % highest location logits of
    ``logit_map`` (whose plain mean is the paper's global-average-pool logit); the config
    carries it (and only then), so a checkpoint loads back with the same pooling."""
    from bitmind.checkpoint import load_model, save_checkpoint
    from bitmind.models import build_model
    from bitmind.models.npr import pool_logit_map, top_fraction

    torch.manual_seed(0)
    mean = build_model("npr", layers=[1, 1], width=8, input="npr_hp", stem_pool=False).eval()
    top = build_model("npr", layers=[1, 1], width=8, input="npr_hp", stem_pool=False, pool="top10").eval()
    top.load_state_dict(mean.state_dict())
    x = torch.rand(3, 3, 256, 256, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        m = mean.logit_map(x)
        assert m.shape == (3, 64, 64)
        assert torch.allclose(mean(x)[:, 0], m.mean((1, 2)), atol=1e-5)  # the paper's pool is the map's mean
        k = round(0.10 * 64 * 64)
        assert torch.allclose(top(x)[:, 0], m.flatten(1).sort(1, descending=True).values[:, :k].mean(1), atol=1e-5)
        assert torch.all(top(x) > mean(x))
    assert "pool" not in mean.config and top.config["pool"] == "top10"
    path = save_checkpoint(top, tmp_path / "top.pth")
    with torch.no_grad():
        assert torch.allclose(load_model(path).model.eval()(x), top(x))
    assert top_fraction("top100") == 1.0 and pool_logit_map(m, "top100").allclose(m.mean((1, 2)))
    for bad in ("max", "top0", "top101", "topx"):
        with pytest.raises(ValueError, match="pool"):
            build_model("npr", layers=[1, 1], width=8, pool=bad)


def test_a_sweep_variant_trains_with_a_top_pool_and_its_checkpoint_serves_it(tmp_path):
    """``"pool": "top25"`` in a variant (``TrainConfig.pool``): the network is trained with that
    pool (multiple-instance style), its checkpoint's config says so, and loading it back gives
    a model whose image logit is the top-25 % mean of its location logits, not their mean.
    Dropout reaches the location features in training only: in eval ``logit_map``'s mean is
    still the mean pool's logit."""
    from bitmind.models.npr import pool_logit_map

    torch.set_num_threads(1)
    data = make_folder(tmp_path / "data", n_per_class=8, seed=3, size=64)
    spec = SweepSpec.from_dict({
        "base": {**tiny_sweep_base(tmp_path, data, "p", epochs=1), "dropout": 0.5},
        "val_seeds": [0],
        "variants": {"mil": {"pool": "top25", "input": "npr_hp", "stem_pool": False}},
    })
    assert spec.variant_config("mil").model_config()["pool"] == "top25"
    assert "pool" not in dataclasses.replace(spec.variant_config("mil"), pool="mean").model_config()
    run_sweep(spec)
    lm = load_model(tmp_path / "ck" / "p" / "mil" / "model_epoch_best.pth")
    assert lm.meta["config"]["pool"] == "top25" and lm.model.pool == "top25"
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    net = lm.model.eval()
    with torch.no_grad():
        m = net.logit_map(x)
        assert torch.allclose(net(x)[:, 0], pool_logit_map(m, "top25"), atol=1e-5)
        assert not torch.allclose(net(x)[:, 0], m.mean((1, 2)), atol=1e-4)
        net.train()
        assert not torch.equal(net.logit_map(x), net.logit_map(x))  # dropout on the features in training


def test_time_budget_refit_gives_back_the_epochs_the_start_up_took():
    """The cautious fit after epochs 0-1 (worker start-up, cuDNN, first validation) and the
    steady-state refit after it, with the numbers of a real H200 run: 250 s budget, 12.6 s per
    epoch measured over epochs 0-1, 8.5 s per epoch from then on."""
    from bitmind.training.sweep import budget_epochs
    first = budget_epochs(250, 25.2, 2, 12.6, planned=43)
    assert first == 19
    assert budget_epochs(250, 25.2 + 2 * 8.5, 4, 8.5, planned=43) == 28  # the refit runs longer
    assert budget_epochs(10_000, 30.0, 4, 8.5, planned=43) == 43  # never past the planned length
    assert budget_epochs(250, 400.0, 6, 8.5, planned=43) == 6  # over budget: stop where it is
    assert budget_epochs(5, 4.0, 2, 2.0, planned=43) == 3  # at least three epochs


@pytest.mark.parametrize("budget_s, epochs, validated", [(1e-3, 3, [2]), (1e6, 6, [4, 5])])
def test_a_time_budget_shortens_a_sweep_but_never_lengthens_it(tmp_path, budget_s, epochs, validated):
    """Both fits run inside a real sweep: an exhausted budget stops at the three-epoch floor
    (history and sweep.json say so), an ample one keeps the planned six through the refit.
    Validation and weight averaging planned from epoch 4 of 6 move with the cut (to 2 of 3:
    the same share of the end), and sweep.json says where they ended up."""
    torch.set_num_threads(1)
    data = make_folder(tmp_path / "data", n_per_class=6, seed=3, size=64)
    spec = SweepSpec.from_dict({"base": tiny_sweep_base(tmp_path, data, "b", epochs=6), "time_budget_s": budget_s,
                                "val_from": 4, "variants": {"plain": {}, "avg": {"swa_start": 4}}})
    run_sweep(spec)
    out = tmp_path / "ck" / "b"
    report = json.loads((out / "sweep.json").read_text())
    assert (report["epochs"], report["planned_epochs"], report["val_from"]) == (epochs, 6, validated[0])
    assert report["variants"]["avg"]["swa_start"] == validated[0] and report["variants"]["plain"]["swa_start"] == 0
    for name, averaged in (("plain", False), ("avg", True)):
        history = json.loads((out / name / "history.json").read_text())
        assert [r["epoch"] for r in history] == validated
        assert all(bool(r.get("averaged")) is averaged for r in history)


def test_validations_count_in_the_budget_once_they_have_started():
    """The twenty-third session's H100 run: the early fits saw 12.8 s training epochs (no
    validation before epoch 39), re-planned 77 epochs for a 1,000 s guard, and the run took
    1,144 s. Fitted after its first validation with what an epoch (13.7 s) and a validation
    (here 5 s) cost, it ends within the budget."""
    from bitmind.training.sweep import epochs_within, validations_between

    assert validations_between(40, 77, 39, 4) == 10  # 43, 47, ..., 75, and the last (76)
    assert validations_between(40, 76, 39, 4) == 9  # 75 is both a periodic and the last one
    assert validations_between(0, 10, 20, 4) == 1  # only the last
    assert validations_between(5, 5, 0, 1) == 0  # nothing left
    elapsed = 28.4 + 12.8 * 39 + 13.7 + 5  # epochs 0-39 and the validation of 39
    end = epochs_within(1000, elapsed, 40, 13.7, 5.0, 39, 4, 77)
    assert end == 70  # 30 more epochs (411 s) and 8 validations (40 s) in the 453.7 s left
    assert elapsed + (end - 40) * 13.7 + validations_between(40, end, 39, 4) * 5.0 <= 1000
    assert elapsed + (end + 1 - 40) * 13.7 + validations_between(40, end + 1, 39, 4) * 5.0 > 1000
    assert epochs_within(10_000, elapsed, 40, 13.7, 5.0, 39, 4, 77) == 77  # never longer
    assert epochs_within(500, elapsed, 40, 13.7, 5.0, 39, 4, 77) == 40  # over: stop after the epoch just run


def _fake_clock_sweep(tmp_path, monkeypatch, budget_s: float, epochs: int, val_from: int, swa_start: int):
    """A real tiny sweep (a plain and an averaging variant, validation every epoch from
    ``val_from``) on a fake clock: a training epoch costs 1 s, a validation 5 s per variant.
    Returns sweep.json and the averaging variant's history."""
    import bitmind.training.sweep as sweep_mod

    clock = SimpleNamespace(now=0.0)
    monkeypatch.setattr(sweep_mod, "time", SimpleNamespace(time=lambda: clock.now))
    real_epoch, real_logits = sweep_mod.train_one_epoch, sweep_mod._logits

    def epoch(*a, **k):
        clock.now += 1.0
        return real_epoch(*a, **k)

    def logits(*a, **k):
        clock.now += 5.0
        return real_logits(*a, **k)

    monkeypatch.setattr(sweep_mod, "train_one_epoch", epoch)
    monkeypatch.setattr(sweep_mod, "_logits", logits)
    torch.set_num_threads(1)
    data = make_folder(tmp_path / "data", n_per_class=6, seed=3, size=64)
    spec = SweepSpec.from_dict({"base": tiny_sweep_base(tmp_path, data, "v", epochs=epochs), "time_budget_s": budget_s,
                                "val_from": val_from, "val_every": 1,
                                "variants": {"plain": {}, "avg": {"swa_start": swa_start}}})
    run_sweep(spec)
    out = tmp_path / "ck" / "v"
    return json.loads((out / "sweep.json").read_text()), json.loads((out / "avg" / "history.json").read_text())


@pytest.mark.parametrize("budget_s, epochs, swa_start, averaged", [(20, 6, 0, [False]), (30, 7, 6, [False, True])],
                         ids=["stops-before-averaging", "averages-from-the-next-epoch"])
def test_a_sweep_whose_validations_do_not_fit_stops_within_its_budget(tmp_path, monkeypatch, budget_s, epochs,
                                                                     swa_start, averaged):
    """Validation from epoch 5 of 8, averaging planned from 7, two variants (a validation
    costs 10 s). The early fits see only 1 s epochs and keep all 8; without a fit after a
    validation the run takes 8 + 3 x 10 = 38 s. After the validation of epoch 5 (16 s spent):
    with 20 s no further epoch and its validation fit, so the run ends there and the
    averaging variant, which never averaged, says so (swa_start 0); with 30 s one more fits,
    and averaging moves to it, never onto the epoch already run."""
    report, history = _fake_clock_sweep(tmp_path, monkeypatch, budget_s, 8, val_from=5, swa_start=7)
    assert (report["epochs"], report["planned_epochs"]) == (epochs, 8)
    assert report["seconds"] <= budget_s
    assert report["variants"]["avg"]["swa_start"] == swa_start
    assert [(r["epoch"], bool(r.get("averaged"))) for r in history] == list(zip(range(5, epochs), averaged))


def test_a_validation_before_the_steady_fit_binds_it(tmp_path, monkeypatch):
    """Validation from epoch 3 of 10 (before the steady fit at epoch 4), budget 14 s: after
    the validation of epoch 3 the budget is spent (4 epochs, 10 s of validation) and the run
    stops there; before, fits after a validation waited for the steady fit, which cannot stop
    before one more epoch and its validation: 25 s."""
    report, history = _fake_clock_sweep(tmp_path, monkeypatch, 14, 10, val_from=3, swa_start=4)
    assert (report["epochs"], report["seconds"]) == (4, 14)
    assert report["variants"]["avg"]["swa_start"] == 0 and [r["epoch"] for r in history] == [3]


def test_a_time_budget_keeps_the_runs_shape(capsys):
    """A run cut from 78 to fewer epochs still averages and selects over the same share of its
    end (before: a cut to 30 saved plain weights, averaging planned from 39 never began), the
    moves are scaled from the plan (two re-plans do not compound), and what has passed stays."""
    from bitmind.training.sweep import fit_epochs, planned_shape, scaled_epoch

    def sweep():
        spec = SweepSpec.from_dict({"base": {"epochs": 78}, "time_budget_s": 100, "val_from": 39,
                                    "variants": {"plain": {}, "swa": {"swa_start": 39}}})
        variants = [SimpleNamespace(name=n, swa_start=spec.variant_extras(n)["swa_start"], cfg=spec.variant_config(n))
                    for n in spec.variants]
        return spec, variants, planned_shape(spec, variants)

    spec, variants, plan = sweep()
    fit_epochs(spec, variants, 29, "test", plan, now=2)
    assert spec.base.epochs == 29 and all(v.cfg.epochs == 29 for v in variants)
    assert (spec.val_from, [v.swa_start for v in variants]) == (15, [0, 15])  # 39 * 29 / 78 = 14.5, up; off stays off
    fit_epochs(spec, variants, 52, "test", plan, now=6)
    assert (spec.val_from, [v.swa_start for v in variants]) == (26, [0, 26])  # from the plan: not 15 * 52 / 29 -> 27
    capsys.readouterr()
    fit_epochs(spec, variants, 78, "test", plan, now=8)
    assert (spec.base.epochs, spec.val_from, variants[1].swa_start) == (78, 39, 39)  # back to the plan
    assert "back to the planned 78 epochs" in capsys.readouterr().out  # was "78 epochs instead of 78"
    fit_epochs(spec, variants, 3, "test", plan, now=8)
    assert spec.base.epochs == 9 and variants[1].swa_start == 8  # never ends before the epoch about to run
    # a hard first cut starts averaging and validation early; the steady re-plan leaves them
    # there (moving them later would keep the early weights in the average, stale between)
    spec, variants, plan = sweep()
    fit_epochs(spec, variants, 5, "test", plan, now=2)
    assert (spec.val_from, variants[1].swa_start) == (3, 3)
    fit_epochs(spec, variants, 52, "test", plan, now=4)
    assert (spec.base.epochs, spec.val_from, variants[1].swa_start) == (52, 3, 3)
    assert scaled_epoch(39, 78, 30, now=20) == 20  # not before the next epoch to run
    assert scaled_epoch(39, 78, 10, now=9) == 9  # nor after the last
    assert scaled_epoch(5, 78, 30, now=6) == 5  # already passed: stays
    assert scaled_epoch(1, 78, 30, now=0) == 1  # a short averaging stays on


def test_flip_mean_answers_a_picture_and_its_mirror_alike(tmp_path):
    """``flip_mean`` in the config: the mean of the outputs for the input and its mirror, so
    a picture and its left-right mirror get the same answer (validators mirror at random);
    the same weights, stored in the file's config and served from it."""
    from bitmind.checkpoint import load_model, model_meta, save_checkpoint

    torch.manual_seed(0)
    plain = build_model("npr", input="npr_hp", stem_pool=False, **TINY).eval()
    flip = build_model("npr", input="npr_hp", stem_pool=False, flip_mean=True, **TINY).eval()
    flip.load_state_dict(plain.state_dict())
    assert "flip_mean" not in plain.config and flip.config["flip_mean"] is True
    x = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        assert not torch.allclose(plain(x), plain(x.flip(-1)), atol=1e-4)  # the plain network is not symmetric
        assert torch.allclose(flip(x), flip(x.flip(-1)), atol=1e-5)
        assert torch.allclose(flip(x), (plain(x) + plain(x.flip(-1))) / 2, atol=1e-5)
    save_checkpoint(flip, tmp_path / "flip.pth", model_meta(flip, "npr"))
    served = load_model(tmp_path / "flip.pth").model.eval()
    with torch.no_grad():
        assert served.flip_mean and torch.allclose(served(x), flip(x), atol=1e-6)
    # the miner's CPU copy (batch norms folded, fp32) keeps the option; both views run in one
    # pass, so folding finds every conv once (as for the plain network)
    import copy

    from bitmind.inference import fold_batch_norms, forward_logits, serving_forward

    assert fold_batch_norms(copy.deepcopy(served)) == fold_batch_norms(copy.deepcopy(plain)) > 0

    module, amp, channels_last = serving_forward(served, torch.device("cpu"), amp=None)
    got = forward_logits(module, x, torch.device("cpu"), amp, channels_last)
    assert torch.allclose(got, flip(x)[:, 0], atol=1e-4)
    assert torch.allclose(got, forward_logits(module, x.flip(-1), torch.device("cpu"), amp, channels_last), atol=1e-4)


def test_center_crop_looks_at_the_central_square_with_the_npr_grid_kept(tmp_path):
    """``center_crop`` in the config: the same weights on the central N x N of the input
    (even offset, so NPR's 2x2 blocks stay where they were); served from the file alone."""
    from bitmind.models.npr import center_square

    x = torch.rand(2, 3, 64, 64)
    assert center_square(x, 0) is x and center_square(x, 64) is x and center_square(x, 80) is x
    c = center_square(torch.arange(64.0).expand(1, 1, 64, 64), 30)  # (64 - 30) / 2 = 17 -> 16: even
    assert c.shape[-2:] == (30, 30) and c[0, 0, 0, 0] == 16
    torch.manual_seed(0)
    full = build_model("npr", input="npr_hp", stem_pool=False, **TINY).eval()
    torch.manual_seed(0)
    crop = build_model("npr", input="npr_hp", stem_pool=False, center_crop=32, **TINY).eval()
    crop.load_state_dict(full.state_dict())
    with torch.no_grad():
        assert torch.allclose(crop(x), full(x[..., 16:48, 16:48]), atol=1e-6)
        assert not torch.allclose(crop(x), full(x), atol=1e-4)
    assert crop.config["center_crop"] == 32 and "center_crop" not in full.config
    lm = load_model(save_checkpoint(crop, tmp_path / "c.pth"))
    assert lm.model.center_crop == 32
    with pytest.raises(ValueError, match="center_crop"):
        build_model("npr", center_crop=8, **TINY)
