"""bitmind.training.mini_gan: small GANs trained on the pools' photos, written as a pool of GAN fakes."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from bitmind.data import family_of
from bitmind.data.families import sampling_family
from bitmind.data.sources import stem_of
from bitmind.data.splits import split_of
from bitmind.training import mini_gan


@pytest.mark.parametrize("design", mini_gan.DESIGNS)
def test_generators_make_pictures_of_the_asked_size_in_range(design):
    g = mini_gan.Generator(size=32, z_dim=16, width=8, design=design)
    with torch.no_grad():
        x = g(torch.randn(3, 16))
    assert x.shape == (3, 3, 32, 32) and float(x.abs().max()) <= 1.0
    assert mini_gan.Discriminator(size=32, width=8)(x).shape == (3,)


def test_bad_sizes_and_designs_are_refused():
    with pytest.raises(ValueError, match="power of two"):
        mini_gan.Generator(size=48)
    with pytest.raises(ValueError, match="power of two"):
        mini_gan.Generator(size=8)
    with pytest.raises(ValueError, match="design"):
        mini_gan.Generator(size=32, design="bicubic")


def test_training_moves_the_generator_towards_the_photos():
    """Photos of one colour: adversarial training must pull the generator's mean colour
    towards it (a generator that ignored the loss would stay where it started)."""
    target = torch.tensor([200.0, 40.0, 40.0])
    crops = (target.view(1, 3, 1, 1) + torch.randn(64, 3, 16, 16) * 8).clamp(0, 255).to(torch.uint8)
    want = target / 127.5 - 1

    def colour_error(g):
        with torch.no_grad():
            return float((g.eval()(torch.randn(64, 32)).mean(dim=(0, 2, 3)) - want).abs().mean())

    torch.manual_seed(0)
    before = colour_error(mini_gan.Generator(16, 32, 8, "nearest"))
    g, history = mini_gan.train_gan(crops, "nearest", steps=150, batch_size=32, z_dim=32, width=8, lr=1e-3, lr_d=1e-3, log_every=50)
    assert history["step"] == [50, 100, 150] and len(history["loss_d"]) == 3
    assert colour_error(g) < 0.5 * before


def _photo(path, seed):
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)).save(path)


def test_the_command_writes_a_pool_of_gan_fakes_from_training_photos_only(tmp_path):
    root = tmp_path / "pool"
    for k in range(24):
        _photo(root / "real" / "cams" / f"photo{k}.jpg", k)
    _photo(root / "fake" / "sdxl" / "gen0.jpg", 99)  # fakes are never trained on
    (root / "real" / "cams" / "broken.jpg").write_bytes(b"not a picture")
    train = [p for p in mini_gan.real_files([root], split=None) if split_of(stem_of(p.name)) == "train"]
    assert mini_gan.real_files([root]) == train and 0 < len(train) < 25
    assert all("/real/" in str(p) for p in mini_gan.real_files([root], split=None))
    out = tmp_path / "gan"
    summary = mini_gan.main(["--data", str(root), "--out", str(out), "--size", "16", "--steps", "4", "--count", "5",
                             "--crops", "8", "--width", "8", "--batch_size", "4", "--device", "cpu"])
    for design in mini_gan.DEFAULT_DESIGNS:
        files = sorted((out / "fake" / f"minigan-{design}").glob("*.png"))
        assert len(files) == 5 and Image.open(files[0]).size == (16, 16)
        assert (out / f"minigan_{design}_samples.png").exists()
        assert family_of(f"fake/minigan-{design}") == sampling_family(f"fake/minigan-{design}") == "minigan"
    record = json.loads((out / "minigan.json").read_text())
    assert record["photos"] == len(train) == summary["photos"] and set(record["designs"]) == set(mini_gan.DEFAULT_DESIGNS)
    assert record["designs"]["nearest"]["history"]["step"] == [4]
    assert all(d["collapsed"] == (d["spread_ratio"] < mini_gan.COLLAPSED) for d in record["designs"].values())


def test_no_readable_photo_is_a_clear_error(tmp_path):
    bad = tmp_path / "pool" / "real" / "cams"
    bad.mkdir(parents=True)
    for k in range(3):
        (bad / f"x{k}.jpg").write_bytes(b"broken")
    with pytest.raises(ValueError, match="could be read"):
        mini_gan.load_crops(sorted(bad.iterdir()), 16, 4)
    with pytest.raises(SystemExit):
        mini_gan.main(["--data", str(tmp_path / "nothing"), "--out", str(tmp_path / "o"), "--size", "16"])


def test_a_collapsed_generator_is_measured_as_collapsed():
    crops = torch.randint(0, 256, (32, 3, 16, 16), dtype=torch.uint8)
    g = mini_gan.Generator(16, 8, 8, "nearest").eval()
    varied = mini_gan.spread_ratio(g, crops, n=32)
    with torch.no_grad():
        g.body[-1].weight.zero_()  # every picture the same (the last layer's bias only)
    collapsed = mini_gan.spread_ratio(g, crops, n=32)
    assert collapsed < 1e-6 < varied and collapsed < mini_gan.COLLAPSED


def test_the_blur_design_filters_the_checkerboard_out_and_keeps_flat_colour():
    """StyleGAN2's [1, 3, 3, 1] filter: zero gain at the highest frequency (the transposed
    convolution's checkerboard), unit gain for a flat picture (away from the border)."""
    blur = mini_gan.Blur()
    yy, xx = torch.meshgrid(torch.arange(16), torch.arange(16), indexing="ij")
    checker = ((yy + xx) % 2 * 2 - 1).float().expand(1, 2, 16, 16)
    flat = torch.full((1, 2, 16, 16), 0.7)
    out_c, out_f = blur(checker), blur(flat)
    assert out_c.shape == checker.shape
    assert float(out_c[..., 2:-2, 2:-2].abs().max()) < 1e-6
    assert torch.allclose(out_f[..., 2:-2, 2:-2], flat[..., 2:-2, 2:-2])
    assert any(isinstance(m, mini_gan.Blur) for m in mini_gan.Generator(32, 16, 8, "blur").modules())


def test_per_design_trains_several_gans_of_one_design_as_separate_sources(tmp_path):
    """``--per_design 2``: two GANs of the nearest design, each its own source (so each is
    weighed as one), its own seed (different pictures), the first one as a single run makes it."""
    root = tmp_path / "pool"
    for k in range(24):
        _photo(root / "real" / "cams" / f"photo{k}.jpg", k)
    args = ["--data", str(root), "--designs", "nearest", "--size", "16", "--steps", "3", "--count", "4", "--crops", "8",
            "--width", "8", "--batch_size", "4", "--device", "cpu"]
    two = mini_gan.main([*args, "--out", str(tmp_path / "two"), "--per_design", "2"])
    mini_gan.main([*args, "--out", str(tmp_path / "one")])
    assert set(two["designs"]) == {"nearest", "nearest2"} and two["designs"]["nearest2"]["design"] == "nearest"
    first, second = (sorted((tmp_path / "two" / "fake" / f"minigan-{n}").glob("*.png")) for n in ("nearest", "nearest2"))
    assert len(first) == len(second) == 4 and second[0].name == "minigan-nearest2-00000.png"
    assert family_of("fake/minigan-nearest2") == "minigan" and (tmp_path / "two" / "minigan_nearest2_samples.png").exists()
    assert not np.array_equal(np.asarray(Image.open(first[0])), np.asarray(Image.open(second[0])))
    same = sorted((tmp_path / "one" / "fake" / "minigan-nearest").glob("*.png"))[0]
    assert np.array_equal(np.asarray(Image.open(first[0])), np.asarray(Image.open(same)))
    with pytest.raises(SystemExit):
        mini_gan.main([*args, "--out", str(tmp_path / "bad"), "--per_design", "0"])
