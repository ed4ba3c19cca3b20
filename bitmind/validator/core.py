"""The validator loop, shared by ``neurons/validator.py`` and the local harness.

One round: draw a challenge, send it to a random sample of miners (concurrently, with
a time-out), reward each answer, fold the rewards into the moving-average scores, and
save the scores. Every ``epoch_length`` rounds: set weights from the scores and log a
per-miner table. Nothing a miner does (silence, slowness, errors, garbage) can stop a
round: those answers are simply worth 0.
"""
from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from dataclasses import dataclass

import bittensor as bt
import numpy as np

from bitmind.validator.challenges import Challenge, ChallengeGenerator
from bitmind.validator.chain import ChainView
from bitmind.validator.query import DEFAULT_TIMEOUT, MinerResponse, query_miners
from bitmind.validator.report import RunStats
from bitmind.validator.rewards import rewards as compute_rewards
from bitmind.validator.scores import DEFAULT_ALPHA, ScoreBook

logger = logging.getLogger(__name__)


@dataclass
class ValidatorConfig:
    sample_size: int = 50  # miners challenged per round
    timeout: float = DEFAULT_TIMEOUT  # seconds a miner has to answer
    alpha: float = DEFAULT_ALPHA  # moving-average factor
    epoch_length: int = 20  # rounds between weight settings
    sync_every: int = 5  # rounds between metagraph syncs
    round_interval: float = 0.0  # seconds to wait between rounds
    state_path: str | None = None  # score file (JSON); None: scores are not persisted
    seed: int | None = None  # seeds miner sampling (challenges have their own seed)
    set_weights: bool = True


@dataclass
class RoundResult:
    challenge: Challenge
    uids: list[int]
    responses: list[MinerResponse]
    rewards: np.ndarray
    elapsed: float
    weights_set: bool | None = None  # None: no weight setting this round


class Validator:
    """Challenge rounds, scoring, persistence and weight setting over a ``ChainView``."""

    def __init__(self, chain: ChainView, dendrite: "bt.Dendrite", generator: ChallengeGenerator,
                 config: ValidatorConfig = ValidatorConfig(), names: dict[int, str] | None = None):
        self.chain, self.dendrite, self.generator, self.config = chain, dendrite, generator, config
        self.rng = random.Random(config.seed)
        self.scores = ScoreBook.load(config.state_path, alpha=config.alpha) if config.state_path else ScoreBook(alpha=config.alpha)
        self._given_names = dict(names or {})  # e.g. model names in the harness; others show a hotkey prefix
        self.names: dict[int, str] = dict(self._given_names)
        self.stats = RunStats(self.names)  # whole run
        self.epoch_stats = RunStats(self.names)  # since the last weight setting
        self.round = 0
        # The dendrite's HTTP session lives on one event loop, run by a private thread, so the
        # validator can be driven from plain code, from a thread, or from inside a running loop
        # (a notebook) alike.
        self._loop = asyncio.new_event_loop()
        self._loop_thread = threading.Thread(target=self._loop.run_forever, name="validator-loop", daemon=True)
        self._loop_thread.start()
        self.sync()

    # ------------------------------------------------------------------ chain
    def sync(self) -> None:
        self.chain.sync()
        reset = self.scores.sync(self.chain.hotkeys)
        for uid, hk in enumerate(self.chain.hotkeys):
            self.names[uid] = self._given_names.get(uid) or hk[:8]
        if reset:
            logger.info("metagraph: %d uids; new or replaced: %s", len(self.chain.hotkeys), reset)

    def sample_uids(self) -> list[int]:
        uids = self.chain.miner_uids()
        k = min(self.config.sample_size, len(uids))
        return sorted(self.rng.sample(uids, k)) if k < len(uids) else uids

    def set_weights(self) -> bool:
        exclude = [self.chain.my_uid] if self.chain.my_uid is not None else []
        w = self.scores.weights(exclude=exclude)
        if not w.any():
            logger.info("no miner has a positive score yet: weights not set")
            return False
        uids = [u for u in range(len(w)) if u not in exclude]
        ok, msg = self.chain.set_weights(uids, w[uids].tolist())
        (logger.info if ok else logger.warning)("set_weights %s: %s", "ok" if ok else "FAILED", msg)
        return ok

    # ------------------------------------------------------------------ rounds
    async def _query(self, challenge: Challenge, uids: list[int]) -> list[MinerResponse]:
        axons = [self.chain.axons[u] for u in uids]
        return await query_miners(self.dendrite, uids, axons, challenge.synapse.image, timeout=self.config.timeout)

    def run_round(self) -> RoundResult:
        """One challenge to a sample of miners; scores updated and saved."""
        if self.round and self.config.sync_every and self.round % self.config.sync_every == 0:
            try:
                self.sync()
            except Exception as e:  # keep validating with the last metagraph
                logger.warning("metagraph sync failed (%s); using the previous one", e)
        t0 = time.perf_counter()
        challenge = self.generator.next()
        uids = self.sample_uids()
        responses = self._await(self._query(challenge, uids)) if uids else []
        r = compute_rewards([resp.prediction for resp in responses], challenge.label)
        self.scores.update(uids, r)
        self.stats.add_round(challenge.label, responses, r)
        self.epoch_stats.add_round(challenge.label, responses, r)
        self.round += 1
        if self.config.state_path:
            self.scores.save(self.config.state_path)
        result = RoundResult(challenge, uids, responses, r, time.perf_counter() - t0)
        answered = [resp.latency for resp in responses if resp.prediction is not None and resp.latency is not None]
        logger.info("round %d: %s (%s) -> %d miners, %d answered, %d correct, median latency %s", self.round,
                    challenge.source, "plain" if challenge.plain else "aug", len(uids), len(answered), int(r.sum()),
                    f"{np.median(answered) * 1000:.0f} ms" if answered else "-")
        logger.debug("round %d answers: %s", self.round, ", ".join(f"{resp.uid}:{_short(resp)}" for resp in responses))
        if self.config.epoch_length and self.round % self.config.epoch_length == 0:
            self.end_epoch(result)
        return result

    def end_epoch(self, result: RoundResult | None = None) -> None:
        logger.info("epoch ending at round %d (%d challenges):\n%s", self.round, self.epoch_stats.challenges,
                    self.epoch_stats.table(self.scores.scores))
        self.epoch_stats = RunStats(self.names)
        if self.config.set_weights:
            ok = self.set_weights()
            if result is not None:
                result.weights_set = ok

    def run(self, rounds: int | None = None, stop: threading.Event | None = None) -> None:
        """Run ``rounds`` rounds (forever if None) or until ``stop`` is set."""
        stop = stop or threading.Event()  # never set: just the pause between rounds
        done = 0
        while (rounds is None or done < rounds) and not stop.is_set():
            try:
                self.run_round()
            except Exception:  # e.g. every image unreadable: log and carry on
                logger.exception("round %d failed", self.round + 1)
            done += 1
            if self.config.round_interval > 0 and (rounds is None or done < rounds):
                stop.wait(self.config.round_interval)

    def _await(self, coro):
        """Run ``coro`` on the validator's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def close(self) -> None:
        """Close the dendrite's HTTP session and stop the event loop."""
        if self._loop.is_closed():
            return
        try:
            self._await(asyncio.wait_for(self.dendrite.aclose_session(), timeout=5))
        except Exception as e:
            logger.debug("closing the dendrite session: %s", e)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._loop_thread.join(timeout=5)
        self._loop.close()


def _short(resp: MinerResponse) -> str:
    if resp.prediction is None:
        return f"fail({resp.status_code})"
    return f"{resp.prediction:.2f}@{(resp.latency or 0) * 1000:.0f}ms"
