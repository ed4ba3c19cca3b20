"""Per-miner accounting for logs and the harness table: accuracy overall and per
class, latency (mean, p95) of answered challenges, and failures by kind.

Kept apart from ``scores`` on purpose: scores are the moving average the validator
turns into weights; these are plain counts, for humans, over a run.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from bitmind.validator.query import MinerResponse
from bitmind.validator.rewards import valid_prediction


@dataclass
class MinerTally:
    """What one miner answered during a validator run (the miner side keeps its own serving
    counters in ``bitmind.miner.handlers.MinerStats``)."""

    uid: int
    name: str = ""
    n: int = 0
    correct: int = 0
    n_real: int = 0
    correct_real: int = 0
    n_fake: int = 0
    correct_fake: int = 0
    timeouts: int = 0  # no answer in time (HTTP 408)
    errors: int = 0  # refused, unreachable, HTTP error, malformed body, not serving
    invalid: int = 0  # answered, but NaN / outside [0, 1]
    latencies: list[float] = field(default_factory=list)

    def add(self, response: MinerResponse, label: int, reward: float) -> None:
        ok = reward > 0
        self.n += 1
        self.correct += ok
        if label == 0:
            self.n_real += 1
            self.correct_real += ok
        else:
            self.n_fake += 1
            self.correct_fake += ok
        if response.prediction is None:
            if response.status_code == 408:
                self.timeouts += 1
            else:
                self.errors += 1
        elif not valid_prediction(response.prediction):
            self.invalid += 1
        if response.latency is not None and response.prediction is not None:
            self.latencies.append(float(response.latency))

    @property
    def failures(self) -> int:
        return self.timeouts + self.errors + self.invalid

    @staticmethod
    def _ratio(a: int, b: int) -> float | None:
        return a / b if b else None

    def summary(self) -> dict:
        lat = np.asarray(self.latencies, dtype=np.float64)
        return {
            "uid": self.uid, "name": self.name, "challenges": self.n,
            "accuracy": self._ratio(self.correct, self.n),
            "real_accuracy": self._ratio(self.correct_real, self.n_real),
            "fake_accuracy": self._ratio(self.correct_fake, self.n_fake),
            "latency_mean_ms": float(lat.mean() * 1000) if lat.size else None,
            "latency_p95_ms": float(np.percentile(lat, 95) * 1000) if lat.size else None,
            "failures": self.failures, "timeouts": self.timeouts, "errors": self.errors, "invalid": self.invalid,
        }


class RunStats:
    """MinerTally for every miner queried in a run."""

    def __init__(self, names: dict[int, str] | None = None):
        # Shared, not copied: the validator refreshes names (hotkey prefixes) on metagraph syncs.
        self.names = names if names is not None else {}
        self.miners: dict[int, MinerTally] = {}
        self.challenges = 0
        self.labels = {0: 0, 1: 0}

    def add_round(self, label: int, responses: list[MinerResponse], rewards) -> None:
        self.challenges += 1
        self.labels[label] += 1
        for resp, r in zip(responses, rewards):
            st = self.miners.get(resp.uid)
            if st is None:
                st = self.miners[resp.uid] = MinerTally(resp.uid, self.names.get(resp.uid, ""))
            st.add(resp, label, float(r))

    def summaries(self, scores=None) -> list[dict]:
        out = []
        for uid in sorted(self.miners):
            s = self.miners[uid].summary()
            if scores is not None and uid < len(scores):
                s["score"] = float(scores[uid])
            out.append(s)
        return out

    def table(self, scores=None) -> str:
        return format_table(self.summaries(scores))


def _fmt(v, pct: bool = False, digits: int = 1) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{100 * v:.{digits}f}%" if pct else f"{v:.{digits}f}"


def format_table(rows: list[dict]) -> str:
    """Plain-text table of ``MinerTally.summary`` rows (plus ``score`` if present)."""
    head = ["uid", "miner", "n", "acc", "real acc", "fake acc", "mean ms", "p95 ms", "fail", "score"]
    body = [[str(r["uid"]), r.get("name") or "-", str(r["challenges"]), _fmt(r["accuracy"], True),
             _fmt(r["real_accuracy"], True), _fmt(r["fake_accuracy"], True), _fmt(r["latency_mean_ms"]),
             _fmt(r["latency_p95_ms"]),
             f"{r['failures']}" + (f" (t{r['timeouts']}/e{r['errors']}/i{r['invalid']})" if r["failures"] else ""),
             _fmt(r.get("score"), digits=3)] for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(head)]
    line = lambda cells: "  ".join(c.rjust(w) if i not in (1,) else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([line(head), line(["-" * w for w in widths])] + [line(b) for b in body])
