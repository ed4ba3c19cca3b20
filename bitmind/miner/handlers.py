"""The miner's axon handlers: forward, blacklist and priority for ``ImageSynapse``.

Kept apart from ``neurons/miner.py`` so they can be tested without a network: a
``MinerHandlers`` needs only a predictor (``Predictor`` or anything with
``predict_b64_async(b64, priority=...)``) and a metagraph-like object (``hotkeys``, ``S``,
``validator_permit``), which may be swapped at any time by assigning
``handlers.metagraph`` (the neuron re-syncs into a fresh metagraph and swaps it in one
assignment, so a request never sees half-updated arrays).

Why each rule:

* forward never raises and never blocks the event loop: decoding runs in a worker
  thread and inference on the predictor's batching thread; any failure (bad payload,
  overload, model error) answers ``-1.0`` — the protocol's "no prediction" — and the
  cause is logged, so one bad request cannot take the axon down. A request is given up
  when its caller's ``timeout`` has passed (``answer_within``): the answer would reach
  nobody, and one still queued then costs no forward.
* blacklist checks registration *first* (a membership test), before any index lookup,
  so an unknown hotkey is refused cleanly instead of raising inside the axon; then,
  by default, refuses registered callers without a validator permit: only validators
  score miners, anyone else is spending our compute.
* priority is the caller's stake, so under load the validators that weigh most are
  served first: the predictor's queue orders by it (``forward`` passes it on; the axon's
  own priority step orders nothing), and a full queue refuses its lightest request first.

NOTE: no ``from __future__ import annotations`` here — ``bt.Axon.attach`` compares the
handlers' signatures with real classes (``ImageSynapse``, ``Tuple[bool, str]``).
"""
import asyncio
import logging
import math
import threading
from typing import Any, Optional, Tuple

from bitmind.image_io import ImageDecodeError
from bitmind.miner.batching import Overloaded
from bitmind.protocol import ImageSynapse

logger = logging.getLogger(__name__)

NO_PREDICTION = -1.0
#: Seconds a request may take when its synapse names no usable timeout (the dendrite's default).
DEFAULT_TIMEOUT = 12.0


def answer_within(synapse: ImageSynapse) -> float:
    """How long the caller waits for this answer: the synapse's ``timeout`` (set by the
    validator's dendrite), else ``DEFAULT_TIMEOUT``. Why: the axon does not cancel a handler
    whose caller gave up, so a request that timed out while queued still cost a forward and
    was counted as served, and under load such dead requests kept the workers from fresh ones
    (operator review); past this time the answer reaches nobody."""
    try:
        t = float(getattr(synapse, "timeout", None))
    except (TypeError, ValueError):
        return DEFAULT_TIMEOUT
    return t if math.isfinite(t) and t > 0 else DEFAULT_TIMEOUT


class MinerStats:
    """Thread-safe request counters for the status line."""

    FIELDS = ("requests", "served", "bad_input", "overloaded", "timed_out", "cancelled", "errors", "blacklisted")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = {k: 0 for k in self.FIELDS}

    def inc(self, key: str) -> None:
        with self._lock:
            self._counts[key] += 1

    def snapshot(self) -> dict:
        with self._lock:
            return dict(self._counts)


class MinerHandlers:
    """forward / blacklist / priority for one miner.

    Args:
        predictor: object with ``async predict_b64_async(b64, priority=0.0) -> float``.
        metagraph: object with ``hotkeys`` (list of ss58), ``S`` (stake per uid) and
            ``validator_permit`` (bool per uid).
        allow_non_registered: serve hotkeys that are not registered on the subnet.
        force_validator_permit: refuse registered hotkeys without a validator permit.
    """

    def __init__(self, predictor: Any, metagraph: Any, allow_non_registered: bool = False,
                 force_validator_permit: bool = True) -> None:
        self.predictor = predictor
        self.metagraph = metagraph
        self.allow_non_registered = allow_non_registered
        self.force_validator_permit = force_validator_permit
        self.stats = MinerStats()

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _caller(synapse: ImageSynapse) -> Optional[str]:
        dendrite = getattr(synapse, "dendrite", None)
        return getattr(dendrite, "hotkey", None) if dendrite is not None else None

    def uid_of(self, hotkey: Optional[str]) -> Optional[int]:
        """UID of ``hotkey`` in the current metagraph, or None if it is not registered."""
        if not hotkey:
            return None
        hotkeys = list(self.metagraph.hotkeys)  # one snapshot: membership and index agree
        if hotkey not in hotkeys:
            return None
        return hotkeys.index(hotkey)

    # ------------------------------------------------------------------ handlers
    async def forward(self, synapse: ImageSynapse) -> ImageSynapse:
        """Fill ``synapse.prediction`` with P(AI-generated), or -1.0 if none could be made."""
        self.stats.inc("requests")
        caller = self._caller(synapse)
        prediction = NO_PREDICTION
        within = answer_within(synapse)
        try:
            # given up when the caller has: a request still queued then costs no forward
            p = float(await asyncio.wait_for(self.predictor.predict_b64_async(synapse.image, priority=self.stake_of(caller)),
                                             within))
            if not math.isfinite(p):
                raise ValueError(f"model produced a non-finite output {p}")
            prediction = min(1.0, max(0.0, p))
            self.stats.inc("served")
        except asyncio.TimeoutError:
            self.stats.inc("timed_out")
            logger.warning("no answer within the caller's %.1f s for %s (busy?): given up, answering %.1f",
                           within, caller, NO_PREDICTION)
        except asyncio.CancelledError:  # the axon or the event loop stopped this request
            self.stats.inc("cancelled")
            raise
        except ImageDecodeError as e:
            self.stats.inc("bad_input")
            logger.info("bad image from %s: %s -> answering %.1f", caller, e, NO_PREDICTION)
        except Overloaded as e:
            self.stats.inc("overloaded")
            logger.warning("overloaded (%s); refusing request from %s with %.1f", e, caller, NO_PREDICTION)
        except Exception as e:  # never let one request crash the axon
            self.stats.inc("errors")
            logger.exception("prediction failed for request from %s: %s", caller, e)
        synapse.prediction = prediction
        return synapse

    async def blacklist(self, synapse: ImageSynapse) -> Tuple[bool, str]:
        """(refuse?, reason). Registration first; then the validator permit if required."""
        hotkey = self._caller(synapse)
        if not hotkey:
            self.stats.inc("blacklisted")
            return True, "request carries no hotkey"
        uid = self.uid_of(hotkey)
        if uid is None:
            if self.allow_non_registered:
                return False, "unregistered hotkey allowed"
            self.stats.inc("blacklisted")
            return True, f"unregistered hotkey {hotkey}"
        if self.force_validator_permit and not bool(self.metagraph.validator_permit[uid]):
            self.stats.inc("blacklisted")
            return True, f"hotkey {hotkey} (uid {uid}) has no validator permit"
        return False, f"hotkey {hotkey} (uid {uid}) recognized"

    def stake_of(self, hotkey: Optional[str]) -> float:
        """``hotkey``'s stake in the current metagraph (0 for unknown callers or an unreadable stake)."""
        uid = self.uid_of(hotkey)
        if uid is None:
            return 0.0
        try:
            stake = float(self.metagraph.S[uid])
        except (IndexError, TypeError, ValueError):  # a metagraph being swapped, or a stake that is no number
            return 0.0
        return stake if math.isfinite(stake) else 0.0

    async def priority(self, synapse: ImageSynapse) -> float:
        """The caller's stake (0 for unknown callers). The axon runs this but orders nothing by
        it; ``forward`` hands the same stake to the predictor's queue, which serves heavier
        validators first and refuses lighter ones first when full."""
        return self.stake_of(self._caller(synapse))

    # ------------------------------------------------------------------ wiring
    def attach(self, axon: Any) -> Any:
        """Register the three handlers on a ``bt.Axon``; returns the axon."""
        return axon.attach(forward_fn=self.forward, blacklist_fn=self.blacklist, priority_fn=self.priority)
