"""The torch Dataset used by training and evaluation.

Each item is ``(tensor, label, index)``; an unreadable file gives ``None`` and is
dropped by ``collate_skip_none`` (and counted), so one bad file never stops an epoch.
Augmentation randomness is derived from ``(seed, epoch, index)``: identical whatever the
number of workers, and reproducible by seed.
"""
from __future__ import annotations

import logging
import random
from collections import Counter
from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, WeightedRandomSampler
from torch.utils.data._utils.collate import default_collate

from bitmind.data.sources import ImageSource
from bitmind.image_transforms import base_pil, to_tensor

logger = logging.getLogger(__name__)


class DetectionDataset(Dataset):
    """Items of one or more sources, optionally augmented (``augment(pil, rng) -> pil``)."""

    def __init__(self, items: Sequence[tuple[ImageSource, int]], augment: Callable | None = None, seed: int = 0,
                 uint8: bool = False):
        self.items = list(items)
        self.uint8 = uint8  # return uint8 CHW tensors (4x less to copy; the trainer scales on the GPU)
        self.augment = augment
        self.seed = seed
        self.epoch = 0
        self.bad: set[int] = set()  # items that failed to load (per process): skipped without re-reading

    @classmethod
    def from_sources(cls, sources_and_indices, **kw) -> "DetectionDataset":
        items = [(src, i) for src, idx in sources_and_indices for i in idx]
        return cls(items, **kw)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self):
        return len(self.items)

    def labels(self) -> list[int]:
        return [src.label(i) for src, i in self.items]

    def source_names(self) -> list[str]:
        return [src.source_name(i) for src, i in self.items]

    def describe(self, k: int) -> str:
        src, i = self.items[k]
        return src.describe(i)

    def rng_for(self, k: int) -> random.Random:
        return random.Random(hash((self.seed, self.epoch, k)) & 0xFFFFFFFFFFFF)

    def __getitem__(self, k: int):
        src, i = self.items[k]
        if k in self.bad:
            return None
        try:
            img = self.transform(src.load(i), k)
            x = pil_to_uint8_tensor(img) if self.uint8 else to_tensor(img)
            return x, src.label(i), k
        except Exception as e:  # unreadable / corrupt file: skip, never crash the epoch
            self.bad.add(k)
            logger.warning("skipping unreadable image %s: %s", src.describe(i), e)
            return None

    def transform(self, img, k: int):
        """PIL image of item ``k`` -> 256x256 PIL (augmented when an augment is set)."""
        return self.augment(img, self.rng_for(k)) if self.augment else base_pil(img)

    def summary(self) -> str:
        c = Counter(self.source_names())
        lab = Counter(self.labels())
        lines = [f"  {name:<32} {n:>7}" for name, n in sorted(c.items())]
        lines.append(f"  {'total':<32} {len(self):>7}  (real {lab.get(0, 0)}, fake {lab.get(1, 0)})")
        return "\n".join(lines)


def pil_to_uint8_tensor(img) -> torch.Tensor:
    """RGB PIL -> uint8 tensor (3, H, W) without a float copy."""
    return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()


def worker_init(_worker_id: int) -> None:
    """DataLoader workers: one torch thread each, or N workers x N threads thrash the CPU."""
    torch.set_num_threads(1)


def collate_skip_none(batch):
    """Collate, dropping items that failed to load; returns None for an all-bad batch."""
    good = [b for b in batch if b is not None]
    if not good:
        return None
    x, y, k = default_collate(good)
    return x, y.float(), k, len(batch) - len(good)


def balanced_sampler(labels: Sequence[int], seed: int = 0, num_samples: int | None = None) -> WeightedRandomSampler:
    """Sample both classes equally often (weights 1/count per class)."""
    counts = Counter(labels)
    weights = torch.tensor([1.0 / counts[y] for y in labels], dtype=torch.double)
    g = torch.Generator().manual_seed(seed)
    return WeightedRandomSampler(weights, num_samples or len(labels), replacement=True, generator=g)


def class_pos_weight(labels: Sequence[int]) -> float:
    """BCE ``pos_weight`` = #real / #fake, the loss-weighting alternative to sampling."""
    c = Counter(labels)
    return c.get(0, 1) / max(c.get(1, 1), 1)
