"""The torch Dataset used by training and evaluation.

Each item is ``(tensor, label, index)`` (with ``history``: and the processing-history
targets of its augmentation, ``history_targets``); an unreadable file gives ``None`` and is
dropped by ``collate_skip_none`` (and counted), so one bad file never stops an epoch.
Augmentation randomness is derived from ``(seed, epoch, index)``: identical whatever the
number of workers, and reproducible by seed. The epoch lives in shared memory, so that
``set_epoch`` in the training loop reaches DataLoader workers that outlive an epoch
(``persistent_workers``): with a plain attribute they kept their copy's epoch 0 and drew
every picture's augmentation of the first epoch again in every epoch.
"""
from __future__ import annotations

import logging
import random
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torch.utils.data import Dataset, Sampler, WeightedRandomSampler
from torch.utils.data._utils.collate import default_collate

from bitmind.data.families import family_weights, is_aligned
from bitmind.data.sources import ImageSource
from bitmind.image_transforms import base_pil, history_targets, to_tensor

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AsIs:
    """The augmentation for images that already are what a validator sends (e.g. the
    ``sn34-validator`` challenges): base transforms only (a no-op on 256 px files), so a
    challenge is never sent through the validator pipeline a second time."""

    def __call__(self, img, rng: random.Random):
        return base_pil(img)


@dataclass(frozen=True)
class FlipOnly:
    """Light training augmentation for ready-made challenges: a random horizontal flip
    (validators flip too), nothing that re-samples or re-encodes the pixels."""

    def __call__(self, img, rng: random.Random):
        img = base_pil(img)
        return img.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else img


class DetectionDataset(Dataset):
    """Items of one or more sources, optionally augmented (``augment(pil, rng) -> pil``).

    ``augment_for`` maps a source object to its own augmentation (augmentation per
    source: ready-made validator challenges get ``AsIs``/``FlipOnly``, crops the full
    training augmentation); sources not in it use ``augment``."""

    def __init__(self, items: Sequence[tuple[ImageSource, int]], augment: Callable | None = None, seed: int = 0,
                 uint8: bool = False, augment_for: dict | None = None, history: bool = False):
        self.items = list(items)
        self.history = history  # items carry their processing history (``TrainConfig.history_weight``)
        self.uint8 = uint8  # return uint8 CHW tensors (4x less to copy; the trainer scales on the GPU)
        self.augment = augment
        self.augment_for = dict(augment_for or {})
        self.partner: dict[int, int] = {}  # item -> the item whose random draws and augmentation it shares
        self.seed = seed
        # shared with the DataLoader's worker processes (forked or spawned): see the module docstring
        self._epoch = torch.zeros(1, dtype=torch.int64).share_memory_()
        self.bad: set[int] = set()  # items that failed to load (per process): skipped without re-reading

    @classmethod
    def from_sources(cls, sources_and_indices, **kw) -> "DetectionDataset":
        items = [(src, i) for src, idx in sources_and_indices for i in idx]
        return cls(items, **kw)

    @property
    def epoch(self) -> int:
        return int(self._epoch[0])

    def set_epoch(self, epoch: int) -> None:
        """The epoch the next items are drawn for; seen by running workers too (shared memory).
        Call it before iterating the loader: workers prefetch once the iteration starts."""
        self._epoch[0] = int(epoch)

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
        k = self.partner.get(k, k)
        return random.Random(hash((self.seed, self.epoch, k)) & 0xFFFFFFFFFFFF)

    def pair_with(self, partners: Sequence[int]) -> None:
        """Each item with a partner (>= 0) is augmented exactly like it: same augmentation,
        same random draws (rotation, crop, flips, JPEG quality). An aligned round trip and
        its real photo then differ only by the decoder, also after augmentation."""
        self.partner = {k: int(p) for k, p in enumerate(partners) if p >= 0}

    def __getitem__(self, k: int):
        src, i = self.items[k]
        if k in self.bad:
            return None
        try:
            if self.history:
                img, history = self.transform_with_history(src.load(i), k)
            else:
                img = self.transform(src.load(i), k)
            x = TF.pil_to_tensor(img) if self.uint8 else to_tensor(img)
            if self.history:
                return x, src.label(i), k, torch.tensor(history_targets(history), dtype=torch.float32)
            return x, src.label(i), k
        except Exception as e:  # unreadable / corrupt file: skip, never crash the epoch
            self.bad.add(k)
            logger.warning("skipping unreadable image %s: %s", src.describe(i), e)
            return None

    def augment_of(self, k: int) -> Callable | None:
        """The augmentation item ``k`` gets (its partner's, else its source's own, else the dataset's)."""
        return self.augment_for.get(self.items[self.partner.get(k, k)][0], self.augment)

    def transform(self, img, k: int):
        """PIL image of item ``k`` -> 256x256 PIL (augmented when an augment is set)."""
        aug = self.augment_of(k)
        return aug(img, self.rng_for(k)) if aug else base_pil(img)

    def transform_with_history(self, img, k: int) -> tuple:
        """``transform`` and what it did to the picture (``TrainAugment.with_history``), or None
        where that is not known: an augmentation that keeps no history (``AsIs``/``FlipOnly`` on
        pictures that already are validator challenges, resized before they reached us)."""
        aug = self.augment_of(k)
        if aug is None:
            return base_pil(img), None
        if hasattr(aug, "with_history"):
            return aug.with_history(img, self.rng_for(k))
        return aug(img, self.rng_for(k)), None

    def summary(self) -> str:
        c = Counter(self.source_names())
        lab = Counter(self.labels())
        lines = [f"  {name:<32} {n:>7}" for name, n in sorted(c.items())]
        lines.append(f"  {'total':<32} {len(self):>7}  (real {lab.get(0, 0)}, fake {lab.get(1, 0)})")
        return "\n".join(lines)


def worker_init(_worker_id: int) -> None:
    """DataLoader workers: one torch thread each, or N workers x N threads thrash the CPU.
    They ignore SIGINT: Ctrl-C in a terminal reaches the whole process group, and a worker
    started by spawn (macOS, Windows) would die of it, failing the epoch the trainer was asked
    to finish and save (``GracefulStop``), while one forked after that handler was installed
    would run it too (its message once per worker); the main process decides, and its exit
    ends the workers. A SIGTERM sent to every process of the run (``timeout``, ``systemctl
    stop``), which the trainer takes as a first Ctrl-C, is left to it likewise
    (``leave_sigterm_to_parent``)."""
    import signal

    from bitmind.shutdown import leave_sigterm_to_parent

    torch.set_num_threads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    leave_sigterm_to_parent()


def collate_skip_none(batch):
    """Collate, dropping items that failed to load: ``(x, y, keys, n_bad)``, and the processing
    histories after them when the items carry them (``DetectionDataset.history``); None for an
    all-bad batch."""
    good = [b for b in batch if b is not None]
    if not good:
        return None
    if len(good[0]) == 4:  # items with their processing history (``DetectionDataset.history``): after the count
        x, y, k, h = default_collate(good)
        return x, y.float(), k, len(batch) - len(good), h
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


def aligned_partners(dataset: DetectionDataset) -> list[int]:
    """For each item, the index of its real partner if it is an aligned round trip
    (``fake/aligned-*/NAME`` and ``real/*/NAME``: same file name), else -1. A name that
    several real items share is ambiguous and left unpaired."""
    real_by_name: dict[str, int] = {}
    ambiguous: set[str] = set()
    names = []
    for k, (src, i) in enumerate(dataset.items):
        name = src.describe(i).replace("\\", "/").rsplit("/", 1)[-1]
        names.append(name)
        if src.label(i) == 0:
            if name in real_by_name:
                ambiguous.add(name)
            real_by_name[name] = k
    out = []
    for k, (src, i) in enumerate(dataset.items):
        ok = is_aligned(src.source_name(i)) and names[k] in real_by_name and names[k] not in ambiguous
        out.append(real_by_name[names[k]] if ok else -1)
    return out


class FamilySampler(Sampler):
    """Draws ``num_samples`` items per epoch with replacement, weighted by
    ``bitmind.data.families.family_weights``: half real, half fake; each family of a class
    equally often (or in proportion to ``family_share``), each source of a family equally often.

    With ``partners`` (see ``aligned_partners``), every drawn aligned round trip is
    followed by its real photo, and other draws come in twos: every pair sits at an even
    position, so with an even batch size a real photo and its round trip always share a
    batch and the only difference inside the pair is the decoder (up to the training patch:
    ``pair_patches`` crops them alike, ``bitmind.training.loop.Learner.crop``). The photos
    that come with their round trips count against their own share: each photo is drawn
    directly with its family weight less the weights of its round trips, so the shares
    above hold for what the model sees (a photo whose round trips alone exceed its share is
    never drawn directly; ``overdrawn`` counts them, and ``draw_shares`` says what an epoch
    then really holds)."""

    def __init__(self, labels: Sequence[int], sources: Sequence[str], seed: int = 0, num_samples: int | None = None,
                 partners: Sequence[int] | None = None, family_share: dict[str, float] | None = None):
        weights = torch.tensor(family_weights(labels, sources, family_share), dtype=torch.double)
        self.overdrawn = 0
        self.followed = None  # per real photo, the draw weight of the round trips it follows
        if partners is not None:
            direct, self.followed = weights.clone(), torch.zeros_like(weights)
            for k, p in enumerate(partners):
                if p >= 0:
                    direct[p] -= weights[k]
                    self.followed[p] += weights[k]
            self.overdrawn = int((direct < 0).sum())
            if self.overdrawn:
                logger.warning("%d real photos come with their round trips more often than their family share", self.overdrawn)
            weights = direct.clamp_(min=0.0)
        self.weights = weights
        self.num_samples = int(num_samples or len(labels))
        self.partners = list(partners) if partners is not None else None
        self.generator = torch.Generator().manual_seed(seed)

    def draw_shares(self) -> torch.Tensor:
        """Each item's expected share of the items an epoch yields (sums to 1): its direct
        draws plus, for a real photo, the draws of the round trips it follows.

        Why: with pairs, ``weights`` are direct draw weights, not what the model sees, and a
        photo whose round trips alone exceed its share (``overdrawn``) comes more often than
        its family weight says, which shifts its class's family shares and the real/fake
        balance. These are the shares the training log reports."""
        shares = self.weights if self.followed is None else self.weights + self.followed
        return shares / shares.sum()

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self):
        draws = torch.multinomial(self.weights, self.num_samples, replacement=True, generator=self.generator).tolist()
        if self.partners is None:
            yield from draws
            return
        out, single = [], None
        for i in draws:
            if self.partners[i] >= 0:
                out += [i, self.partners[i]]
            elif single is None:
                single = i
            else:
                out += [single, i]
                single = None
            if len(out) >= self.num_samples:
                break
        if single is not None and len(out) < self.num_samples:
            out.append(single)
        yield from out[:self.num_samples]
