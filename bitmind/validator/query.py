"""Querying miners: send one challenge to many axons at once, with a time-out, and turn
whatever comes back (an answer, an error status, silence) into a ``MinerResponse``.

Nothing a miner does can raise out of here: a miner that is down, slow, returns an
HTTP error or a malformed body simply gets ``prediction=None`` and a status, and the
reward function scores that as wrong.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Sequence

import bittensor as bt

from bitmind.protocol import ImageSynapse

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 9.0


@dataclass
class MinerResponse:
    """One miner's answer to one challenge, as the validator saw it."""

    uid: int
    prediction: float | None  # None: no usable number came back (timeout, error, not serving)
    latency: float | None  # seconds from send to answer; None if the miner never answered
    status_code: int | None
    status_message: str | None = None


def _response_of(uid: int, synapse: ImageSynapse | None, elapsed: float, error: Exception | None = None) -> MinerResponse:
    if synapse is None:
        return MinerResponse(uid, None, None, None, f"{type(error).__name__}: {error}" if error else "no response")
    term = synapse.dendrite
    code = getattr(term, "status_code", None)
    msg = getattr(term, "status_message", None)
    try:
        code = int(code) if code is not None else None
    except (TypeError, ValueError):
        code = None
    if code != 200:
        return MinerResponse(uid, None, None, code, msg)
    try:
        pred = float(synapse.prediction)
    except (TypeError, ValueError):
        return MinerResponse(uid, None, elapsed, code, f"non-numeric prediction {synapse.prediction!r}")
    return MinerResponse(uid, pred, elapsed, code, msg)


async def query_miners(dendrite: bt.Dendrite, uids: Sequence[int], axons: Sequence["bt.AxonInfo"], image_b64: str,
                       timeout: float = DEFAULT_TIMEOUT) -> list[MinerResponse]:
    """Send the challenge image to every axon concurrently; one ``MinerResponse`` per uid, in order.

    Axons that are not serving (no IP/port on chain) are not contacted: they count as
    failures with status "not serving".
    """
    if len(uids) != len(axons):
        raise ValueError("uids and axons must have the same length")

    async def one(uid: int, axon) -> MinerResponse:
        if not getattr(axon, "is_serving", True):
            return MinerResponse(uid, None, None, None, "not serving")
        t0 = time.perf_counter()
        try:
            syn = await dendrite.call(target_axon=axon, synapse=ImageSynapse(image=image_b64), timeout=timeout,
                                      deserialize=False)
        except Exception as e:  # dendrite.call catches most errors itself; be safe anyway
            logger.debug("query to uid %d failed: %s", uid, e)
            return _response_of(uid, None, time.perf_counter() - t0, e)
        return _response_of(uid, syn, time.perf_counter() - t0)

    return list(await asyncio.gather(*(one(u, a) for u, a in zip(uids, axons))))
