"""Aligned fakes (issue #13): round trips through TAESD-family decoders keep each picture's
stem, size and split, several decoders write one source each, PSNR is right, and bad
decoder folders give one clear line instead of a traceback. Synthetic up-sampling traces
are faint, periodic, keep the photo's colour and are reproducible by seed."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bitmind.data import LocalFolderSource, split_of
from bitmind.training.aligned_fakes import main as aligned_main
from bitmind.training.decoders import load_decoders, psnr, round_trip
from bitmind.training.taesd import DecoderLoadError
from bitmind.training.upsampling_traces import UpsamplingTrace
from validator_synth import tiny_taesd_weights

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # every test here: tiny convolutions


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


def test_psnr_known_values():
    a = torch.zeros(2, 3, 8, 8)
    assert psnr(a, a + 0.1).tolist() == pytest.approx([20.0, 20.0], abs=1e-4)  # MSE 0.01
    assert float(psnr(a[:1], a[:1] + 0.01)) == pytest.approx(40.0, abs=1e-3)
    batch = psnr(torch.zeros(2, 3, 4, 4), torch.stack([torch.full((3, 4, 4), 0.1), torch.full((3, 4, 4), 0.5)]))
    assert batch.tolist() == pytest.approx([20.0, 10 * math.log10(4)], abs=1e-4)


def test_round_trip_pads_to_the_factor_and_crops_back():
    class Probe(torch.nn.Module):
        factor = 8

        def forward(self, x):
            assert x.shape[-2] % 8 == 0 and x.shape[-1] % 8 == 0, x.shape
            return x

    x = torch.rand(1, 3, 21, 10)
    assert torch.equal(round_trip(Probe(), x), x)  # pixels line up with their inputs


def test_missing_or_corrupt_decoder_gives_a_clear_error(tmp_path, usage_error):
    pool = make_pool(tmp_path / "pool", pictures=2)
    base = ["--data", str(pool), "--out", str(tmp_path / "out"), "--device", "cpu", "--decoders"]
    err = usage_error(aligned_main, base + [f"x={tmp_path / 'nowhere'}"])
    assert "not found" in err and "nowhere" in err and "Traceback" not in err
    a_file = tmp_path / "weights.safetensors"
    a_file.write_bytes(b"\0" * 16)
    assert "folder with one" in usage_error(aligned_main, base + [f"x={a_file}"])
    assert "found encoders none" in usage_error(aligned_main, base + [f"x={tmp_path / 'pool'}"])
    taef2 = tmp_path / "taef2"
    taef2.mkdir()
    (taef2 / "taef2_encoder.pth").write_bytes(b"not a torch file")
    (taef2 / "taef2_decoder.pth").write_bytes(b"not a torch file")
    err = usage_error(aligned_main, base + [f"taef2={taef2}"])
    assert "taef2_encoder.pth" in err
    good = tiny_taesd_weights(tmp_path / "good")
    (taef2 / "taef2_decoder.pth").unlink()
    (taef2 / "taef2_encoder.pth").write_bytes((good / "taef2_encoder.pth").read_bytes())
    assert "taef2_decoder.pth" in usage_error(aligned_main, base + [f"taef2={taef2}"])  # missing half
    assert "NAME=PATH" in usage_error(aligned_main, base + [str(taef2)])
    # the older --real/--weights form reports missing weights the same way
    err = usage_error(aligned_main, ["--real", str(pool), "--weights", str(tmp_path / "none"), "--out", str(tmp_path / "o")])
    assert "not found" in err


def test_decoder_names_and_duplicates(tmp_path):
    w = tiny_taesd_weights(tmp_path / "w")
    decs = load_decoders([f"taef2={w}", f"other={w}"])
    assert [d.source for d in decs] == ["aligned-taef2", "aligned-other"]
    assert [d.factor for d in decs] == [2, 2]
    with pytest.raises(DecoderLoadError, match="same folder"):
        load_decoders([f"a={w}"] * 2)
    with pytest.raises(DecoderLoadError, match="plain folder name"):
        load_decoders([f"../up={w}"])


def test_aligned_pool_keeps_stems_sizes_and_splits(tmp_path):
    pool = make_pool(tmp_path / "pool")
    w = tiny_taesd_weights(tmp_path / "w")
    # validator-style challenges of the same pictures: one STEM_90.jpg each, another size
    validator = make_pool(tmp_path / "sn34-validator", pictures=16, size=27, crops=(90,), fakes=False)
    out = tmp_path / "aligned"
    stats = aligned_main(["--data", str(pool), str(validator), "--decoders", f"taef2={w}", f"two={w}", "--out", str(out),
                          "--device", "cpu", "--batch_size", "5", "--workers", "2"])
    made = LocalFolderSource(out)
    assert sorted({made.source_name(i) for i in range(len(made))}) == ["fake/aligned-taef2", "fake/aligned-two"]
    originals = {Path(p).name: p for p in map(str, list(pool.rglob("real/*/*.jpg")) + list(validator.rglob("*.jpg")))}
    assert stats["photos"] == len(originals) == 16 * 3 and len(made) == 2 * len(originals)
    for i in range(len(made)):
        name = Path(made.path(i)).name
        assert name in originals
        assert made.stem(i) == Path(name).stem.rsplit("_", 1)[0]
        assert Image.open(made.path(i)).size == Image.open(originals[name]).size  # 27 px: padded and cropped back
    # --split test: round trips of the test pictures only, same split as their originals
    out_test = tmp_path / "aligned_test"
    aligned_main(["--data", str(pool), str(validator), "--decoders", f"taef2={w}", "--out", str(out_test),
                  "--device", "cpu", "--split", "test"])
    stems = {p.stem.rsplit("_", 1)[0] for p in out_test.rglob("*.jpg")}
    expected = {f"pic{k}" for k in range(16) if split_of(f"pic{k}") == "test"}
    assert stems == expected and expected  # the synthetic stems put at least one picture in test


def _photo(size: int = 64, seed: int = 3) -> torch.Tensor:
    return torch.from_numpy(_textured(size, seed)).permute(2, 0, 1)[None].float() / 255


def test_upsampling_trace_is_faint_keeps_colour_and_is_reproducible():
    x = torch.cat([_photo(64, k) for k in range(6)])
    y = UpsamplingTrace(seed=1)(x)
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1
    p = psnr(y, x)
    assert bool(((p > 30) & (p < 50)).all()), p  # 1.5-6 levels RMS: a trace, not a different picture
    assert float((y - x).mean((2, 3)).abs().max()) < 0.5 / 255  # no colour cast: only detail within one period
    assert torch.equal(UpsamplingTrace(seed=1)(x), y)  # the same seed, the same fakes
    assert not torch.equal(UpsamplingTrace(seed=2)(x), y)
    with pytest.raises(ValueError, match="multiples of 8"):
        UpsamplingTrace()(x[..., :60])
    with pytest.raises(ValueError, match="factors"):
        UpsamplingTrace(factors=(3,))


def test_transposed_stage_is_periodic_only_through_its_phase_gains():
    flat = torch.full((1, 3, 16, 16), 0.5)
    exact = UpsamplingTrace(seed=0, phase_gain=0.0)._transposed(flat)[..., 2:-2, 2:-2]  # away from the border taps
    assert torch.allclose(exact, torch.full_like(exact, 0.5), atol=1e-6)  # taps of each phase sum to 1: flat stays flat
    up = UpsamplingTrace(seed=0, phase_gain=0.05)._transposed(flat)[..., 2:-2, 2:-2]
    phases = torch.stack([up[..., i::2, j::2] for i in (0, 1) for j in (0, 1)])  # (4, 1, 3, h, w)
    assert float(phases.std((0,)).max()) > 1e-3  # the four output phases differ...
    assert float(phases.std((3, 4)).max()) < 1e-6  # ...but each is constant: a pattern with period 2


def test_synthetic_fakes_from_the_command_line(tmp_path):
    pool = make_pool(tmp_path / "pool", pictures=6, size=40)
    out = tmp_path / "synthetic"
    stats = aligned_main(["--data", str(pool), "--synthetic", "--out", str(out), "--device", "cpu", "--workers", "2"])
    made = LocalFolderSource(out)
    assert {made.source_name(i) for i in range(len(made))} == {"fake/aligned-synth-upsampling"}
    assert len(made) == stats["photos"] == 12
    assert 30 < stats["decoders"]["aligned-synth-upsampling"]["psnr_mean"] < 50
    for i in range(len(made)):
        assert Image.open(made.path(i)).size == (40, 40)  # padded to the factor and cropped back


def test_synthetic_trace_strength_is_an_option(tmp_path, usage_error):
    pool = make_pool(tmp_path / "pool", pictures=4, size=40)
    psnr = {}
    for lo, hi in ((2.0, 2.0), (16.0, 16.0)):
        out = tmp_path / f"synthetic{lo:g}"
        stats = aligned_main(["--data", str(pool), "--synthetic", "--synthetic_rms", str(lo), str(hi),
                              "--out", str(out), "--device", "cpu", "--workers", "2"])
        psnr[lo] = stats["decoders"]["aligned-synth-upsampling"]["psnr_mean"]
    assert psnr[2.0] > psnr[16.0] + 12  # 8x the RMS is 18 dB less PSNR (less the JPEG and clipping it shares)
    assert "0 < LO <= HI" in usage_error(aligned_main, ["--data", str(pool), "--synthetic", "--synthetic_rms", "6", "2",
                                                       "--out", str(tmp_path / "bad")])
