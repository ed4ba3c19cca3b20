"""How a training step gets its batch, made faster in the fifteenth session without changing
what is trained on: a training batch built by the loader in parts and joined
(``TrainConfig.loader_parts``, ``epoch_batches``, ``join_batches``) must be the batch built
whole; a sweep variant's share of a shared batch (``_Variant.select``) and the small copies of
a step (``to_device_async``), taken without a device sync, the rows and values the
boolean-mask version gave."""
from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest
import torch

from bitmind.training import TrainConfig
from bitmind.training.loop import batches_per_epoch, epoch_batches, join_batches, to_device_async
from bitmind.training.sweep import _Variant, sweep_train_loader
from bitmind.training.trainer import build_datasets, train_sampler
from test_generalisation import make_pools


def _batch(b: int = 12, n_items: int = 40, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, 3, 8, 8, generator=g)
    y = (torch.rand(b, generator=g) > 0.5).float()
    k = torch.randperm(n_items, generator=g)[:b]
    t = torch.randn(b, generator=g)
    return x, y, k, t


def _owner(mask, share_multiple: int = 1):
    """What ``_Variant.select`` reads of its variant: the mask and the config."""
    return SimpleNamespace(mask=mask, cfg=TrainConfig(share_multiple=share_multiple))


def test_select_takes_the_rows_of_the_variants_subset_in_batch_order():
    x, y, k, t = _batch()
    mask = torch.zeros(40, dtype=torch.bool)
    mask[::3] = True
    mask[k[:4]] = True  # at least four rows of this batch are in the subset
    keep = mask[k]
    got_x, got_y, got_t, got_k, got_h = _Variant.select(_owner(mask), x, y, k, t)
    assert got_h is None  # no processing history given, none made up
    assert torch.equal(got_x, x[keep]) and torch.equal(got_y, y[keep]) and torch.equal(got_t, t[keep])
    assert torch.equal(got_k, k[keep]) and bool(mask[got_k].all()) and len(got_k) == int(keep.sum()) < len(k)
    assert _Variant.select(_owner(mask), x, y, k, None)[2] is None


def test_select_skips_a_batch_with_under_two_rows_and_keeps_all_without_a_mask():
    x, y, k, t = _batch()
    one = torch.zeros(40, dtype=torch.bool)
    one[k[5]] = True
    assert _Variant.select(_owner(one), x, y, k, t) is None
    whole = _Variant.select(_owner(None), x, y, k, t)
    assert whole[0] is x and whole[3] is k


def test_to_device_async_gives_the_same_values():
    t = torch.arange(10)
    out = to_device_async(t, torch.device("cpu"))
    assert torch.equal(out, t) and out.device.type == "cpu"
    if torch.cuda.is_available():  # pragma: no cover - CI has no GPU
        assert torch.equal(to_device_async(t, torch.device("cuda")).cpu(), t)


def test_select_cuts_the_share_to_a_multiple_for_few_shapes():
    """``share_multiple``: the first rows of the share, in a multiple of m (cuDNN autotuning then
    meets few batch sizes); a share smaller than m is kept whole."""
    x, y, k, t = _batch(b=40, n_items=40)
    mask = torch.ones(40, dtype=torch.bool)
    mask[k[:5]] = False  # 35 of the batch's 40 rows
    full = _Variant.select(_owner(mask), x, y, k, t)
    cut = _Variant.select(_owner(mask, 8), x, y, k, t)
    assert len(full[3]) == 35 and len(cut[3]) == 32
    assert all(torch.equal(c, f[:32]) for c, f in zip(cut, full) if f is not None)
    assert cut[4] is None and full[4] is None  # no processing history given
    few = torch.zeros(40, dtype=torch.bool)
    few[k[:5]] = True
    assert len(_Variant.select(_owner(few, 8), x, y, k, t)[3]) == 5
    with pytest.raises(ValueError, match="share_multiple"):
        TrainConfig(share_multiple=0).check()


# ---------------------------------------------------------------------------- loader parts
def test_loader_batch_takes_the_largest_part_count_that_divides_the_batch():
    assert TrainConfig(batch_size=256, workers=4).loader_batch() == (64, 4)
    assert TrainConfig(batch_size=256, workers=4, loader_parts=1).loader_batch() == (256, 1)
    assert TrainConfig(batch_size=6, workers=4, loader_parts=4).loader_batch() == (2, 3)
    assert TrainConfig(batch_size=7, workers=4, loader_parts=4).loader_batch() == (7, 1)
    assert TrainConfig(batch_size=2, workers=4, loader_parts=4).loader_batch() == (1, 2)
    assert TrainConfig(batch_size=256, workers=0).loader_batch() == (256, 1)  # no worker to wait for
    with pytest.raises(ValueError, match="loader_parts"):
        TrainConfig(loader_parts=0).check()


def _epoch(cfg: TrainConfig, train, epoch: int = 0) -> list:
    loader = sweep_train_loader(cfg, train, train_sampler(cfg, train), torch.device("cpu"))
    train.set_epoch(epoch)
    return [join_batches(g, torch.device("cpu"), cfg.channels_last) for g in epoch_batches(loader, cfg, epoch)]


@pytest.mark.parametrize("samples", [24, 27])
def test_batches_built_in_parts_are_the_batches_built_whole(tmp_path, samples):
    """Same sampler draws, same augmentation per item and epoch: joined parts give the very
    batches (images, labels, keys, in order); with 27 draws the last short batch is dropped
    either way (``drop_last``), not kept as a short group of parts."""
    pools = make_pools(tmp_path)
    base = TrainConfig(data=[str(pools["crops"]), str(pools["aligned"])], challenge_data=[str(pools["chal"])], balance="family",
                       pair_aligned=True, samples_per_epoch=samples, batch_size=8, workers=1, seed=3)
    train, _, _ = build_datasets(base)
    whole = _epoch(dataclasses.replace(base, loader_parts=1), train, epoch=1)
    parts = _epoch(dataclasses.replace(base, loader_parts=4), train, epoch=1)
    assert len(whole) == len(parts) == 3
    for (xw, yw, kw, bw), (xp, yp, kp, bp) in zip(whole, parts):
        assert xw.shape == (8, 3, 256, 256) and torch.equal(xw, xp) and torch.equal(yw, yp) and torch.equal(kw, kp)
        assert bw == bp == 0
    assert not torch.equal(whole[0][0], _epoch(dataclasses.replace(base, loader_parts=4), train, epoch=2)[0][0])


def test_epoch_batches_leave_out_unreadable_parts_and_cap_the_steps():
    cfg = TrainConfig(batch_size=4, workers=2, loader_parts=2, max_steps_per_epoch=2, progress=False)
    part = lambda v: (torch.full((2, 3, 4, 4), v, dtype=torch.uint8), torch.ones(2), torch.tensor([v, v]), 0)  # noqa: E731
    batches = [part(1), None, part(2), part(3), part(4), part(5), part(6)]

    class Loader(list):
        drop_last = True

    assert batches_per_epoch(Loader(batches), cfg) == 2  # capped
    assert batches_per_epoch(Loader(batches), dataclasses.replace(cfg, max_steps_per_epoch=0)) == 3  # 7 parts, pairs
    groups = list(epoch_batches(Loader(batches), cfg, 0))
    assert len(groups) == 2 and len(groups[0]) == 1 and len(groups[1]) == 2  # [1, None] -> [1]; [2, 3]; capped at 2
    x, y, k, bad = join_batches(groups[1], torch.device("cpu"), False)
    assert x.shape == (4, 3, 4, 4) and x.dtype == torch.float32 and torch.equal(k, torch.tensor([2, 2, 3, 3]))
    assert float(x.max()) == pytest.approx(3 / 255) and len(y) == 4 and bad == 0


def test_a_part_of_nothing_but_unreadable_pictures_is_counted_as_skipped():
    """A loader part whose pictures all fail to read is None, and its count went with it: the
    epoch said "skipped 4" where 10 pictures were skipped (operator audit)."""
    cfg = TrainConfig(batch_size=4, workers=2, loader_parts=2, progress=False)
    part = lambda v, bad=0: (torch.full((2, 3, 4, 4), v, dtype=torch.uint8), torch.ones(2), torch.tensor([v, v]), bad)  # noqa: E731

    class Loader(list):
        drop_last = True

    lost = [0]
    groups = list(epoch_batches(Loader([part(1, bad=1), None, None, None, part(2), part(3)]), cfg, 0, unreadable=lost))
    assert [len(g) for g in groups] == [1, 2] and lost == [6]  # three parts of 2 left out
    assert sum(join_batches(g, torch.device("cpu"), False)[3] for g in groups) == 1  # a kept part's own count


def test_workers_beyond_the_machines_cores_are_not_started(monkeypatch, caplog):
    """``--workers 4`` (the default) on a 2-core machine starts 2: torch warned twice an
    epoch about the extra ones, which only queue for the same cores."""
    import os

    import bitmind.training.trainer as trainer

    monkeypatch.setattr(trainer, "usable_cpus", lambda: 2)
    with caplog.at_level("INFO", logger="bitmind.training.trainer"):
        kw = trainer.loader_kwargs(TrainConfig(workers=4), torch.device("cpu"))
    assert kw["num_workers"] == 2 and kw["persistent_workers"] and kw["prefetch_factor"] == 4
    assert "--workers 4: using 2" in caplog.text
    caplog.clear()
    assert trainer.loader_kwargs(TrainConfig(workers=2), torch.device("cpu"))["num_workers"] == 2
    kw0 = trainer.loader_kwargs(TrainConfig(workers=0), torch.device("cpu"))
    assert kw0["num_workers"] == 0 and not kw0["persistent_workers"] and "prefetch_factor" not in kw0
    assert caplog.text == ""  # nothing capped, nothing said
    monkeypatch.undo()
    assert 1 <= trainer.usable_cpus() <= (os.cpu_count() or 1)


def test_the_worker_count_does_not_change_the_batches(tmp_path, monkeypatch):
    """Capping the workers to the cores is safe because each picture's augmentation is drawn
    from (seed, epoch, index), not from the worker that reads it."""
    import bitmind.training.trainer as trainer

    monkeypatch.setattr(trainer, "usable_cpus", lambda: 4)  # two workers really start, on any machine
    pools = make_pools(tmp_path)
    base = TrainConfig(data=[str(pools["crops"])], samples_per_epoch=16, batch_size=8, workers=1, loader_parts=1, seed=5)
    train, _, _ = build_datasets(base)
    one = _epoch(base, train, epoch=1)
    two = _epoch(dataclasses.replace(base, workers=2, loader_parts=2), train, epoch=1)
    assert len(one) == len(two) >= 2
    for (x1, y1, k1, _), (x2, y2, k2, _) in zip(one, two):
        assert torch.equal(x1, x2) and torch.equal(y1, y2) and torch.equal(k1, k2)
