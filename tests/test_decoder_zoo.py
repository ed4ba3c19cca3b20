"""Decoder zoo (issue #13): quality measures, up-sampling designs, a tiny zoo trained end to
end, aligned fakes from it (stems and splits kept), and clear errors for bad decoder files."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from bitmind.data import LocalFolderSource, split_of
from bitmind.training import decoder_zoo
from bitmind.training.aligned_fakes import main as aligned_main
from bitmind.training.decoders import load_decoders, round_trip
from bitmind.training.image_quality import high_frequency_energy, high_frequency_ratio, psnr, ssim
from bitmind.training.taesd import DecoderLoadError
from bitmind.training.zoo_models import DESIGNS, ZooAutoencoder, ZooSpec, load_zoo_file, save_zoo_file

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # every test here: tiny convolutions

REPO = Path(__file__).resolve().parents[1]
DESIGN_NAMES = ["nearest-2x-c4", "transposed-2x-c8"]
TINY = ["--width", "8", "--batch_size", "8", "--crop", "32", "--warmup", "1", "--lr", "5e-3", "--log_every", "10",
        "--device", "cpu", "--eval_images", "6"]


def _textured(size: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    base = np.stack([np.sin(6 * x + seed), np.cos(5 * y - seed), np.sin(4 * (x + y))], -1) * 90 + 128
    return np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype("uint8")


def make_pool(root: Path, pictures: int = 16, size: int = 32, crops=(0, 1), fakes: bool = True) -> Path:
    """A pool in the CLASS/SOURCE layout: ``pic<k>_<crop>.jpg`` real crops (shared stems) and a fake source."""
    for k in range(pictures):
        d = root / "real" / ("cam" if k % 2 else "phone")
        d.mkdir(parents=True, exist_ok=True)
        for c in crops:
            Image.fromarray(_textured(size, 10 * k + c)).save(d / f"pic{k}_{c}.jpg", quality=90)
    if fakes:
        (root / "fake" / "gen").mkdir(parents=True, exist_ok=True)
        Image.fromarray(_textured(size, 999)).save(root / "fake" / "gen" / "fake0_0.jpg", quality=90)
    return root


# --- quality measures --------------------------------------------------------------------------

def test_psnr_known_values():
    a = torch.zeros(3, 8, 8)
    assert psnr(a, a + 0.1) == pytest.approx(20.0, abs=1e-4)  # MSE 0.01
    assert psnr(a, a + 0.01) == pytest.approx(40.0, abs=1e-3)
    batch = psnr(torch.zeros(2, 3, 4, 4), torch.stack([torch.full((3, 4, 4), 0.1), torch.full((3, 4, 4), 0.5)]))
    assert batch.tolist() == pytest.approx([20.0, 10 * math.log10(4)], abs=1e-4)


def test_ssim_known_values():
    x = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert ssim(x, x) == pytest.approx(1.0, abs=1e-5)
    # constant images: only the luminance term is left, (2ab + C1) / (a^2 + b^2 + C1)
    a, b, c1 = 0.2, 0.6, 0.01**2
    assert ssim(torch.full((3, 16, 16), a), torch.full((3, 16, 16), b)) == pytest.approx(
        (2 * a * b + c1) / (a * a + b * b + c1), abs=1e-5)
    noisy = (x + 0.2 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    assert 0.0 < ssim(noisy, x) < 0.9


def test_high_frequency_ratio_flags_blur():
    x = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert high_frequency_ratio(x, x) == pytest.approx(1.0)
    # the Laplacian is linear: doubling the contrast around the mean quadruples the energy
    assert high_frequency_ratio(0.5 + 2 * (x - 0.5), x) == pytest.approx(4.0, rel=1e-4)
    blurred = F.avg_pool2d(x[None], 3, stride=1, padding=1, count_include_pad=False)[0]
    assert high_frequency_ratio(blurred, x) < 0.2
    assert float(high_frequency_energy(torch.full((3, 8, 8), 0.7))) == pytest.approx(0.0, abs=1e-10)


# --- designs and round trips ------------------------------------------------------------------

@pytest.mark.parametrize("design", DESIGNS)
def test_each_design_round_trips_any_size_and_has_its_up_sampling(design):
    torch.manual_seed(0)
    model = ZooAutoencoder(ZooSpec(design, 4, 4, width=8)).eval()
    kinds = {type(m).__name__ for m in model.decoder.modules()}
    assert {"nearest": "Upsample", "bilinear": "Upsample", "transposed": "ConvTranspose2d",
            "pixelshuffle": "PixelShuffle"}[design] in kinds
    x = torch.rand(2, 3, 30, 45)  # neither side divisible by 4: padded, then cropped back
    y = round_trip(model, x)
    assert y.shape == x.shape and 0 <= float(y.min()) and float(y.max()) <= 1


def test_round_trip_pads_to_the_factor_and_crops_back():
    class Probe(torch.nn.Module):
        factor = 8

        def forward(self, x):
            assert x.shape[-2] % 8 == 0 and x.shape[-1] % 8 == 0, x.shape
            return x

    x = torch.rand(1, 3, 21, 10)
    assert torch.equal(round_trip(Probe(), x), x)  # pixels line up with their inputs


def test_spec_names_parse_and_refuse_nonsense():
    s = ZooSpec.parse("pixelshuffle-8x-c16")
    assert (s.design, s.factor, s.latent, s.name) == ("pixelshuffle", 8, 16, "pixelshuffle-8x-c16")
    for bad in ("nearest-8x", "cubic-8x-c4", "nearest-6x-c4"):
        with pytest.raises(ValueError):
            ZooSpec.parse(bad)


def test_random_crops_are_windows_of_the_images():
    imgs = torch.arange(2 * 3 * 10 * 10, dtype=torch.int32).reshape(2, 3, 10, 10).to(torch.uint8)
    x = decoder_zoo.random_crops(imgs, 16, 4, torch.Generator().manual_seed(0))
    assert x.shape == (16, 3, 4, 4) and x.dtype == torch.float32
    flipped = 0
    for crop in (x * 255).round().to(torch.uint8):
        hits = [(n, i, j, f) for n in range(2) for i in range(7) for j in range(7) for f in (False, True)
                if torch.equal(crop, imgs[n, :, i:i + 4, j:j + 4].flip(-1) if f else imgs[n, :, i:i + 4, j:j + 4])]
        assert hits, "a crop is not a window of an input image"
        flipped += hits[0][3]
    assert 0 < flipped < 16  # some mirrored, some not


def test_saved_file_is_self_describing(tmp_path):
    torch.manual_seed(0)
    m = ZooAutoencoder(ZooSpec("bilinear", 2, 3, width=8)).eval()
    back = load_zoo_file(save_zoo_file(m, tmp_path / "d.safetensors"))
    assert back.spec == m.spec
    x = torch.rand(1, 3, 16, 16)
    assert psnr(back(x), m(x)) > 40  # fp16 storage, same network


# --- errors -----------------------------------------------------------------------------------

def _cli_error(args, capsys) -> str:
    with pytest.raises(SystemExit) as e:
        aligned_main(args)
    assert e.value.code == 2
    return capsys.readouterr().err


def test_missing_or_corrupt_decoder_gives_a_clear_error(tmp_path, capsys):
    pool = make_pool(tmp_path / "pool", pictures=2)
    base = ["--data", str(pool), "--out", str(tmp_path / "out"), "--device", "cpu", "--decoders"]
    err = _cli_error(base + [f"x={tmp_path / 'nowhere'}"], capsys)
    assert "not found" in err and "nowhere" in err and "Traceback" not in err
    bad = tmp_path / "bad.safetensors"
    good = save_zoo_file(ZooAutoencoder(ZooSpec("nearest", 2, 3, width=8)), tmp_path / "good.safetensors")
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])  # truncated download
    err = _cli_error(base + [f"x={bad}"], capsys)
    assert "cannot read decoder weights" in err and "bad.safetensors" in err
    taef2 = tmp_path / "taef2"
    taef2.mkdir()
    (taef2 / "taef2_encoder.pth").write_bytes(b"not a torch file")
    (taef2 / "taef2_decoder.pth").write_bytes(b"not a torch file")
    err = _cli_error(base + [f"taef2={taef2}"], capsys)
    assert "taef2_encoder.pth" in err
    (taef2 / "taef2_decoder.pth").unlink()
    torch.save(ZooAutoencoder(ZooSpec("nearest", 2, 3, width=8)).encoder.state_dict(), taef2 / "taef2_encoder.pth")
    assert "taef2_decoder.pth" in _cli_error(base + [f"taef2={taef2}"], capsys)  # missing half
    assert "NAME=PATH" in _cli_error(base + [str(taef2)], capsys)
    # the older --real/--weights form reports missing weights the same way
    err = _cli_error(["--real", str(pool), "--weights", str(tmp_path / "none"), "--out", str(tmp_path / "o")], capsys)
    assert "not found" in err


# --- end to end: a tiny zoo, then aligned fakes -----------------------------------------------

@pytest.fixture(scope="module")
def tiny_zoo(tmp_path_factory, one_torch_thread):
    tmp = tmp_path_factory.mktemp("zoo")
    pool = make_pool(tmp / "pool")
    zoo = tmp / "zoo"
    index = decoder_zoo.main(["train", "--data", str(pool), "--out", str(zoo), "--designs", *DESIGN_NAMES,
                              "--steps", "120", *TINY, "--min_psnr", "0", "--min_hf_ratio", "0", "--max_hf_ratio", "1e9"])
    return pool, zoo, index


def test_tiny_zoo_trains_and_is_described(tiny_zoo):
    pool, zoo, index = tiny_zoo
    on_disk = json.loads((zoo / "zoo.json").read_text())
    assert on_disk["steps"] == 120 and [d["name"] for d in on_disk["decoders"]] == DESIGN_NAMES
    held, _ = decoder_zoo.load_real_images([pool], "val", limit=6)
    for d in on_disk["decoders"]:
        assert d["accepted"] and d["reason"] == "ok" and (zoo / d["file"]).is_file()
        assert d["params_decoder"] > 0 and 0 < d["ssim"] <= 1 and d["hf_ratio"] > 0
        spec = ZooSpec.parse(d["name"], width=8)
        torch.manual_seed(0)
        untrained = decoder_zoo.measure(ZooAutoencoder(spec), held)["psnr"]
        trained = decoder_zoo.measure(load_zoo_file(zoo / d["file"]), held)
        assert trained["psnr"] == pytest.approx(d["psnr"], abs=1e-3)  # zoo.json measured the saved file
        assert trained["psnr"] > untrained + 2, (d["name"], trained["psnr"], untrained)  # 120 steps learned something


def test_zoo_rejects_decoders_below_the_bars(tiny_zoo, tmp_path, capsys):
    pool, _, _ = tiny_zoo
    zoo = tmp_path / "strict"
    index = decoder_zoo.main(["train", "--data", str(pool), "--out", str(zoo), "--designs", "nearest-2x-c4",
                              "--steps", "2", *TINY, "--min_psnr", "60", "--min_hf_ratio", "0.5"])
    (d,) = index["decoders"]
    assert not d["accepted"] and "PSNR" in d["reason"]
    assert decoder_zoo.verdict({"psnr": 30, "hf_ratio": 0.4}, 28, 0.8) == (False, "high-frequency ratio 0.400 < 0.8 (blurry)")
    assert decoder_zoo.verdict({"psnr": 30, "hf_ratio": 0.9}, 28, 0.8) == (True, "ok")
    assert decoder_zoo.verdict({"psnr": 30, "hf_ratio": 1.5}, 28, 0.8, 1.3) == (False, "high-frequency ratio 1.500 > 1.3 (adds noise)")
    err = _cli_error(["--data", str(pool), "--out", str(tmp_path / "o"), "--decoders", f"zoo={zoo}"], capsys)
    assert "no accepted decoder" in err


def test_aligned_pool_keeps_stems_sizes_and_splits(tiny_zoo, tmp_path):
    pool, zoo, _ = tiny_zoo
    # validator-style challenges of the same pictures: one STEM_90.jpg each, another size
    validator = make_pool(tmp_path / "sn34-validator", pictures=16, size=27, crops=(90,), fakes=False)
    out = tmp_path / "aligned"
    stats = aligned_main(["--data", str(pool), str(validator), "--decoders", f"zoo={zoo}", "--out", str(out),
                          "--device", "cpu", "--batch_size", "5", "--workers", "2"])
    sources = sorted(f"fake/aligned-zoo-{n}" for n in DESIGN_NAMES)
    made = LocalFolderSource(out)
    assert sorted({made.source_name(i) for i in range(len(made))}) == sources
    originals = {Path(p).name: p for p in map(str, list(pool.rglob("real/*/*.jpg")) + list(validator.rglob("*.jpg")))}
    assert stats["photos"] == len(originals) == 16 * 3 and len(made) == 2 * len(originals)
    for i in range(len(made)):
        name = Path(made.path(i)).name
        assert name in originals
        assert made.stem(i) == Path(name).stem.rsplit("_", 1)[0]
        assert Image.open(made.path(i)).size == Image.open(originals[name]).size  # 27 px: padded and cropped back
    # --split test: round trips of the test pictures only, same split as their originals
    out_test = tmp_path / "aligned_test"
    aligned_main(["--data", str(pool), str(validator), "--decoders", f"zoo={zoo}", "--out", str(out_test),
                  "--device", "cpu", "--split", "test"])
    stems = {p.stem.rsplit("_", 1)[0] for p in out_test.rglob("*.jpg")}
    expected = {f"pic{k}" for k in range(16) if split_of(f"pic{k}") == "test"}
    assert stems == expected and expected  # the synthetic stems put at least one picture in test


def test_decoder_names_and_duplicates(tiny_zoo, tmp_path):
    _, zoo, _ = tiny_zoo
    decs = load_decoders([f"zoo={zoo}", f"one={zoo / (DESIGN_NAMES[0] + '.safetensors')}"])
    assert [d.source for d in decs] == [f"aligned-zoo-{n}" for n in DESIGN_NAMES] + ["aligned-one"]
    assert [d.factor for d in decs] == [2, 2, 2]
    with pytest.raises(DecoderLoadError, match="same folder"):
        load_decoders([f"a={zoo / (DESIGN_NAMES[0] + '.safetensors')}"] * 2)


def test_benchmark_writes_json_and_figure(tiny_zoo, tmp_path):
    pool, zoo, _ = tiny_zoo
    out = tmp_path / "bench"
    r = subprocess.run([sys.executable, str(REPO / "benchmarks" / "decoder_zoo.py"), "--zoo", str(zoo), "--data",
                        str(pool), "--out", str(out / "zoo.json"), "--figure", str(out / "zoo.png"), "--device", "cpu",
                        "--eval_images", "4"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads((out / "zoo.json").read_text())
    assert sorted(res["decoders"]) == sorted(DESIGN_NAMES)
    for m in res["decoders"].values():
        assert {"psnr", "ssim", "hf_ratio"} <= set(m)
    with Image.open(out / "zoo.png") as im:
        assert im.width > 200 and im.height > 100


def test_spectral_loss_charges_blur_more_than_noise_of_the_same_pixel_error():
    """Pixel L1 cannot tell a blurred round trip from a noisy one with the same error; the
    log-amplitude term (``fft_weight``) charges the blur more, and is zero for a perfect copy."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 64, 64, generator=g)
    blurred = F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)
    err = (blurred - x).abs().mean()
    n = torch.randn(4, 3, 64, 64, generator=g)
    noisy = x + n * err / n.abs().mean()
    loss = decoder_zoo.reconstruction_loss
    assert loss(blurred, x, 0.0) == pytest.approx(loss(noisy, x, 0.0).item(), rel=1e-5)
    assert loss(blurred, x, 0.0, fft_weight=1.0) > loss(noisy, x, 0.0, fft_weight=1.0) * 1.05
    assert loss(x, x, 0.5, fft_weight=1.0).item() == 0.0


def test_committed_zoo_member_loads_and_round_trips_sharply():
    """The accepted decoder kept in base_miner/NPR/decoder_zoo loads through the zoo index
    (rejected members are listed there but absent) and gives a near-lossless round trip."""
    from PIL import Image

    from bitmind.training.decoders import load_decoders, round_trip
    from bitmind.training.image_quality import psnr

    zoo = Path(__file__).resolve().parents[1] / "base_miner" / "NPR" / "decoder_zoo"
    (dec,) = load_decoders([f"zoo={zoo}"])
    assert dec.source == "aligned-zoo-transposed-4x-c16" and dec.factor == 4
    photo = next((Path(__file__).resolve().parent / "data" / "samples" / "real").rglob("*.jpg"))
    x = torch.from_numpy(np.asarray(Image.open(photo).convert("RGB").resize((128, 128)))).permute(2, 0, 1)[None] / 255.0
    with torch.inference_mode():
        y = round_trip(dec.model, x)
    assert y.shape == x.shape and float(psnr(y, x)) > 30.0
