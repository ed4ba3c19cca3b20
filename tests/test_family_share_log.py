"""The family shares the trainer logs at start-up: computed once (the sampler's own weights),
and, with ``--pair_aligned``, those of what the sampler really yields after pairing (a photo
whose round trips exceed its share is overdrawn, which shifts its class's family shares).
A tiny synthetic dataset of stub sources: no image is read."""
from __future__ import annotations

import re
from collections import Counter, defaultdict

import pytest
import torch

import bitmind.data.dataset as dataset_mod
import bitmind.training.trainer as trainer_mod
from bitmind.data import DetectionDataset, FamilySampler
from bitmind.data.families import sampling_family
from bitmind.training.config import TrainConfig
from bitmind.training.trainer import train_sampler


class StubSource:
    """An image source of named files in ``CLASS/SOURCE`` folders (what ``aligned_partners``,
    ``labels`` and ``source_names`` read); it loads nothing."""

    def __init__(self, name: str, files: list[str]):
        self.name, self.files = name, files

    def label(self, i: int) -> int:
        return 0 if self.name.startswith("real/") else 1

    def source_name(self, i: int) -> str:
        return self.name

    def describe(self, i: int) -> str:
        return f"/pool/{self.name}/{self.files[i]}"


def _dataset(sources: dict[str, list[str]]) -> DetectionDataset:
    items = [(src, i) for src in (StubSource(n, f) for n, f in sources.items()) for i in range(len(src.files))]
    return DetectionDataset(items)


def _overdrawn_pool() -> DetectionDataset:
    """real/a: 10 photos, two of them with a round trip; real/b: 4 photos; fake/sdxl: 4.
    Each round trip weighs 1/4 / 2 = 0.125, each photo of real/a 1/4 / 10 = 0.025: both
    photos are overdrawn, so real/a is drawn more than its half of the real class."""
    return _dataset({
        "real/a": [f"a{i}.jpg" for i in range(10)],
        "real/b": [f"b{i}.jpg" for i in range(4)],
        "fake/sdxl": [f"s{i}.jpg" for i in range(4)],
        "fake/aligned-taef2": ["a0.jpg", "a1.jpg"],
    })


def _logged_shares(text: str) -> dict[int, dict[str, float]]:
    out = {}
    for y, rest in re.findall(r"family shares of class (\d+): (.*)", text):
        out[int(y)] = {f: float(v) for f, v in (part.rsplit(" ", 1) for part in rest.split(", "))}
    return out


def _empirical_shares(ds: DetectionDataset, order: list[int]) -> dict[int, dict[str, float]]:
    labels, names = ds.labels(), ds.source_names()
    counts: dict[int, Counter] = defaultdict(Counter)
    for k in order:
        counts[labels[k]][sampling_family(names[k])] += 1
    return {y: {f: n / sum(c.values()) for f, n in c.items()} for y, c in counts.items()}


def _count_family_weights(monkeypatch) -> list[int]:
    """Wraps ``family_weights`` wherever the sampler set-up looks it up; returns the call log."""
    calls: list[int] = []
    for mod in (dataset_mod, trainer_mod):
        real = getattr(mod, "family_weights", None)
        if real is not None:
            def counted(*a, _real=real, **kw):
                calls.append(1)
                return _real(*a, **kw)
            monkeypatch.setattr(mod, "family_weights", counted)
    return calls


@pytest.mark.parametrize("pair", [False, True])
def test_family_weights_are_computed_once_at_start_up(monkeypatch, caplog, pair):
    """Before, ``family_share_of`` computed the weights for its log line and the sampler again."""
    ds = _overdrawn_pool()
    cfg = TrainConfig(balance="family", family_share=["sdxl=2"], pair_aligned=pair, batch_size=8,
                      samples_per_epoch=400, device="cpu")
    partners = [-1] * 18 + [0, 1] if pair else None
    expected = FamilySampler(ds.labels(), ds.source_names(), seed=cfg.seed, num_samples=400,
                             partners=partners, family_share={"sdxl": 2.0})
    calls = _count_family_weights(monkeypatch)
    with caplog.at_level("INFO", logger="bitmind.training.trainer"):
        sampler = train_sampler(cfg, ds)
    assert len(calls) == 1
    assert torch.equal(sampler.weights, expected.weights)  # what is drawn is unchanged
    assert list(sampler) == list(expected)
    assert "family shares of class 1: aligned 0.333, sdxl 0.667" in caplog.text


@pytest.mark.parametrize("share", [[], ["sdxl=1"]])
def test_logged_shares_are_those_drawn_after_pairing(caplog, share):
    """With pairs, the photos of real/a come with their round trips far more often than their
    family share: the log must say so (before: real/a 0.5, real/b 0.5, the shares before pairing;
    without --family_share nothing at all)."""
    ds = _overdrawn_pool()
    n = 60000
    cfg = TrainConfig(balance="family", pair_aligned=True, family_share=share, batch_size=8,
                      samples_per_epoch=n, device="cpu")
    with caplog.at_level("INFO", logger="bitmind.training.trainer"):
        sampler = train_sampler(cfg, ds)
    assert sampler.overdrawn == 2
    logged = _logged_shares(caplog.text)
    drawn = _empirical_shares(ds, list(sampler))
    assert set(logged) == {0, 1}
    for y in (0, 1):
        assert logged[y].keys() == drawn[y].keys()
        for fam, v in logged[y].items():
            assert v == pytest.approx(drawn[y][fam], abs=0.015), (y, fam, logged, drawn)
    # the exact shares: real/a 0.125 + 0.125 + 8 x 0.025 = 0.45 against real/b's 0.25
    assert logged[0] == pytest.approx({"real/a": 0.45 / 0.7, "real/b": 0.25 / 0.7}, abs=1e-3)
    assert "class shares with aligned pairs: 0 0.583, 1 0.417" in caplog.text


def test_draw_shares_without_pairs_are_the_family_weights():
    ds = _overdrawn_pool()
    sampler = FamilySampler(ds.labels(), ds.source_names())
    assert torch.allclose(sampler.draw_shares(), sampler.weights / sampler.weights.sum())
    paired = FamilySampler(ds.labels(), ds.source_names(), partners=[-1] * 18 + [0, 1])
    assert paired.draw_shares().sum().item() == pytest.approx(1.0)
    assert paired.draw_shares()[0].item() == pytest.approx(0.125 / 1.2)  # drawn only with its round trip
