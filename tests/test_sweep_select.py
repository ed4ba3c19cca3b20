"""A sweep variant's share of a shared batch (``_Variant.select``) and the small copies of a
training step (``to_device_async``): taken without a device sync since the fifteenth session,
they must give exactly the rows and values the boolean-mask version gave."""
from __future__ import annotations

from types import SimpleNamespace

import torch

from bitmind.training.loop import to_device_async
from bitmind.training.sweep import _Variant


def _batch(b: int = 12, n_items: int = 40, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, 3, 8, 8, generator=g)
    y = (torch.rand(b, generator=g) > 0.5).float()
    k = torch.randperm(n_items, generator=g)[:b]
    t = torch.randn(b, generator=g)
    return x, y, k, t


def test_select_takes_the_rows_of_the_variants_subset_in_batch_order():
    x, y, k, t = _batch()
    mask = torch.zeros(40, dtype=torch.bool)
    mask[::3] = True
    mask[k[:4]] = True  # at least four rows of this batch are in the subset
    keep = mask[k]
    got_x, got_y, got_t, got_k = _Variant.select(SimpleNamespace(mask=mask), x, y, k, t)
    assert torch.equal(got_x, x[keep]) and torch.equal(got_y, y[keep]) and torch.equal(got_t, t[keep])
    assert torch.equal(got_k, k[keep]) and bool(mask[got_k].all()) and len(got_k) == int(keep.sum()) < len(k)
    assert _Variant.select(SimpleNamespace(mask=mask), x, y, k, None)[2] is None


def test_select_skips_a_batch_with_under_two_rows_and_keeps_all_without_a_mask():
    x, y, k, t = _batch()
    one = torch.zeros(40, dtype=torch.bool)
    one[k[5]] = True
    assert _Variant.select(SimpleNamespace(mask=one), x, y, k, t) is None
    whole = _Variant.select(SimpleNamespace(mask=None), x, y, k, t)
    assert whole[0] is x and whole[3] is k


def test_to_device_async_gives_the_same_values():
    t = torch.arange(10)
    out = to_device_async(t, torch.device("cpu"))
    assert torch.equal(out, t) and out.device.type == "cpu"
    if torch.cuda.is_available():  # pragma: no cover - CI has no GPU
        assert torch.equal(to_device_async(t, torch.device("cuda")).cpu(), t)
