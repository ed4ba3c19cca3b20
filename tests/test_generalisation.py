"""Source families, the family-balanced sampler with aligned pairs, augmentation per
source, patch training, and the leave-one-family-out benchmark end to end (tiny, CPU)."""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bitmind.data.families import class_family_shares, parse_family_share
from bitmind.data import (AsIs, DetectionDataset, FamilySampler, FlipOnly, aligned_partners, family_of,
                          family_weights, sources_of_family)
from bitmind.training import TrainConfig
from bitmind.training.logo import add_ensembles, logo_sweep_spec, score_fold
from bitmind.training.loop import Learner, check_tile_shuffle, random_patches, shuffle_tiles
from bitmind.training.trainer import TrainingDataError, build_datasets, train_sampler

REPO = Path(__file__).resolve().parents[1]
TINY = {"layers": [1, 1], "width": 8}
#: The base of a LOGO spec that trains in seconds on ``make_pools`` on a CPU.
TINY_LOGO_BASE = {"batch_size": 8, "workers": 0, "progress": False, "device": "cpu", "val_fraction": 0.25,
                  "test_fraction": 0.25, "balance": "family", "pair_aligned": True, "samples_per_epoch": 64,
                  "aug_validator_prob": 0.0, "aug_jpeg_prob": 0.0, "lr": 1e-3}


def _img(seed: int, size: int = 64, smooth: bool = False) -> Image.Image:
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, (size // 8 if smooth else size, size // 8 if smooth else size, 3), dtype=np.uint8)
    im = Image.fromarray(a, "RGB")
    return im.resize((size, size), Image.NEAREST) if smooth else im


def make_pools(root: Path) -> dict[str, Path]:
    """A crop pool, a ready-made challenge pool and an aligned pool with shared stems.
    Fakes are blocky (8x nearest up-sampled), reals are noise: learnable in a few steps."""
    crops, chal, aligned = root / "crops", root / "chal", root / "aligned"
    n = 0
    for cls, srcs in (("real", ["faces", "coco"]), ("fake", ["sdxl", "flux1-dev", "flux1-schnell", "stylegan-family"])):
        for s in srcs:
            for d, suffix in ((crops, "_0"), (chal, "_90")):
                (d / cls / s).mkdir(parents=True, exist_ok=True)
                for i in range(8):
                    n += 1
                    size = 256 if d is chal else 64  # challenges are what a validator sends: 256 px
                    _img(n, size, smooth=cls == "fake").save(d / cls / s / f"{s}{i}{suffix}.jpg", quality=90)
    (aligned / "fake" / "aligned-taef2").mkdir(parents=True)
    for f in sorted((crops / "real").rglob("*.jpg")):
        Image.open(f).resize((8, 8)).resize((64, 64), Image.NEAREST).save(aligned / "fake" / "aligned-taef2" / f.name, quality=90)
    return {"crops": crops, "chal": chal, "aligned": aligned}


def test_family_of_groups_generators_and_decoders():
    assert family_of("fake/sd15") == family_of("fake/sd2") == family_of("fake/sd1x") == "sd1-2"
    assert family_of("fake/flux1-schnell") == "flux1"
    assert family_of("fake/vqgan") == "gans"
    assert family_of("real/faces") == "real/faces"
    assert family_of("fake/aligned-taef2") == "aligned-taef2"
    assert family_of("fake/aligned-zoo-shuffle8-c16") == "aligned-shuffle"
    assert family_of("fake/aligned-zoo-bilinear4-c4") == "aligned-bilinear"
    assert family_of("fake/brand-new") == "brand-new"
    srcs = ["fake/sdxl", "fake/aligned-taef2", "fake/aligned-zoo-convt8-c4", "real/coco"]
    assert sources_of_family("aligned", srcs) == ["fake/aligned-taef2", "fake/aligned-zoo-convt8-c4"]
    assert sources_of_family("aligned-convt", srcs) == ["fake/aligned-zoo-convt8-c4"]


def test_family_weights_give_each_family_its_share():
    sources = ["real/a"] * 90 + ["real/b"] * 10 + ["fake/sdxl"] * 70 + ["fake/flux1-dev"] * 5 + ["fake/flux1-schnell"] * 25
    labels = [0] * 100 + [1] * 100
    w = np.asarray(family_weights(labels, sources))
    share = lambda pred: w[[pred(s) for s in sources]].sum()  # noqa: E731
    assert w.sum() == pytest.approx(1.0)
    assert share(lambda s: s.startswith("real")) == pytest.approx(0.5)
    assert share(lambda s: s == "real/b") == pytest.approx(0.25)
    assert share(lambda s: s == "fake/sdxl") == pytest.approx(0.25)  # one family of two
    assert share(lambda s: s == "fake/flux1-dev") == pytest.approx(0.125)  # half of the flux1 family
    # aligned round trips share one family; synthetic up-sampling traces are a family of their own
    with_aligned = sources + ["fake/aligned-taef2"] * 40 + ["fake/aligned-other"] * 10 + ["fake/aligned-synth-upsampling"] * 50
    wa = np.asarray(family_weights(labels + [1] * 100, with_aligned))
    share_a = lambda name: wa[[s == name for s in with_aligned]].sum()  # noqa: E731
    assert share_a("fake/aligned-taef2") == pytest.approx(share_a("fake/aligned-other")) == pytest.approx(0.5 / 4 / 2)
    assert share_a("fake/aligned-synth-upsampling") == pytest.approx(share_a("fake/sdxl")) == pytest.approx(0.5 / 4)
    sampler = FamilySampler(labels, sources, seed=0, num_samples=4000)
    drawn = Counter(sources[i] for i in sampler)
    assert abs(drawn["fake/flux1-dev"] / 4000 - 0.125) < 0.03 and abs(drawn["real/b"] / 4000 - 0.25) < 0.03


def test_family_share_scales_a_family_within_its_class_only():
    """--family_share minigan=0.5: the small GANs get half a family's share of the fakes, the
    other fake families split the rest equally, the real half is untouched."""
    sources = (["real/a"] * 30 + ["real/b"] * 10 + ["fake/sdxl"] * 20 + ["fake/flux1-dev"] * 5
               + ["fake/minigan-nearest"] * 40 + ["fake/minigan-nearest2"] * 10)
    labels = [0] * 40 + [1] * 75
    plain = np.asarray(family_weights(labels, sources))
    w = np.asarray(family_weights(labels, sources, parse_family_share(["minigan=0.5"])))
    share = lambda weights, pred: weights[[pred(s) for s in sources]].sum()  # noqa: E731
    assert w.sum() == pytest.approx(1.0)
    assert share(plain, lambda s: "minigan" in s) == pytest.approx(0.5 / 3)  # one family of three by default
    assert share(w, lambda s: "minigan" in s) == pytest.approx(0.5 * 0.5 / 2.5)  # 0.5 of 1 + 1 + 0.5
    assert share(w, lambda s: s == "fake/sdxl") == pytest.approx(0.5 / 2.5)
    assert share(w, lambda s: s == "fake/minigan-nearest2") == pytest.approx(0.5 * 0.5 / 2.5 / 2)  # sources split their family
    assert share(w, lambda s: s == "real/b") == share(plain, lambda s: s == "real/b") == pytest.approx(0.25)
    # the shares a person reads in the log
    shares = class_family_shares(labels, sources, w)
    assert shares[1] == pytest.approx({"flux1": 0.4, "minigan": 0.2, "sdxl": 0.4}) and shares[0]["real/a"] == pytest.approx(0.5)
    # a family named but absent (a LOGO fold's held-out family) changes nothing; weight 0 is never drawn
    assert np.allclose(family_weights(labels, sources, {"gans": 3.0}), plain)
    off = FamilySampler(labels, sources, seed=0, num_samples=3000, family_share={"minigan": 0.0})
    drawn = Counter(sources[i] for i in off)
    assert not any("minigan" in s for s in drawn) and abs(drawn["fake/sdxl"] / 3000 - 0.25) < 0.03
    with pytest.raises(ValueError, match="never be drawn"):
        family_weights(labels, sources, {"real/a": 0.0, "real/b": 0.0})


@pytest.mark.parametrize("items, problem", [
    (["minigan"], "FAMILY=WEIGHT"), (["=0.5"], "FAMILY=WEIGHT"), (["minigan=half"], "not a number"),
    (["minigan=-1"], ">= 0"), (["minigan=nan"], ">= 0"), (["minigan=inf"], ">= 0"), (["gans=1", "gans=2"], "twice"),
])
def test_family_share_refuses_what_it_cannot_read(items, problem):
    with pytest.raises(ValueError, match=problem):
        parse_family_share(items)
    with pytest.raises(ValueError, match=problem):
        TrainConfig(balance="family", family_share=items, device="cpu").check()


def test_family_share_needs_the_family_sampler_and_reaches_the_training_sampler(tmp_path, caplog):
    with pytest.raises(ValueError, match="needs --balance family"):
        TrainConfig(family_share=["gans=2"], device="cpu").check()
    r = subprocess.run([sys.executable, "base_miner/NPR/train_detector.py", "--family_share", "gans=2"],
                       capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    assert r.returncode == 2 and "needs --balance family" in r.stderr
    pools = make_pools(tmp_path)
    cfg = TrainConfig(data=[str(pools["crops"])], balance="family", samples_per_epoch=4000,
                      family_share=["gans=3", "sdxl=1"], val_fraction=0.25, test_fraction=0.25)
    train, _, _ = build_datasets(cfg)
    with caplog.at_level("INFO", logger="bitmind.training.trainer"):
        sampler = train_sampler(cfg, train)
    names = train.source_names()
    drawn = Counter(names[i] for i in sampler)
    fakes = sum(v for k, v in drawn.items() if k.startswith("fake/"))
    assert abs(drawn["fake/stylegan-family"] / fakes - 3 / 5) < 0.04  # gans 3 of sdxl 1 + flux1 1 + gans 3
    assert abs(drawn["fake/sdxl"] / fakes - 1 / 5) < 0.04
    assert "family shares of class 1: flux1 0.200, gans 0.600, sdxl 0.200" in caplog.text
    # a family the data lacks (a typo, small GANs never made) would silently keep the default share
    with pytest.raises(TrainingDataError, match="names MiniGAN, midjourney, which the training data lacks"):
        train_sampler(dataclasses.replace(cfg, family_share=["midjourney=2", "MiniGAN=0.5"]), train)
    with pytest.raises(TrainingDataError, match="never be drawn"):
        train_sampler(dataclasses.replace(cfg, family_share=["real/faces=0", "real/coco=0"]), train)
    # a spec value that is not a list of strings is refused before the data is read (a bare string
    # was read character by character: "--family_share 'm': FAMILY=WEIGHT")
    for bad in (None, 0.25, "minigan=0.25", {"minigan": 0.25}, [0.25]):
        with pytest.raises(ValueError, match="takes FAMILY=WEIGHT strings"):
            TrainConfig(balance="family", family_share=bad, device="cpu").check()
    # repeated flags add up (before: the last one replaced the others)
    from bitmind.training.config import build_parser

    args = build_parser().parse_args(["--family_share", "minigan=0.25", "--family_share", "gans=2"])
    assert args.family_share == ["minigan=0.25", "gans=2"]


def test_photos_drawn_with_their_round_trips_count_against_their_own_share():
    """With pairs, the photo that follows each round trip is part of the real half and of its
    kind's share: a big kind (many photos, so many round trips) must not crowd out a small one."""
    sources = ["real/big"] * 100 + ["real/small"] * 10 + ["fake/sdxl"] * 50 + ["fake/aligned-taef2"] * 110
    labels = [0] * 110 + [1] * 160
    partners = [-1] * 160 + list(range(110))  # a round trip of every photo
    n = 40000
    drawn = Counter(sources[i] for i in FamilySampler(labels, sources, seed=0, num_samples=n, partners=partners))
    real = drawn["real/big"] + drawn["real/small"]
    assert abs(real / n - 0.5) < 0.02  # before: 0.60, the photos came on top of the real half
    assert abs(drawn["real/big"] / real - 0.5) < 0.03  # before: 0.64
    assert abs(drawn["fake/aligned-taef2"] / n - 0.25) < 0.02 and abs(drawn["fake/sdxl"] / n - 0.25) < 0.02
    # a photo whose round trips alone exceed its share is never drawn on its own, and counted
    heavy = FamilySampler([0, 0, 1, 1], ["real/a", "real/b", "fake/aligned-taef2", "fake/aligned-taef2"],
                          partners=[-1, -1, 0, 0], num_samples=100)
    assert heavy.overdrawn == 1 and heavy.weights[0] == 0


def test_sweep_validation_honours_val_challenge(tmp_path):
    """``val_challenge: false`` validates a single run on plain pictures; the sweep's
    validation must do the same instead of drawing validator challenges per seed."""
    from bitmind.training.sweep import load_val_challenges

    pools = make_pools(tmp_path)
    cfg = TrainConfig(data=[str(pools["crops"])], challenge_data=[str(pools["chal"])], val_fraction=0.25, test_fraction=0.25)
    _, val, _ = build_datasets(cfg)
    ready = sum(isinstance(val.augment_of(k), AsIs) for k in range(len(val)))
    assert 0 < ready < len(val)
    drawn_x, drawn_y, _, _ = load_val_challenges(val, [0, 1], workers=0)
    assert len(drawn_y) == ready + 2 * (len(val) - ready)  # crops once per seed, challenges once
    plain_x, plain_y, plain_src, _ = load_val_challenges(val, [0, 1], workers=0, challenge=False)
    assert len(plain_y) == len(val)  # every picture once
    again_x, _, _, _ = load_val_challenges(val, [5], workers=0, challenge=False)
    assert torch.equal(plain_x, again_x)  # plain: no seed-dependent draw
    crops = [k for k in range(len(val)) if not isinstance(val.augment_of(k), AsIs)]
    first = DetectionDataset([val.items[crops[0]]], augment=None, uint8=True)[0][0]
    assert torch.equal(plain_x[0], first)  # the plain resize, not a challenge
    assert not torch.equal(drawn_x[0], first)


def test_folds_drop_the_round_trips_of_held_out_photos_from_training_and_selection(tmp_path):
    """A fold holding out a kind of real photo must not train on those photos through a
    decoder (labelled fake) nor be selected on them; generator folds keep every round trip.
    Round trips of ready-made challenges are validated as they are, like their photo."""
    from bitmind.training.sweep import TrainItems, load_val_challenges, variant_masks

    pools = make_pools(tmp_path)
    for f in sorted((pools["chal"] / "real").rglob("*.jpg")):  # round trips of the challenge photos too
        Image.open(f).resize((32, 32)).resize((256, 256), Image.NEAREST).save(pools["aligned"] / "fake" / "aligned-taef2" / f.name)
    cfg = TrainConfig(data=[str(pools["crops"]), str(pools["aligned"])], challenge_data=[str(pools["chal"])], balance="family",
                      pair_aligned=True, val_fraction=0.25, test_fraction=0.25)
    train, val, _ = build_datasets(cfg)
    partner = aligned_partners(train)
    names = train.source_names()
    val_x, val_y, val_sources, val_photo = load_val_challenges(val, [0, 1], workers=0)
    assert len(val_x) == len(val_y) == len(val_sources) == len(val_photo)
    trips = val_sources == "fake/aligned-taef2"
    assert set(val_photo[trips]) == {"real/faces", "real/coco"} and set(val_photo[~trips]) == {""}
    # a round trip of a challenge photo takes its photo's augmentation: as it is, drawn once (not once per seed)
    chal_trip = [k for k, p in val.partner.items() if val.items[p][0].name == "chal"]
    assert chal_trip and all(isinstance(val.augment_of(k), AsIs) for k in chal_trip)
    crop_trips = sum(1 for k, (src, i) in enumerate(val.items) if src.source_name(i) == "fake/aligned-taef2") - len(chal_trip)
    assert int(trips.sum()) == len(chal_trip) + 2 * crop_trips
    extras = {"exclude_sources": ["real/faces"], "exclude_roots": [], "train_fraction": 1.0}
    items = TrainItems.of(train)
    assert items.partner == partner
    mask, val_mask = variant_masks("m.minus-real-faces", extras, items, val_sources, val_photo, cfg.split_seed)
    kept = [names[k] for k in range(len(names)) if mask[k]]
    assert "real/faces" not in kept and "real/coco" in kept
    faces_trips = [k for k, p in enumerate(partner) if p >= 0 and names[p] == "real/faces"]
    assert faces_trips and not any(mask[k] for k in faces_trips)  # before: all of them trained, as fakes
    assert all(mask[k] for k, p in enumerate(partner) if p >= 0 and names[p] == "real/coco")
    assert not val_mask[(val_sources == "real/faces") | (val_photo == "real/faces")].any()
    assert val_mask[trips & (val_photo == "real/coco")].all()
    gen = {"exclude_sources": ["fake/sdxl"], "exclude_roots": [], "train_fraction": 1.0}
    mask, _ = variant_masks("m.minus-sdxl", gen, items, val_sources, val_photo, cfg.split_seed)
    assert all(mask[k] for k, p in enumerate(partner) if p >= 0) and not any(mask[k] for k in range(len(names)) if names[k] == "fake/sdxl")
    assert variant_masks("m", {"exclude_sources": [], "exclude_roots": [], "train_fraction": 1.0}, items,
                         val_sources, val_photo, cfg.split_seed) == (None, None)


def test_aligned_pairs_share_a_batch_and_their_augmentation(tmp_path):
    pools = make_pools(tmp_path)
    cfg = TrainConfig(data=[str(pools["crops"]), str(pools["aligned"])], challenge_data=[str(pools["chal"])], balance="family",
                      pair_aligned=True, batch_size=8, samples_per_epoch=400, aug_validator_prob=1.0,
                      aug_jpeg_quality=[60, 95], val_fraction=0.25, test_fraction=0.25)
    train, val, _ = build_datasets(cfg)
    partners = aligned_partners(train)
    names = train.source_names()
    paired = [k for k, p in enumerate(partners) if p >= 0]
    assert paired and all(names[k] == "fake/aligned-taef2" and names[partners[k]].startswith("real/") for k in paired)
    sampler = train_sampler(cfg, train)
    order = list(sampler)
    assert len(order) == 400
    for pos, k in enumerate(order):
        if partners[k] >= 0 and pos + 1 < len(order):  # the round trip is followed by its photo, in the same batch
            assert pos % 2 == 0 and order[pos + 1] == partners[k]
    k = paired[0]  # same augmentation draws: the pair differs only by the decoder
    assert train.rng_for(k).random() == train.rng_for(partners[k]).random()
    # augmentation per source: challenges get flips only in training and are validated as they are
    chal_k = next(i for i, (src, _) in enumerate(train.items) if str(src.root) == str(pools["chal"]))
    assert isinstance(train.augment_of(chal_k), FlipOnly)
    chal_v = next(i for i, (src, _) in enumerate(val.items) if str(src.root) == str(pools["chal"]))
    assert isinstance(val.augment_of(chal_v), AsIs)
    src, i = val.items[chal_v]
    assert np.array_equal(np.asarray(val.transform(src.load(i), chal_v)), np.asarray(src.load(i)))
    with pytest.raises(ValueError, match="even batch_size"):
        train_sampler(TrainConfig(balance="family", pair_aligned=True, batch_size=7), train)
    # pair_patches: in a batch as the sampler orders it, exactly the photos right after their round trip follow it
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 1, 1), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    learner = Learner(model, dataclasses.replace(cfg, pair_patches=True, patch_size=32), None)
    learner.align_pairs(train.partner)
    batch = torch.tensor(order[:64])
    follow = learner.follows_partner(batch)
    assert follow is not None and follow.tolist() == [pos > 0 and partners[order[pos - 1]] == order[pos] for pos in range(64)]
    plain = Learner(model, dataclasses.replace(cfg, patch_size=32), None)
    plain.align_pairs(train.partner)
    assert plain.follows_partner(batch) is None  # off unless asked: base.pth was trained with a patch of its own per image


def test_random_patches_crop_each_image_at_its_own_offset():
    x = torch.arange(2 * 1 * 10 * 10, dtype=torch.float32).reshape(2, 1, 10, 10)
    g = torch.Generator().manual_seed(0)
    p = random_patches(x, 4, g)
    assert p.shape == (2, 1, 4, 4)
    for b in range(2):  # every patch is a contiguous window of its own image
        top, left = divmod(int(p[b, 0, 0, 0].item()) - b * 100, 10)
        assert torch.equal(p[b, 0], x[b, 0, top:top + 4, left:left + 4])


def test_shuffle_tiles_moves_whole_tiles_within_each_image():
    x = torch.arange(2 * 3 * 8 * 12, dtype=torch.float32).reshape(2, 3, 8, 12)
    out = shuffle_tiles(x, 4, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and not torch.equal(out, x)

    def tiles(t):
        return [t[:, r:r + 4, c:c + 4] for r in range(0, 8, 4) for c in range(0, 12, 4)]
    for b in range(2):  # the same six tiles (all channels together), each once, none from the other image
        before, after = tiles(x[b]), tiles(out[b])
        assert sorted(int(t[0, 0, 0]) for t in after) == sorted(int(t[0, 0, 0]) for t in before)
        assert all(any(torch.equal(a, t) for t in before) for a in after)
    again = shuffle_tiles(x, 4, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)  # the order comes from the generator only


def test_paired_rows_get_the_patch_and_tile_order_of_the_row_before():
    x = torch.arange(4 * 1 * 16 * 16, dtype=torch.float32).reshape(4, 1, 16, 16) % 256
    x[1] = x[0]  # a round trip and its photo, as far as where they are cropped is concerned
    follow = torch.tensor([False, True, False, False])
    same = random_patches(x, 8, torch.Generator().manual_seed(1), follow)
    apart = random_patches(x, 8, torch.Generator().manual_seed(1))
    assert torch.equal(same[1], same[0]) and torch.equal(same[0], apart[0]) and torch.equal(same[2:], apart[2:])
    tiles = shuffle_tiles(x, 4, torch.Generator().manual_seed(2), follow)
    assert torch.equal(tiles[1], tiles[0]) and torch.equal(tiles[2:], shuffle_tiles(x, 4, torch.Generator().manual_seed(2))[2:])
    lr = Learner(torch.nn.Linear(1, 1), TrainConfig(balance="family", pair_aligned=True, pair_patches=True, patch_size=16,
                                                   tile_shuffle=8), None)
    lr.align_pairs({11: 12})  # item 11 is a round trip of item 12
    x = torch.rand(4, 3, 32, 32)
    x[1] = x[0]
    out = lr.crop(x, torch.tensor([11, 12, 12, 11]))  # rows 0-1 a pair; row 3 is a round trip after its photo: not
    assert torch.equal(out[1], out[0]) and lr.follows_partner(torch.tensor([11, 12, 12, 11])).tolist() == [False, True, False, False]


def test_tile_shuffle_options_are_checked_and_used_by_the_learner():
    assert check_tile_shuffle(0, 96) == 0 and check_tile_shuffle(32, 96) == 32
    for bad, side in ((7, 96), (6, 96), (32, 80), (96, 96), (4, 96)):
        with pytest.raises(ValueError, match="tile_shuffle"):
            check_tile_shuffle(bad, side)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 1, 1), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    lr = Learner(model, TrainConfig(patch_size=32, tile_shuffle=16, seed=3), None)
    x = torch.rand(4, 3, 64, 64)
    p = lr.crop(x)
    assert p.shape == (4, 3, 32, 32)
    plain = Learner(model, TrainConfig(patch_size=32, seed=3), None).crop(x)
    assert not torch.equal(p, plain)  # the same patches (their own stream), tiles moved
    assert sorted(p.flatten().tolist()) == pytest.approx(sorted(plain.flatten().tolist()))
    with pytest.raises(ValueError, match="tile_shuffle"):
        Learner(model, TrainConfig(patch_size=96, tile_shuffle=64), None)


def test_logo_spec_holds_out_whole_families():
    sources = ["real/coco", "fake/sdxl", "fake/flux1-dev", "fake/flux1-schnell", "fake/aligned-taef2", "fake/aligned-zoo-convt8-c4"]
    spec = logo_sweep_spec({"base": {}, "recipes": {"p": {"input": "npr_hp", "patch_size": 64}},
                            "controls": {"taef2only": {"exclude": ["aligned"], "keep": ["aligned-taef2"]}}}, sources)
    v = spec["variants"]
    assert spec["logo"]["folds"] == ["sdxl", "flux1", "aligned"]
    assert v["p"]["exclude_sources"] == [] and v["p"]["patch_size"] == 64
    assert v["p.minus-flux1"]["exclude_sources"] == ["fake/flux1-dev", "fake/flux1-schnell"]
    assert v["p.taef2only"]["exclude_sources"] == ["fake/aligned-zoo-convt8-c4"]
    assert set(v["p.taef2only.minus-sdxl"]["exclude_sources"]) == {"fake/aligned-zoo-convt8-c4", "fake/sdxl"}
    with pytest.raises(ValueError, match="recipe"):
        logo_sweep_spec({"recipes": {}}, sources)
    nochal = logo_sweep_spec({"recipes": {"p": {}}, "folds": ["sdxl"],
                              "controls": {"nochal": {"exclude_roots": ["sn34-validator"]}}}, sources)["variants"]
    assert nochal["p.nochal"]["exclude_roots"] == nochal["p.nochal.minus-sdxl"]["exclude_roots"] == ["sn34-validator"]
    assert "exclude_roots" not in nochal["p"] and nochal["p.nochal.minus-sdxl"]["exclude_sources"] == ["fake/sdxl"]


def test_logo_spec_empty_fold_recipes_trains_only_on_everything():
    spec = logo_sweep_spec({"recipes": {"a": {}, "b": {"patch_size": 96}}, "fold_recipes": []}, ["real/coco", "fake/sdxl"])
    assert sorted(spec["variants"]) == ["a", "b"]


def test_logo_spec_folds_per_recipe():
    sources = ["real/coco", "real/faces", "fake/sdxl", "fake/flux1-dev"]
    spec = logo_sweep_spec({"recipes": {"a": {}, "b": {"tile_shuffle": 32}, "c": {}}, "folds": ["sdxl", "flux1"],
                            "fold_recipes": {"a": ["sdxl", "flux1", "real-faces"], "b": None}}, sources)
    assert sorted(spec["variants"]) == ["a", "a.minus-flux1", "a.minus-real-faces", "a.minus-sdxl",
                                        "b", "b.minus-flux1", "b.minus-sdxl", "c"]
    assert spec["variants"]["a.minus-real-faces"]["exclude_sources"] == ["real/faces"]
    assert spec["logo"]["folds"] == ["sdxl", "flux1", "real-faces"]
    assert sorted(logo_sweep_spec({"recipes": {"a": {}}, "fold_recipes": {"a": []}}, sources)["variants"]) == ["a"]
    with pytest.raises(ValueError, match="fold_recipes"):
        logo_sweep_spec({"recipes": {"a": {}}, "fold_recipes": {"z": None}}, sources)


def test_ensembles_average_member_logits_fold_by_fold():
    variants = {"a": {"exclude_sources": []}, "a.minus-sdxl": {"exclude_sources": ["fake/sdxl"]},
                "b": {"exclude_sources": []}, "b.minus-sdxl": {"exclude_sources": ["fake/sdxl"]},
                "a.minus-gans": {"exclude_sources": ["fake/vqgan"]}}  # b has no gans fold: no ensemble fold
    data = {"validator/a": np.array([1.0, -2.0]), "validator/b": np.array([3.0, 0.0]),
            "validator/a.minus-sdxl": np.array([0.0, 4.0]), "validator/b.minus-sdxl": np.array([2.0, 0.0]),
            "validator/a.minus-gans": np.array([9.0, 9.0])}
    data2, v2 = add_ensembles(data, variants, {"ab": ["a", "b"]})
    assert set(v2) - set(variants) == {"ab", "ab.minus-sdxl"}
    np.testing.assert_allclose(data2["validator/ab"], [2.0, -1.0])
    np.testing.assert_allclose(data2["validator/ab.minus-sdxl"], [1.0, 2.0])
    assert v2["ab.minus-sdxl"]["exclude_sources"] == ["fake/sdxl"] and "validator/ab" not in data
    with pytest.raises(ValueError, match="members"):
        add_ensembles(data, variants, {"solo": ["a"]})


def test_score_fold_counts_heldout_and_reals():
    sources = np.array(["fake/sdxl"] * 4 + ["real/a"] * 4 + ["fake/flux1-dev"] * 2)
    splits = np.array(["train", "val", "test", "test", "val", "val", "test", "test", "test", "test"])
    labels = np.array([1] * 4 + [0] * 4 + [1] * 2)
    probs = np.array([0.9, 0.2, 0.7, 0.6, 0.1, 0.3, 0.4, 0.8, 0.9, 0.1])
    r = score_fold(probs, sources, splits, labels, ["fake/sdxl"], ["fake/sdxl"])
    assert r["heldout_detection"] == 0.75 and r["heldout_n"] == 4  # all splits of the held-out family
    assert r["real_accuracy"] == 0.5 and r["per_real_kind"] == {"real/a": 0.5}  # test split only
    assert r["per_seen_fake_source"] == {"fake/flux1-dev": 0.5}
    assert r["heldout_auc"] == pytest.approx(0.5)  # 4 of the 8 (held-out, real) pairs ordered right


def test_generalisation_benchmark_end_to_end(tmp_path):
    pools = make_pools(tmp_path)
    spec = {"base": TINY_LOGO_BASE,
            "val_seeds": [0], "folds": ["flux1", "aligned"],
            "recipes": {"patch": {**TINY, "input": "npr", "patch_size": 32}},
            "controls": {"noaligned": {"exclude": ["aligned"]}, "nochal": {"exclude_roots": ["chal"]}}, "control_folds": False}
    (tmp_path / "logo.json").write_text(json.dumps(spec))
    out, fig = tmp_path / "gen.json", tmp_path / "gen.png"
    cmd = [sys.executable, str(REPO / "benchmarks" / "generalisation.py"), "all", "--spec", str(tmp_path / "logo.json"),
           "--data", str(pools["crops"]), str(pools["aligned"]), "--challenge_data", str(pools["chal"]),
           "--checkpoints_dir", str(tmp_path / "ck"), "--name", "logo", "--epochs", "2", "--workers", "0",
           "--baseline", f"tiny={REPO / 'mining_models' / 'npr_f2.pth'}:fake/sd1x", "--out", str(out), "--figure", str(fig),
           "--ensemble", "both=patch+patch.noaligned", "--train_seed", "3", "--pools", "top25", "crop96", "flip"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    result = json.loads(out.read_text())
    assert fig.stat().st_size > 1000
    folds = result["regimes"]["validator"]["folds"]["patch"]
    assert set(folds) == {"flux1", "aligned"}
    assert folds["flux1"]["heldout_n"] == 16 and set(folds["flux1"]["per_heldout_source"]) == {"fake/flux1-dev", "fake/flux1-schnell"}
    # the fold never trained on flux1, and flux1 never decided its epoch: its spec says so
    excl = result["spec"]["variants"]["patch.minus-flux1"]["exclude_sources"]
    assert excl == ["fake/flux1-dev", "fake/flux1-schnell"]
    assert "fake/aligned-taef2" in result["spec"]["variants"]["patch.noaligned"]["exclude_sources"]
    logo_spec = json.loads((tmp_path / "ck" / "logo" / "logo_spec.json").read_text())
    assert logo_spec["base"]["seed"] == 3  # --train_seed
    assert logo_spec["ran"]["epochs"] == 2 and logo_spec["ran"]["seconds"] > 0 and logo_spec["ran"]["val_from"] == 0  # what ran, beside what was asked
    # --pools: every NPR also scored as the mean of its top 25 % location logits, an arm with the same folds
    assert set(result["regimes"]["validator"]["folds"]["patch_top25"]) == {"flux1", "aligned"}
    assert result["spec"]["variants"]["patch_top25.minus-flux1"]["exclude_sources"] == excl
    scores = np.load(tmp_path / "ck" / "logo" / "logo_scores.npz")
    top, mean = scores["validator/patch_top25.minus-flux1"], scores["validator/patch.minus-flux1"]
    assert top.shape == mean.shape and np.all(top >= mean - 1e-2) and np.any(top > mean + 1e-3)
    # --pools crop96: the same folds scored on the central 96 px only (how center_crop serves)
    assert set(result["regimes"]["validator"]["folds"]["patch_crop96"]) == {"flux1", "aligned"}
    crop = scores["validator/patch_crop96.minus-flux1"]
    assert crop.shape == mean.shape and not np.allclose(crop, mean, atol=1e-3)
    # --pools flip: the mean logit of each picture and its mirror (how flip_mean serves)
    assert set(result["regimes"]["validator"]["folds"]["patch_flip"]) == {"flux1", "aligned"}
    flip = scores["validator/patch_flip.minus-flux1"]
    assert flip.shape == mean.shape and not np.allclose(flip, mean, atol=1e-4)
    # a control without the ready-made challenges trains on everything but that root
    sweep = json.loads((tmp_path / "ck" / "logo" / "sweep.json").read_text())
    n_chal = sweep["splits"][str(pools["chal"])]["train"]
    assert n_chal > 0 and result["spec"]["variants"]["patch.nochal"]["exclude_roots"] == ["chal"]
    assert sweep["variants"]["patch.nochal"]["training_images"] == sweep["variants"]["patch"]["training_images"] - n_chal
    assert result["summary"]["recipe"] in ("patch", "patch.noaligned") and "mean_heldout_detection" in result["summary"]
    s = result["summary"]["arms"]["patch"]["validator"]
    assert s["folds"] == 2 and 0.0 <= s["mean_heldout_detection"] <= 1.0 and s["worst_heldout_detection"] <= s["mean_heldout_detection"]
    assert "both" in result["regimes"]["validator"]["in_pool"]  # the ensemble of the two arms, scored without training
    assert set(result["summary"]["arms"]["baseline:tiny"]["crops"]) >= {"mean_heldout_detection", "real_accuracy"}
    # the in-pool figures of the model trained on everything
    assert "patch" in result["regimes"]["crops"]["in_pool"] and "patch.noaligned" in result["regimes"]["crops"]["in_pool"]
    # ship: the variant trained on everything, with the class-balanced calibration the analysis uses,
    # its boundary where 0.85 of the validation real photos pass (the default rule)
    shipped = tmp_path / "base.pth"
    res = subprocess.run([sys.executable, str(REPO / "benchmarks" / "generalisation.py"), "ship", "--sweep", str(tmp_path / "ck" / "logo"),
                          "--variant", "patch", "--ship_out", str(shipped)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    from bitmind.checkpoint import load_model
    lm = load_model(shipped)
    cal = lm.meta["metrics"]["calibration"]
    assert cal["method"].startswith("class-balanced Platt scaling") and set(cal["regimes"]) == {"validator", "crops"}
    assert cal["real_target"] == 0.85 and "platt_bias" in cal
    from bitmind.training.logo import validation_logits

    _, y_val, _ = validation_logits(np.load(tmp_path / "ck" / "logo" / "logo_scores.npz"), "patch")
    assert abs(cal["val_real_accuracy_after"] - 0.85) <= 1 / max((y_val == 0).sum(), 1) + 1e-9
    assert (lm.temperature, lm.logit_bias) == (cal["temperature"], cal["logit_bias"]) and cal["n"] > 0
    assert lm.meta["train_options"]["patch_size"] == 32
    # a pooled arm ships its trained model with the pool in its config, calibrated on its own scores
    res = subprocess.run([sys.executable, str(REPO / "benchmarks" / "generalisation.py"), "ship", "--sweep", str(tmp_path / "ck" / "logo"),
                          "--variant", "patch_top25", "--ship_out", str(tmp_path / "top.pth")], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    top = load_model(tmp_path / "top.pth")
    assert top.model.pool == "top25" and top.meta["config"]["pool"] == "top25" and top.logit_bias != lm.logit_bias
    assert torch.equal(top.model.fc1.weight, lm.model.fc1.weight)  # the same trained weights
    res = subprocess.run([sys.executable, str(REPO / "benchmarks" / "generalisation.py"), "ship", "--sweep", str(tmp_path / "ck" / "logo"),
                          "--variant", "patch_crop96", "--ship_out", str(tmp_path / "crop.pth")], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    crop_model = load_model(tmp_path / "crop.pth")
    assert crop_model.model.center_crop == 96 and crop_model.meta["config"]["center_crop"] == 96 and crop_model.model.pool == "mean"
    res = subprocess.run([sys.executable, str(REPO / "benchmarks" / "generalisation.py"), "ship", "--sweep", str(tmp_path / "ck" / "logo"),
                          "--variant", "patch_flip", "--ship_out", str(tmp_path / "flip.pth")], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    flip_model = load_model(tmp_path / "flip.pth")
    assert flip_model.model.flip_mean and flip_model.meta["config"]["flip_mean"] is True
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():  # served as scored: the mean of the picture's and its mirror's logits
        want = (lm.model(x) + lm.model(x.flip(-1))) / 2
        assert torch.allclose(flip_model.model(x), want, atol=1e-5)


def real_fold_scores(n: int, unseen_b: float | None = None) -> dict[str, np.ndarray]:
    """LOGO scores of recipe ``m`` in both regimes with folds sdxl and real-b (``n`` pictures
    each of real/a, real/b and fake/sdxl, val and test alternating): every model separates the
    classes; with ``unseen_b``, the fold that never saw real/b gives its photos that logit."""
    rng = np.random.default_rng(0)
    source = np.array(["real/a"] * n + ["real/b"] * n + ["fake/sdxl"] * n)
    label = (source == "fake/sdxl").astype(np.int64)
    split = np.array(["val", "test"] * (3 * n // 2))
    z = np.where(label == 1, 2.0, -2.0) + rng.normal(0, 0.5, 3 * n)
    unseen = z.copy()
    if unseen_b is not None:
        unseen[source == "real/b"] = unseen_b
    data = {}
    for regime in ("validator", "crops"):
        data.update({f"{regime}/source": source, f"{regime}/split": split, f"{regime}/label": label,
                     f"{regime}/m": z, f"{regime}/m.minus-sdxl": z, f"{regime}/m.minus-real-b": unseen})
    return data


def test_real_kind_folds_hold_out_a_camera_and_report_how_much_of_it_is_kept_real(tmp_path):
    """A ``real-<kind>`` fold trains without that kind of photo and reports the share of it
    called real (and the AUC of known fakes against it), apart from the generator folds."""
    from bitmind.training.logo import analyse, held_out_sources

    sources_all = ["fake/sdxl", "real/a", "real/b"]
    assert held_out_sources("real-b", sources_all) == ["real/b"] and held_out_sources("sdxl", sources_all) == ["fake/sdxl"]
    spec = logo_sweep_spec({"recipes": {"m": {}}, "folds": ["sdxl", "real-b"]}, sources_all)
    assert spec["variants"]["m.minus-real-b"]["exclude_sources"] == ["real/b"]

    data = real_fold_scores(200, unseen_b=1.0)  # the model that never saw kind b takes it for fake
    np.savez(tmp_path / "s.npz", **data)
    out = analyse(tmp_path / "s.npz", spec)
    fold = out["regimes"]["validator"]["folds"]["m"]["real-b"]
    assert fold["heldout_detection"] is None and fold["heldout_real_accuracy"] < 0.1
    assert fold["per_heldout_source"] == {"real/b": fold["heldout_real_accuracy"]}
    assert fold["heldout_auc"] is not None and fold["heldout_auc"] > 0.5  # known fakes still above kind b
    gen = out["regimes"]["validator"]["folds"]["m"]["sdxl"]
    assert gen["heldout_real_accuracy"] is None and gen["heldout_detection"] > 0.9
    s = out["summary"]["m"]["validator"]
    assert s["folds"] == 1 and s["real_folds"] == 1
    assert s["mean_heldout_detection"] == gen["heldout_detection"]  # the real fold does not dilute detection
    assert s["mean_unseen_real_accuracy"] == s["worst_unseen_real_accuracy"] == fold["heldout_real_accuracy"]
    from conftest import load_script

    bench = load_script("benchmarks/generalisation.py")
    md = bench.markdown_tables({"regimes": out["regimes"], "summary": {"arms": out["summary"]}})
    assert f"| real-b (share kept real) | {fold['heldout_real_accuracy']:.3f} (AUC" in md
    assert "| **unseen real kinds: mean / worst kept real** |" in md
    bench.plot({"regimes": out["regimes"], "summary": {"arms": out["summary"]}}, tmp_path / "h.png")
    assert (tmp_path / "h.png").stat().st_size > 0


def test_a_pooled_baseline_without_stored_calibration_is_fitted_on_what_it_knows():
    """A baseline keeps the calibration stored in its file; its pooled arm (score --pools)
    has none and its logits sit on another scale, so analyse fits one on the validation
    pictures of the reals and the fakes the baseline was trained on, as for a fold."""
    from bitmind.training.logo import analyse

    rng = np.random.default_rng(0)
    n = 300
    source = np.array(["real/a"] * n + ["fake/sd1x"] * n + ["fake/sdxl"] * n)
    label = np.char.startswith(source, "fake/").astype(np.int8)
    split = np.array(["val", "test"] * (3 * n // 2))
    z = np.where(label == 1, 2.0, -2.0) + rng.normal(0, 1, 3 * n)
    data = {"validator/source": source, "validator/split": split, "validator/label": label,
            "validator/b": z.astype(np.float32), "calibration/b": np.array([1.0, 0.0]),
            "validator/b_top5": (z + 6.0).astype(np.float32)}  # the same ranking, every logit 6 higher
    import io
    buf = io.BytesIO()
    np.savez(buf, **data)
    buf.seek(0)
    spec = {"variants": {}, "logo": {"folds": ["sdxl"], "recipes": [], "controls": []}}
    out = analyse(buf, spec, baselines={"b": ["fake/sd1x"], "b_top5": ["fake/sd1x"]})
    plain, pooled = (out["summary"][f"baseline:{k}"]["validator"] for k in ("b", "b_top5"))
    assert plain["real_accuracy"] > 0.9 and abs(pooled["real_accuracy"] - plain["real_accuracy"]) < 0.05
    assert pooled["mean_heldout_auc"] == pytest.approx(plain["mean_heldout_auc"])


def test_views_name_their_arms_and_are_undone():
    from bitmind.training.logo import pooled_name, unpooled, view_of

    assert view_of("top25") == ("pool", "top25") and view_of("crop192") == ("center_crop", 192)
    assert view_of("flip") == ("flip_mean", True) and unpooled("patch96nopool_flip.minus-gans") == ("patch96nopool.minus-gans", "flip")
    assert view_of("mean") is None and view_of("cropped") is None and view_of("flips") is None
    assert pooled_name("patch96nopool.minus-gans", "crop192") == "patch96nopool_crop192.minus-gans"
    assert unpooled("patch96nopool_crop192.minus-gans") == ("patch96nopool.minus-gans", "crop192")
    assert unpooled("patch96nopool_top5") == ("patch96nopool", "top5")
    assert unpooled("patch96_nopool") == ("patch96_nopool", None)
    from conftest import load_script

    gen = load_script("benchmarks/generalisation.py")
    for bad in ("mean", "crop8", "top0"):
        with pytest.raises(SystemExit):
            gen.main(["score", "--pools", bad])


def test_pooled_views_of_a_flip_model_score_as_it_would_serve(tmp_path):
    """A model that already serves ``flip_mean`` (a shipped flip file as a ``--baseline``):
    its ``topNN`` view pools each mirror's location logits, as the file shipped with that pool
    would serve (not the unflipped map alone), and its ``flip`` view is itself."""
    from bitmind.checkpoint import load_model, model_meta, save_checkpoint
    from bitmind.inference import forward_logits
    from bitmind.models import build_model
    from bitmind.training.logo import regime_loader, score_models, scored_items

    data = tmp_path / "data"  # noise: a residual that a mirror changes (flat pictures have none)
    for c, cls in enumerate(("real", "fake")):
        (data / cls / "noise").mkdir(parents=True)
        for i in range(3):
            _img(10 * c + i).save(data / cls / "noise" / f"{cls}{i}_0.png")
    torch.manual_seed(0)
    net = build_model("npr", layers=[1, 1], width=8, flip_mean=True).eval()
    save_checkpoint(net, tmp_path / "flip.pth", model_meta(net, "npr"))
    out = score_models({"m": str(tmp_path / "flip.pth")}, {"validator": [str(data)]}, tmp_path / "s.npz", device="cpu",
                       workers=0, pools=["top25", "flip"])
    z = np.load(out)
    pooled = build_model("npr", layers=[1, 1], width=8, flip_mean=True, pool="top25").eval()
    pooled.load_state_dict(load_model(tmp_path / "flip.pth").model.state_dict())
    x, _, k, _ = next(iter(regime_loader(scored_items([str(data)]), "validator", batch_size=64, workers=0)))
    with torch.no_grad():
        want = forward_logits(pooled, x).numpy()
    assert np.allclose(z["validator/m_top25"][k.numpy()], want, atol=1e-5)
    assert np.allclose(z["validator/m_flip"], z["validator/m"], atol=1e-5)


def test_spec_with_overrides_builds_the_sweep_a_run_would(tmp_path):
    """A LOGO spec becomes its sweep (folds from the roots' sources, overrides and seed in
    the base); a sweep spec keeps its variants and gets the same overrides; None overrides
    leave the spec's values."""
    from bitmind.training.logo import spec_with_overrides

    pools = make_pools(tmp_path)
    logo = json.loads((Path(__file__).resolve().parents[1] / "base_miner" / "NPR" / "sweeps" / "logo_fixed_s0_78.json").read_text())
    roots = [str(pools["crops"]), str(pools["aligned"])]
    sweep = spec_with_overrides(logo, "run", seed=5, data=roots, challenge_data=[str(pools["chal"])], batch_size=None)
    assert sweep["base"]["seed"] == 5 and sweep["base"]["data"] == roots and sweep["base"]["name"] == "run"
    assert sweep["base"]["batch_size"] == logo["base"]["batch_size"]  # None leaves it
    assert "patch96nopool" in sweep["variants"] and "patch96nopool.minus-sdxl" in sweep["variants"]
    assert "patch96nopool.minus-midjourney" not in sweep["variants"]  # no Midjourney in the roots: no fold
    plain = {"base": {"epochs": 3, "seed": 1}, "variants": {"a": {}, "b": {"width": 32}}}
    again = spec_with_overrides(plain, "bench", data=roots, epochs=None)
    assert again["variants"] == plain["variants"] and again["base"] == {"epochs": 3, "seed": 1, "data": roots, "name": "bench"}
    assert spec_with_overrides(plain, "bench", seed=7)["base"]["seed"] == 7 and plain["base"]["seed"] == 1


def test_spec_with_overrides_keeps_an_empty_sweep_a_sweep(tmp_path):
    """A sweep spec whose ``variants`` is empty is still a sweep spec: the sweep refuses it as
    having no variant, not as a LOGO spec without recipes (read from the roots' sources)."""
    from bitmind.training.logo import spec_with_overrides
    from bitmind.training.sweep import SpecError, SweepSpec

    empty = {"base": {"epochs": 3, "seed": 1}, "variants": {}}
    built = spec_with_overrides(empty, "bench", data=[str(tmp_path / "no-such-root")])
    assert built["variants"] == {} and built["base"]["data"] == [str(tmp_path / "no-such-root")]
    with pytest.raises(SpecError, match="at least one variant"):
        SweepSpec.from_dict(built)


def test_logo_swa_spec_is_the_run_it_is_paired_with_plus_weight_averaging():
    """logo_swa_s1.json trains the shipped recipe and the same with weight averaging on one
    stream; its plain arm repeats the committed 78-epoch seed-1 run (generalisation_fixed_s1*:
    the same training options, seed and folds), and the averaged arm differs from it only by
    the averaging, carried into every fold model."""
    from bitmind.training.logo import logo_sweep_spec

    repo = Path(__file__).resolve().parents[1]
    swa = json.loads((repo / "base_miner" / "NPR" / "sweeps" / "logo_swa_s1.json").read_text())
    ran = json.loads((repo / "benchmarks" / "results" / "generalisation_fixed_s1_spec.json").read_text())
    step_options = ("cudnn_benchmark", "fused_adam", "share_multiple")  # how fast, not what is learned
    where = ("data", "challenge_data", "checkpoints_dir", "name")  # the run's paths, given on the command line
    assert {k: v for k, v in swa["base"].items() if k not in step_options} == \
        {k: v for k, v in ran["base"].items() if k not in step_options + where}
    sources = sorted({s for v in ran["variants"].values() for s in v["exclude_sources"]})
    expanded = logo_sweep_spec(swa, sources)
    # per recipe the everything model and the six generator folds (the committed run also had camera folds)
    assert len(expanded["variants"]) == 14
    for name, opts in expanded["variants"].items():
        paired = name.replace("patch96swa", "patch96nopool")
        if name != paired:  # the averaged arm: the plain arm's options plus the averaging
            assert opts["swa_start"] == 39 == expanded["val_from"] < swa["base"]["epochs"]
            assert {k: v for k, v in opts.items() if k != "swa_start"} == expanded["variants"][paired], name
        else:
            assert opts == ran["variants"][name], name


#: The recipe of the tiny LOGO runs below: the shipped one's options at a tiny size.
TINY_LOGO_RECIPE = {**TINY, "input": "npr_hp", "patch_size": 32, "stem_pool": False}


def train_tiny_logo(tmp_path: Path, arms: dict[str, dict], epochs: int, **spec_extra) -> Path:
    """Train a tiny LOGO run on ``make_pools``: the recipe ``plain`` and one arm per ``arms``
    entry (its options on top of the same recipe), each with the FLUX.1 fold, through
    ``generalisation.py train`` as a GPU session runs it; returns the sweep folder."""
    pools = make_pools(tmp_path)
    spec = {"base": {**TINY_LOGO_BASE, "samples_per_epoch": 32}, "val_seeds": [0], "folds": ["flux1"], **spec_extra,
            "recipes": {"plain": TINY_LOGO_RECIPE, **{name: {**TINY_LOGO_RECIPE, **opts} for name, opts in arms.items()}}}
    (tmp_path / "logo.json").write_text(json.dumps(spec))
    res = subprocess.run([sys.executable, str(REPO / "benchmarks" / "generalisation.py"), "train",
                          "--spec", str(tmp_path / "logo.json"), "--data", str(pools["crops"]), str(pools["aligned"]),
                          "--challenge_data", str(pools["chal"]), "--checkpoints_dir", str(tmp_path / "ck"), "--name", "w",
                          "--epochs", str(epochs), "--workers", "0"], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    return tmp_path / "ck" / "w"


def test_a_logo_run_with_a_weight_averaged_arm_trains_scores_and_pairs(tmp_path):
    """The path of logo_swa_s1.json, on tiny pools: a plain and a weight-averaged recipe on one
    stream, each with its folds; the averaged fold models validate and save averages only;
    the scores hold both arms on the same pictures, and logo_paired.py pairs them (--arm_b)."""
    sweep = train_tiny_logo(tmp_path, {"avg": {"swa_start": 1}}, epochs=3, val_from=1)
    gen = [sys.executable, str(REPO / "benchmarks" / "generalisation.py")]
    for arm in ("plain", "avg"):
        for variant in (arm, f"{arm}.minus-flux1"):
            hist = json.loads((sweep / variant / "history.json").read_text())
            assert [r["epoch"] for r in hist] == [1, 2] and all(r["averaged"] == (arm == "avg") for r in hist), variant
    res = subprocess.run(gen + ["score", "--sweep", str(sweep), "--workers", "0"], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    scores = np.load(sweep / "logo_scores.npz")
    assert not np.allclose(scores["validator/plain.minus-flux1"], scores["validator/avg.minus-flux1"])
    out = tmp_path / "paired.json"
    res = subprocess.run([sys.executable, str(REPO / "benchmarks" / "logo_paired.py"), "--a", str(sweep / "logo_scores.npz"),
                          "--b", str(sweep / "logo_scores.npz"), "--spec", str(sweep / "logo_spec.json"), "--arm", "plain",
                          "--arm_b", "avg", "--n_boot", "50", "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    paired = json.loads(out.read_text())
    assert (paired["arm"], paired["arm_b"]) == ("plain", "avg") and out.with_suffix(".md").is_file()
    auc = paired["regimes"]["validator"]["folds"]["flux1"]["auc"]
    assert 0.0 <= auc["a"] <= 1.0 and 0.0 <= auc["b"] <= 1.0 and auc["diff"] == pytest.approx(auc["b"] - auc["a"])


def _tiny_logo_scores(tmp_path: Path) -> tuple[Path, Path]:
    """A LOGO scores file and spec with one recipe ``m`` and one generator fold (sdxl):
    enough for ``generalisation.py analyse``, no training."""
    rng = np.random.default_rng(0)
    n = 60
    source = np.array(["real/a"] * n + ["fake/sdxl"] * n + ["fake/flux1-dev"] * n)
    label = np.char.startswith(source, "fake/").astype(np.int8)
    split = np.array(["val", "test"] * (3 * n // 2))
    base = np.where(label == 1, 2.0, -2.0) + rng.normal(0, 1, 3 * n)
    data = {}
    for regime in ("validator", "crops"):
        data.update({f"{regime}/source": source, f"{regime}/split": split, f"{regime}/label": label,
                     f"{regime}/m": base.astype(np.float32),
                     f"{regime}/m.minus-sdxl": np.where(source == "fake/sdxl", base - 3.0, base).astype(np.float32)})
    np.savez(tmp_path / "s_scores.npz", **data)
    spec = {"base": {"epochs": 1}, "variants": {"m": {"exclude_sources": []}, "m.minus-sdxl": {"exclude_sources": ["fake/sdxl"]}},
            "logo": {"folds": ["sdxl"], "recipes": ["m"], "controls": []}}
    (tmp_path / "s_spec.json").write_text(json.dumps(spec))
    return tmp_path / "s_scores.npz", tmp_path / "s_spec.json"


def test_analyse_with_out_puts_its_figure_beside_it_not_over_the_committed_one(tmp_path, monkeypatch):
    """``analyse --out X.json`` without ``--figure`` draws X.png beside the JSON and leaves the
    committed docs/figures/generalisation.png alone; only with neither named does it write
    the committed pair; ``--figure ""`` draws nothing."""
    from conftest import load_script

    gen = load_script("benchmarks/generalisation.py")
    repo = tmp_path / "repo"  # stands in for the repository: where the committed defaults live
    monkeypatch.setattr(gen, "REPO", repo)
    committed_json, committed_fig = repo / "benchmarks" / "results" / "generalisation.json", repo / "docs" / "figures" / "generalisation.png"
    npz, spec = _tiny_logo_scores(tmp_path)
    args = ["analyse", "--sweep", str(tmp_path), "--scores", str(npz), "--logo_spec", str(spec), "--recipe", "m"]

    out = tmp_path / "mine" / "x.json"
    gen.main(args + ["--out", str(out)])
    assert json.loads(out.read_text())["summary"]["recipe"] == "m"
    assert (tmp_path / "mine" / "x.png").stat().st_size > 1000
    assert not committed_fig.exists() and not committed_json.exists()

    gen.main(args + ["--out", str(tmp_path / "none.json"), "--figure", ""])
    assert (tmp_path / "none.json").is_file() and not (tmp_path / "none.png").exists() and not committed_fig.exists()

    gen.main(args + ["--out", str(tmp_path / "y.json"), "--figure", str(tmp_path / "named.png")])
    assert (tmp_path / "named.png").is_file() and not (tmp_path / "y.png").exists() and not committed_fig.exists()

    assert gen.analyse_paths(None, None) == (committed_json, committed_fig)  # under tmp_path: the real ones stay untouched
    gen.main(args)  # the documented regeneration of the committed pair
    assert committed_json.is_file() and committed_fig.stat().st_size > 1000

    with pytest.raises(SystemExit):  # the figure would overwrite the JSON
        gen.main(args + ["--out", str(tmp_path / "z.png")])
