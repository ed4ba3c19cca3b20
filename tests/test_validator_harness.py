"""The validator against real axons on loopback (local chain, real miner handlers).

NOTE: no ``from __future__ import annotations``: ``bt.Axon.attach`` checks the test
miners' forward signatures against real classes.
"""
import asyncio
import json

import numpy as np
import pytest

from bitmind.protocol import ImageSynapse
from bitmind.validator.challenges import ChallengeGenerator
from bitmind.validator.core import ValidatorConfig
from bitmind.validator.harness import LocalNetwork, run_harness
from bitmind.validator.scores import ScoreBook
from validator_synth import constant_npr, make_folder, train_tiny_npr

# These tests open their own local chains; MockSubtensor keeps one chain per process, so
# put the session chain of the other test modules back afterwards (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("reopen_session_chain", "one_torch_thread")


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    d = tmp_path_factory.mktemp("vh")
    return {"data": make_folder(d / "data", n_per_class=4), "trained": train_tiny_npr(d / "trained.pth"),
            "const": constant_npr(d / "const.pth", prob=0.9)}


def test_harness_trained_miner_beats_constant_miner(assets, tmp_path):
    out = tmp_path / "res.json"
    res = run_harness([assets["trained"], assets["const"]], assets["data"], challenges=16, seed=1, timeout=9.0,
                      plain_share=1.0, json_out=out)
    rows = {r["name"]: r for r in res["miners"]}
    trained, const = rows["trained"], rows["const"]
    assert res["challenges"] == 16 and res["labels"]["real"] + res["labels"]["fake"] == 16
    assert trained["challenges"] == const["challenges"] == 16
    assert trained["failures"] == const["failures"] == 0
    # the constant model says 0.9 ("fake") to everything: right on every fake, wrong on every real
    assert const["fake_accuracy"] == 1.0 and const["real_accuracy"] == 0.0
    assert const["accuracy"] == pytest.approx(res["labels"]["fake"] / 16)
    assert trained["accuracy"] >= 0.9 > const["accuracy"]
    assert trained["score"] > const["score"] and trained["weight"] > const["weight"]
    assert trained["weight"] + const["weight"] == pytest.approx(1.0)
    assert trained["latency_mean_ms"] > 0 and trained["latency_p95_ms"] >= trained["latency_mean_ms"] * 0.5
    assert json.loads(out.read_text())["miners"][0]["name"] == "trained"
    assert "trained" in res["table"] and "p95 ms" in res["table"]


# Misbehaving miners (module-level functions: the axon inspects their signatures).
async def answer_seven(synapse: ImageSynapse) -> ImageSynapse:
    synapse.prediction = 7.0
    return synapse


async def answer_nan(synapse: ImageSynapse) -> ImageSynapse:
    synapse.prediction = float("nan")
    return synapse


async def answer_nothing(synapse: ImageSynapse) -> ImageSynapse:
    return synapse  # leaves the -1.0 "no prediction" default


async def answer_too_late(synapse: ImageSynapse) -> ImageSynapse:
    await asyncio.sleep(4.0)
    synapse.prediction = 1.0
    return synapse


def test_bad_miners_get_zero_and_do_not_stop_the_round(assets, tmp_path):
    with LocalNetwork(tmp_path / "chain") as net:
        good = net.add_model_miner("good", assets["trained"])
        bad = {net.add_axon_miner("seven", answer_seven): "seven", net.add_axon_miner("nan", answer_nan): "nan",
               net.add_axon_miner("nothing", answer_nothing): "nothing",
               net.add_axon_miner("slow", answer_too_late): "slow", net.register_down_miner("down"): "down"}
        gen = ChallengeGenerator.from_specs([str(assets["data"])], plain_share=1.0, seed=0)
        v = net.validator(gen, ValidatorConfig(sample_size=10, timeout=1.5, epoch_length=0, sync_every=0))
        try:
            assert sorted(v.chain.miner_uids()) == sorted([good, *bad])  # the validator itself is not challenged
            results = [v.run_round() for _ in range(2)]
        finally:
            v.close()
    for res in results:
        by_uid = {r.uid: (r, rw) for r, rw in zip(res.responses, res.rewards)}
        resp, rw = by_uid[good]
        assert resp.prediction is not None and rw == 1.0  # the good miner was still scored normally
        for uid, name in bad.items():
            resp, rw = by_uid[uid]
            assert rw == 0.0, name
        assert by_uid[next(u for u, n in bad.items() if n == "seven")][0].prediction == 7.0
        assert by_uid[next(u for u, n in bad.items() if n == "slow")][0].status_code == 408
        assert by_uid[next(u for u, n in bad.items() if n == "nan")][0].prediction is None  # NaN is not even JSON
        assert by_uid[next(u for u, n in bad.items() if n == "nothing")][0].prediction == -1.0
        assert by_uid[next(u for u, n in bad.items() if n == "down")][0].prediction is None
    assert v.scores.scores[good] > 0
    assert all(v.scores.scores[u] == 0.0 for u in bad)
    st = {s["name"]: s for s in v.stats.summaries()}
    assert st["slow"]["timeouts"] == 2 and st["seven"]["invalid"] == 2 and st["nothing"]["invalid"] == 2
    assert st["down"]["errors"] == 2 and st["nan"]["errors"] == 2 and st["good"]["failures"] == 0


def test_restart_keeps_scores_and_sets_weights_on_the_chain(assets, tmp_path):
    state = tmp_path / "state" / "scores.json"
    with LocalNetwork(tmp_path / "chain") as net:
        t = net.add_model_miner("trained", assets["trained"])
        c = net.add_model_miner("const", assets["const"])
        cfg = ValidatorConfig(sample_size=5, timeout=9.0, epoch_length=3, sync_every=2, state_path=str(state), seed=0)
        gen = ChallengeGenerator.from_specs([str(assets["data"])], plain_share=1.0, seed=0)
        v1 = net.validator(gen, cfg)
        try:
            rounds = [v1.run_round() for _ in range(3)]
        finally:
            v1.close()
        assert rounds[-1].weights_set is True and rounds[0].weights_set is None
        saved = ScoreBook.load(state)
        assert saved.step == 3
        np.testing.assert_allclose(saved.scores, v1.scores.scores)
        assert saved.scores[t] > 0
        # weights went to the (local) chain: u16, max-normalised, validator's row
        row = dict((int(u), int(w)) for u, w in net.chain.neuron_for_uid(net.validator_uid, net.netuid).weights)
        assert set(row) == {t, c}
        assert row[t] == 65535 if saved.scores[t] >= saved.scores[c] else row[c] == 65535

        # a new validator process (here: a new object) picks up where the old one stopped
        v2 = net.validator(ChallengeGenerator.from_specs([str(assets["data"])], plain_share=1.0, seed=9), cfg)
        try:
            np.testing.assert_allclose(v2.scores.scores, saved.scores)
            before = v2.scores.scores.copy()
            v2.run_round()
        finally:
            v2.close()
        after = ScoreBook.load(state)
        assert after.step == 4
        assert not np.allclose(after.scores, before)  # the new round moved the restored scores, not fresh zeros
        for uid in (t, c):
            assert after.scores[uid] == pytest.approx(0.9 * before[uid] + 0.1 * v2.stats.miners[uid].correct)


def test_harness_works_from_inside_a_running_event_loop(assets):
    # e.g. a notebook cell: the validator must not try to run its own loop on the caller's thread
    async def cell():
        return run_harness([assets["const"]], assets["data"], challenges=2, seed=0, plain_share=1.0)

    res = asyncio.run(cell())
    assert res["miners"][0]["challenges"] == 2 and res["miners"][0]["failures"] == 0
