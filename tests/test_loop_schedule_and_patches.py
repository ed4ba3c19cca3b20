"""The learning-rate warm-up of ``lr_at`` and the even patch offsets of ``random_patches``
(bitmind.training.loop): two silent bugs, one warm-up epoch that was no warm-up at all and
training patches whose 2 x 2 NPR grid did not match the served picture's."""
from __future__ import annotations

import math

import pytest
import torch

from bitmind.models.npr import npr_residual
from bitmind.training import TrainConfig
from bitmind.training.config import ConfigError
from bitmind.training.loop import Learner, check_freq_mask, lr_at, mask_frequencies, random_patches

LR = 4e-4


# ---------------------------------------------------------------------------- lr_at
def _after_warmup(cfg: TrainConfig, e: int) -> float:
    """The decay after warm-up, written out: both count their epochs from the end of the warm-up."""
    if cfg.lr_schedule == "cosine":
        t = min(max(e - cfg.warmup_epochs, 0) / max(cfg.epochs - cfg.warmup_epochs, 1), 1.0)
        return cfg.lr * (0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * t)))
    return cfg.lr * cfg.lr_decay ** ((e - cfg.warmup_epochs) // max(cfg.lr_decay_every, 1))


@pytest.mark.parametrize("schedule", ["cosine", "step"])
def test_warmup_epochs_are_below_the_full_lr_and_rise_to_it(schedule):
    def lrs(w):
        cfg = TrainConfig(lr=LR, epochs=10, lr_schedule=schedule, warmup_epochs=w, lr_decay_every=5)
        return [lr_at(cfg, e) for e in range(10)]
    assert lrs(0)[0] == pytest.approx(LR)  # no warm-up: full lr from the start
    one = lrs(1)
    assert one[0] < LR  # the recipes' warmup_epochs: 1 is a real warm-up epoch
    assert one[:2] == pytest.approx([LR / 2, LR])
    assert lrs(2)[:3] == pytest.approx([LR / 3, 2 * LR / 3, LR])


@pytest.mark.parametrize("schedule", ["cosine", "step"])
@pytest.mark.parametrize("w", [0, 1, 2, 3, 4, 6])
def test_schedule_after_warmup_counts_from_its_end(schedule, w):
    cfg = TrainConfig(lr=LR, epochs=12, lr_schedule=schedule, warmup_epochs=w, lr_decay=0.5, lr_decay_every=4)
    after = [lr_at(cfg, e) for e in range(w, cfg.epochs)]
    assert after == pytest.approx([_after_warmup(cfg, e) for e in range(w, cfg.epochs)])
    ramp = [lr_at(cfg, e) for e in range(w + 1)]
    assert all(a < b for a, b in zip(ramp, ramp[1:])) and ramp[-1] == pytest.approx(LR)  # rising to full lr at epoch w
    assert after[0] == pytest.approx(LR)  # full lr once warm, also where the warm-up outlasts a decay step (w >= 4)
    if schedule == "step":
        assert after[4] == pytest.approx(LR * 0.5)  # the first step comes lr_decay_every epochs after the warm-up
    if schedule == "cosine":
        assert all(a >= b for a, b in zip(after, after[1:]))  # non-increasing once warm
        assert after[-1] > 0.01 * LR  # ends where it ended: just short of the 1 % floor


# ---------------------------------------------------------------------------- random_patches
def _index_images(b: int, h: int, w: int) -> torch.Tensor:
    """A (b, 1, h, w) batch whose pixel holds its own row * w + column (exact in float32)."""
    return torch.arange(h * w, dtype=torch.float32).reshape(1, 1, h, w).repeat(b, 1, 1, 1)


def _offsets(p: torch.Tensor, w: int) -> list[tuple[int, int]]:
    """(top, left) of each patch cut from ``_index_images``."""
    return [divmod(int(v), w) for v in p[:, 0, 0, 0]]


@pytest.mark.parametrize("h,w,size", [(257, 256, 64), (256, 256, 95), (257, 257, 95), (64, 64, 16), (17, 18, 16)])
def test_patch_offsets_are_even_and_in_bounds(h, w, size):
    x = _index_images(64, h, w)
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        p = random_patches(x, size, g)
        assert p.shape == (64, 1, size, size)
        for b, (top, left) in enumerate(_offsets(p, w)):
            assert top % 2 == 0 and left % 2 == 0
            assert 0 <= top <= h - size and 0 <= left <= w - size
            assert torch.equal(p[b, 0], x[b, 0, top:top + size, left:left + size])


def test_patch_offsets_reach_every_even_place_and_follow_the_generator():
    x = _index_images(256, 25, 24)  # H - size = 9 (odd): tops 0..8, lefts 0..8, even ones only
    p = random_patches(x, 16, torch.Generator().manual_seed(3))
    offs = _offsets(p, 24)
    assert {t for t, _ in offs} == {0, 2, 4, 6, 8} and {left for _, left in offs} == {0, 2, 4, 6, 8}
    assert torch.equal(p, random_patches(x, 16, torch.Generator().manual_seed(3)))  # the generator's draws only
    assert not torch.equal(p, random_patches(x, 16, torch.Generator().manual_seed(4)))
    assert len(set(offs)) > 10  # each image its own offset


def test_patch_residual_is_the_residual_of_the_whole_picture_there():
    """The reason offsets are even: the NPR residual of a patch equals the residual the served
    (whole, offset-0) picture has at those pixels; from an odd offset it does not."""
    torch.manual_seed(0)
    x = torch.rand(8, 3, 64, 64)
    g_seed, size = 5, 32
    p = random_patches(x, size, torch.Generator().manual_seed(g_seed))
    offs = _offsets(random_patches(_index_images(8, 64, 64), size, torch.Generator().manual_seed(g_seed)), 64)
    whole = npr_residual(x)
    for b, (top, left) in enumerate(offs):
        assert torch.equal(p[b], x[b, :, top:top + size, left:left + size])
        assert torch.allclose(npr_residual(p[b:b + 1])[0], whole[b, :, top:top + size, left:left + size])
        odd = x[b:b + 1, :, top + 1:top + 1 + size, left + 1:left + 1 + size]  # one pixel off the grid
        assert not torch.allclose(npr_residual(odd)[0], whole[b, :, top + 1:top + 1 + size, left + 1:left + 1 + size])


def test_paired_rows_keep_the_even_offset_of_the_row_before():
    x = _index_images(6, 40, 40)
    follow = torch.tensor([False, True, False, True, False, False])
    same = random_patches(x, 16, torch.Generator().manual_seed(1), follow)
    apart = random_patches(x, 16, torch.Generator().manual_seed(1))
    offs = _offsets(same, 40)
    assert offs[1] == offs[0] and offs[3] == offs[2]
    assert all(t % 2 == 0 and left % 2 == 0 for t, left in offs)
    for b in (0, 2, 4, 5):  # unmarked rows: the draws they had without pairing
        assert torch.equal(same[b], apart[b])


def test_learner_crops_on_the_grid():
    lr = Learner(torch.nn.Linear(1, 1), TrainConfig(patch_size=16, seed=7), None)
    x = _index_images(32, 41, 41)
    for _ in range(5):
        assert all(t % 2 == 0 and left % 2 == 0 for t, left in _offsets(lr.crop(x), 41))


def _spectrum_zeros(x: torch.Tensor) -> torch.Tensor:
    """Share of each image's (channel-summed) real-FFT coefficients that are zero."""
    mag = torch.fft.rfft2(x.double(), norm="ortho").abs().sum(1)
    return (mag < 1e-4).double().flatten(1).mean(1)


def test_frequency_masking_zeroes_about_the_ratio_and_keeps_the_mean():
    x = torch.rand(8, 3, 48, 48, generator=torch.Generator().manual_seed(5))
    out = mask_frequencies(x, 1.0, 0.15, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == x.dtype and not torch.allclose(out, x)
    zeros = _spectrum_zeros(out)
    assert torch.all((zeros > 0.10) & (zeros < 0.20))  # about 15 % of the coefficients, per image
    assert torch.all(_spectrum_zeros(x) < 0.01)
    assert torch.allclose(out.mean((1, 2, 3)), x.mean((1, 2, 3)), atol=1e-5)  # the DC term is never masked
    # the spectrum stays Hermitian: a masked coefficient is zero, not halved, also in the
    # self-conjugate columns (0 and w/2), so no coefficient is partly cut
    full_in, full_out = (torch.fft.fft2(t.double(), norm="ortho").abs() for t in (x, out))
    ratio = (full_out / full_in)[full_in > 1e-2]  # float32 round trips: relative errors on tiny coefficients
    assert not torch.any((ratio > 0.02) & (ratio < 0.98))
    # every channel loses the same coefficients
    spec = torch.fft.rfft2(out.double(), norm="ortho").abs() < 1e-4
    assert torch.equal(spec[:, 0], spec[:, 1]) and torch.equal(spec[:, 0], spec[:, 2])


def test_frequency_masking_below_a_radius_spares_the_high_frequencies():
    x = torch.rand(8, 3, 48, 48, generator=torch.Generator().manual_seed(5))
    out = mask_frequencies(x, 1.0, 0.3, torch.Generator().manual_seed(0), max_freq=0.5)
    fy = torch.fft.fftfreq(48).abs() / 0.5
    fx = torch.fft.rfftfreq(48) / 0.5
    radius = torch.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2)
    spec_in, spec_out = (torch.fft.rfft2(t.double(), norm="ortho") for t in (x, out))
    high = radius > 0.5
    # every coefficient beyond half the Nyquist frequency comes through (float32 round trip)
    assert torch.allclose(spec_out[..., high], spec_in[..., high], atol=1e-4)
    zeroed = (spec_out.abs().sum(1) < 1e-4)[:, ~high].double().mean(1)
    assert torch.all((zeroed > 0.15) & (zeroed < 0.45))  # about 30 % of those within the radius
    assert torch.allclose(out.mean((1, 2, 3)), x.mean((1, 2, 3)), atol=1e-5)
    with pytest.raises(ValueError, match="aug_freq_mask_max_freq"):
        check_freq_mask(0.5, 0.15, -0.1)
    with pytest.raises(ValueError, match="aug_freq_mask_max_freq"):
        check_freq_mask(0.5, 0.15, float("nan"))
    assert check_freq_mask(0.5, 0.15, 0.5) == (0.5, 0.15, 0.5)
    # no jump at 1: 0.99 and 1.0 both leave the corners (radius up to 1.41) unmasked; 0 and 1.5 mask everywhere
    corner = radius > 1.0
    for limit, corners_masked in ((0.99, False), (1.0, False), (1.5, True), (0.0, True)):
        out = mask_frequencies(x, 1.0, 0.3, torch.Generator().manual_seed(0), max_freq=limit)
        spec_out = torch.fft.rfft2(out.double(), norm="ortho")
        hit = (spec_out.abs().sum(1) < 1e-4)[:, corner].any().item()
        assert hit == corners_masked, limit


def test_frequency_masking_probability_pairs_and_stream():
    x = torch.rand(64, 3, 32, 32, generator=torch.Generator().manual_seed(6))
    assert mask_frequencies(x, 0.0, 0.15, torch.Generator().manual_seed(0)) is x
    half = mask_frequencies(x, 0.5, 0.15, torch.Generator().manual_seed(0))
    changed = (half - x).abs().flatten(1).amax(1) > 1e-4
    assert 16 <= int(changed.sum()) <= 48  # about half of the images, the others exactly as they were
    assert torch.equal(half[~changed], x[~changed])
    again = mask_frequencies(x, 0.5, 0.15, torch.Generator().manual_seed(0))
    assert torch.equal(half, again)  # the generator alone decides
    twins = x[:6].clone()
    twins[1], twins[3] = twins[0], twins[2]
    follow = torch.tensor([False, True, False, True, False, False])
    out = mask_frequencies(twins, 1.0, 0.15, torch.Generator().manual_seed(3), follow)
    assert torch.allclose(out[1], out[0]) and torch.allclose(out[3], out[2])  # a pair keeps one mask
    assert not torch.allclose(out[5] - twins[5], out[4] - twins[4])


def test_learner_masks_frequencies_only_when_asked_and_checks_the_options():
    x = torch.rand(4, 3, 32, 32)
    assert torch.equal(Learner(torch.nn.Linear(1, 1), TrainConfig(), None).crop(x), x)
    masked = Learner(torch.nn.Linear(1, 1), TrainConfig(aug_freq_mask_prob=1.0), None).crop(x)
    assert torch.all(_spectrum_zeros(masked) > 0.10)
    for bad in ({"aug_freq_mask_prob": 1.5}, {"aug_freq_mask_prob": 0.5, "aug_freq_mask_ratio": 1.0},
                {"aug_freq_mask_prob": 0.5, "aug_freq_mask_ratio": 0.0}):
        with pytest.raises(ConfigError, match="aug_freq_mask"):
            TrainConfig(**bad).check()


def test_fused_adam_only_where_the_parameters_are_on_cuda():
    """``fused_adam`` asks for torch's fused kernel on CUDA; a CPU model keeps the default Adam
    (the option is documented as ignored there), and the option off never fuses."""
    on_cpu = Learner(torch.nn.Linear(2, 1), TrainConfig(fused_adam=True), None)
    assert not on_cpu.opt.defaults.get("fused")
    assert on_cpu.opt.param_groups[0]["lr"] == TrainConfig().lr
    if torch.cuda.is_available():  # pragma: no cover - CI has no GPU
        assert Learner(torch.nn.Linear(2, 1).cuda(), TrainConfig(fused_adam=True), None).opt.defaults["fused"] is True
        assert not Learner(torch.nn.Linear(2, 1).cuda(), TrainConfig(), None).opt.defaults.get("fused")


@pytest.mark.parametrize("seed", [-1, 2**62 + 1, 99999999999999999999])
def test_a_seed_the_generators_cannot_take_is_a_config_error(seed):
    """``--seed 99999999999999999999`` ended in torch's OverflowError traceback at the start of training."""
    with pytest.raises(ConfigError, match="--seed must be in"):
        TrainConfig(seed=seed).check()
    TrainConfig(seed=2**62).check()
    Learner(torch.nn.Linear(1, 1), TrainConfig(seed=2**62), None)  # its streams at seed + 1 and + 2 still seed
