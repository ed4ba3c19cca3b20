"""Challenge generation: draw a real or fake image, transform it as a validator does,
and wrap it in an ``ImageSynapse``.

Each challenge is real or fake with probability 0.5 (``fake_prob``), then a source is
picked uniformly among the sources of that class (a source is a ``CLASS/SOURCE``
folder or a dataset), then an image uniformly within it, so that one large source does
not drown the others (SN34 picks a dataset first, too). An unreadable image is logged
and dropped from the pool, and another is drawn. The image goes through ``ValidatorPipeline`` geometry
(random augmentation for most challenges, base transforms only for ``plain_share`` of
them) and is JPEG-encoded once at quality 75 into the synapse: that encoding *is* the
JPEG round trip the miner sees.

``split`` restricts the pool to one split of the data, chosen by picture stem exactly as
the trainer and ``bitmind.eval`` split it, so a model can be challenged on pictures it
never trained on.

Every random choice comes from one ``random.Random(seed)``, so a seed fixes the whole
challenge sequence (useful for comparing miners or models on identical challenges).
"""
from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from typing import Sequence

from bitmind.common import PLAIN_SHARE
from bitmind.data import SPLITS, ImageSource, open_source, split_indices
from bitmind.image_transforms import VALIDATOR_JPEG_QUALITY, ValidatorPipeline
from bitmind.protocol import ImageSynapse, prepare_image_synapse

logger = logging.getLogger(__name__)

LABEL_NAMES = {0: "real", 1: "fake"}


@dataclass
class Challenge:
    """One challenge: the synapse to send and what the validator knows about it."""

    synapse: ImageSynapse
    label: int  # 0 real, 1 fake
    source: str  # e.g. "fake/sdxl"
    item: str  # file path or dataset[index]: where the image came from
    plain: bool  # True: base transforms only; False: random augmentation
    index: int = 0  # position in the challenge sequence


@dataclass
class ChallengeGenerator:
    """Draws challenges from ``sources`` with a seeded RNG."""

    sources: Sequence[ImageSource]
    plain_share: float = PLAIN_SHARE
    fake_prob: float = 0.5
    jpeg_quality: int = VALIDATOR_JPEG_QUALITY
    seed: int | None = None
    max_retries: int = 20
    split: str | None = None  # only this split of the data ("train"/"val"/"test", by picture stem, as the trainer splits)
    split_seed: int = 0
    rng: random.Random = field(init=False, repr=False)

    def __post_init__(self):
        if not self.sources:
            raise ValueError("no data sources given")
        if not 0.0 <= self.plain_share <= 1.0 or not 0.0 <= self.fake_prob <= 1.0:
            raise ValueError("plain_share and fake_prob must be in [0, 1]")
        self.rng = random.Random(self.seed)
        # by_label[label] = {source name ("fake/sdxl"): [(source object, index), ...]}; a source
        # is a CLASS/SOURCE folder or a dataset, however the sources were passed in.
        self.by_label: dict[int, dict[str, list[tuple[ImageSource, int]]]] = {0: {}, 1: {}}
        if self.split is not None and self.split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {self.split!r}")
        for src in self.sources:
            indices = split_indices(src, seed=self.split_seed)[self.split] if self.split else range(len(src))
            for i in indices:
                label = int(src.label(i))
                self.by_label[label].setdefault(src.source_name(i), []).append((src, i))
        for label, name in LABEL_NAMES.items():
            groups = self.by_label[label]
            logger.info("challenge pool: %d %s images in %d sources", sum(map(len, groups.values())), name, len(groups))
        if not self.by_label[0] and not self.by_label[1]:
            raise ValueError("the data sources hold no images" + (f" in split {self.split!r}" if self.split else ""))
        self._names = {label: sorted(groups) for label, groups in self.by_label.items()}  # fixed order: seedable
        self._count = 0

    @classmethod
    def from_specs(cls, specs: Sequence[str], **kw) -> "ChallengeGenerator":
        """Build from command-line data specs (folders or ``hf:NAME[:real|fake]``)."""
        return cls([open_source(s) for s in specs], **kw)

    def _draw_label(self) -> int:
        label = 1 if self.rng.random() < self.fake_prob else 0
        if not self._names[label]:  # only one class available: use it
            label = 1 - label
        return label

    def _drop(self, label: int, name: str, entry) -> None:
        """Forget an unreadable item, so a broken file costs one retry, not one per draw."""
        items = self.by_label[label][name]
        items.remove(entry)
        if not items:
            del self.by_label[label][name]
            self._names[label].remove(name)

    def next(self) -> Challenge:
        """The next challenge. Unreadable images are logged, dropped from the pool and redrawn."""
        pipeline_aug = ValidatorPipeline(plain_share=0.0, jpeg_quality=None)
        pipeline_plain = ValidatorPipeline(plain_share=1.0, jpeg_quality=None)
        last_error: Exception | None = None
        for _ in range(self.max_retries):
            if not self._names[0] and not self._names[1]:
                break
            label = self._draw_label()
            name = self._names[label][self.rng.randrange(len(self._names[label]))]
            items = self.by_label[label][name]
            src, i = entry = items[self.rng.randrange(len(items))]
            plain = self.rng.random() < self.plain_share
            try:
                img = src.load(i)
            except Exception as e:  # a bad file must not stop the validator
                last_error = e
                logger.warning("dropping unreadable image %s: %s", src.describe(i), e)
                self._drop(label, name, entry)
                continue
            img = (pipeline_plain if plain else pipeline_aug).apply(img, self.rng)
            synapse = prepare_image_synapse(img, quality=self.jpeg_quality)
            ch = Challenge(synapse=synapse, label=label, source=name, item=src.describe(i), plain=plain,
                           index=self._count)
            self._count += 1
            return ch
        raise RuntimeError(f"no readable image after {self.max_retries} tries (pool left: "
                           f"{sum(len(v) for g in self.by_label.values() for v in g.values())}); "
                           f"last unreadable: {last_error}")

    def take(self, k: int) -> list[Challenge]:
        return [self.next() for _ in range(k)]
