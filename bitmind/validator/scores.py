"""Moving-average miner scores, normalised weights, and crash-safe persistence.

Each challenge updates the queried miners' scores with an exponential moving average
``score = alpha * reward + (1 - alpha) * score`` (alpha 0.1 by default, as SN34), so a
miner's score tracks its recent accuracy and one lucky or unlucky answer moves it
little. Scores are indexed by UID but remembered with the hotkey that held the UID:
when a UID changes hands (deregistration, new registration) the newcomer starts at 0
instead of inheriting someone else's record.

Persistence is one small JSON file written atomically (temp file in the same folder,
fsync, rename), saved after every round: a ``kill -9`` at any moment leaves either
the previous or the new file, never half of one, so at most the current round is lost.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from bitmind.common import atomic_write_text

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
DEFAULT_ALPHA = 0.1


class ScoreBook:
    """Scores per UID, with the hotkey each score belongs to."""

    def __init__(self, n: int = 0, alpha: float = DEFAULT_ALPHA, hotkeys: Sequence[str | None] | None = None):
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        self.alpha = float(alpha)
        self.scores = np.zeros(n, dtype=np.float64)
        self.hotkeys: list[str | None] = list(hotkeys) if hotkeys is not None else [None] * n
        if len(self.hotkeys) != n:
            raise ValueError("hotkeys must have one entry per uid")
        self.step = 0  # number of updates applied (challenges scored)

    def __len__(self) -> int:
        return len(self.scores)

    # ------------------------------------------------------------------ membership
    def sync(self, hotkeys: Sequence[str]) -> list[int]:
        """Resize to the metagraph's UIDs; reset every UID whose hotkey changed.

        Returns the UIDs that were reset (new or replaced miners).
        """
        n = len(hotkeys)  # grow with zeros and no hotkey, or shrink
        self.scores = np.concatenate([self.scores[:n], np.zeros(max(n - len(self.scores), 0))])
        self.hotkeys = (self.hotkeys + [None] * n)[:n]
        reset = []
        for uid, hk in enumerate(hotkeys):
            if self.hotkeys[uid] != hk:
                if self.hotkeys[uid] is not None:
                    logger.info("uid %d changed hotkey %s -> %s: score reset", uid, self.hotkeys[uid], hk)
                self.scores[uid] = 0.0
                self.hotkeys[uid] = hk
                reset.append(uid)
        return reset

    # ------------------------------------------------------------------ scoring
    def update(self, uids: Iterable[int], rewards: Iterable[float]) -> None:
        """Moving-average update of ``uids`` with their ``rewards`` (NaN counts as 0)."""
        uids = np.asarray(list(uids), dtype=np.int64)
        r = np.asarray(list(rewards), dtype=np.float64)
        if uids.shape != r.shape:
            raise ValueError(f"{len(uids)} uids but {len(r)} rewards")
        if uids.size == 0:
            return
        if uids.min() < 0 or uids.max() >= len(self.scores):
            raise IndexError(f"uid out of range 0..{len(self.scores) - 1}: {uids.tolist()}")
        r = np.nan_to_num(r, nan=0.0, posinf=0.0, neginf=0.0)
        self.scores[uids] = self.alpha * r + (1.0 - self.alpha) * self.scores[uids]
        self.step += 1

    def weights(self, exclude: Iterable[int] = ()) -> np.ndarray:
        """Scores normalised to sum 1 (all zeros when no miner has a positive score).

        ``exclude`` (e.g. the validator's own UID) gets weight 0.
        """
        w = np.clip(np.nan_to_num(self.scores, nan=0.0), 0.0, None).copy()
        for uid in exclude:
            if 0 <= uid < len(w):
                w[uid] = 0.0
        total = w.sum()
        return w / total if total > 0 else np.zeros_like(w)

    # ------------------------------------------------------------------ persistence
    def to_dict(self) -> dict:
        return {"format_version": FORMAT_VERSION, "alpha": self.alpha, "step": self.step,
                "scores": [float(s) for s in self.scores], "hotkeys": list(self.hotkeys)}

    @classmethod
    def from_dict(cls, d: dict, alpha: float | None = None) -> "ScoreBook":
        if d.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"unknown score file format {d.get('format_version')!r}")
        scores = [float(s) for s in d["scores"]]
        if not all(math.isfinite(s) for s in scores):
            raise ValueError("score file holds non-finite scores")
        book = cls(len(scores), alpha=alpha if alpha is not None else d.get("alpha", DEFAULT_ALPHA), hotkeys=d["hotkeys"])
        book.scores[:] = scores
        book.step = int(d.get("step", 0))
        return book

    def save(self, path: str | os.PathLike) -> Path:
        """Write atomically: a crash leaves the old file or the new one, never a mix."""
        return atomic_write_text(path, json.dumps(self.to_dict()), durable=True)

    @classmethod
    def load(cls, path: str | os.PathLike, alpha: float = DEFAULT_ALPHA) -> "ScoreBook":
        """Restore from ``path``; a missing or unreadable file gives a fresh book.

        The configured ``alpha`` wins over the one stored in the file. An unreadable
        file is kept aside as ``<name>.corrupt`` for inspection rather than overwritten.
        """
        path = Path(path)
        if not path.exists():
            return cls(0, alpha=alpha)
        try:
            book = cls.from_dict(json.loads(path.read_text()), alpha=alpha)
        except (OSError, ValueError, KeyError, TypeError) as e:
            aside = path.with_name(path.name + ".corrupt")
            logger.error("cannot read score file %s (%s); starting from zero, old file kept as %s", path, e, aside)
            with contextlib.suppress(OSError):
                os.replace(path, aside)
            return cls(0, alpha=alpha)
        logger.info("restored scores for %d uids (step %d) from %s", len(book), book.step, path)
        return book
