"""Who the miner serves: registration first, then the validator permit; priority = stake.

The end-to-end cases go through a real bt.Axon and real bt.Dendrite requests signed
by local wallets registered (or not) on the local chain.
"""
import asyncio
from types import SimpleNamespace

import pytest

from bitmind.miner.handlers import MinerHandlers
from bitmind.protocol import ImageSynapse, prepare_image_synapse

pytestmark = pytest.mark.usefixtures("session_chain")


class FixedPredictor:
    """Answers 0.75 for everything: these tests are about who is served, not what."""

    async def predict_b64_async(self, b64, priority=0.0):
        return 0.75


def synapse_from(hotkey):
    s = ImageSynapse(image="x")
    s.dendrite.hotkey = hotkey
    return s


@pytest.fixture
def handlers(local_net):
    return MinerHandlers(FixedPredictor(), local_net.metagraph)


def hk(local_net, name):
    return local_net.wallets[name].hotkey.ss58_address


# ---------------------------------------------------------------- through axon + dendrite
def test_through_axon_validator_served_others_refused(local_net, image_factory, serve, send):
    handlers = MinerHandlers(FixedPredictor(), local_net.metagraph)  # defaults: registered + permit required
    with serve(handlers, local_net.wallets["miner"]) as axon:
        synapse = prepare_image_synapse(image_factory())
        ok = send(local_net.wallets["validator"], axon, synapse)
        assert ok.dendrite.status_code == 200 and ok.prediction == 0.75
        for name in ("stranger", "member"):
            refused = send(local_net.wallets[name], axon, synapse)
            assert refused.dendrite.status_code == 403, (name, refused.dendrite.status_message)
            assert refused.prediction == -1.0
    counts = handlers.stats.snapshot()
    assert counts["served"] == 1 and counts["blacklisted"] == 2


def test_through_axon_switches_open_the_door(local_net, image_factory, serve, send):
    synapse = prepare_image_synapse(image_factory())
    lenient = MinerHandlers(FixedPredictor(), local_net.metagraph, allow_non_registered=True,
                            force_validator_permit=False)
    with serve(lenient, local_net.wallets["miner"]) as axon:
        for name in ("stranger", "member", "validator"):
            resp = send(local_net.wallets[name], axon, synapse)
            assert resp.dendrite.status_code == 200 and resp.prediction == 0.75, name


# ---------------------------------------------------------------- handler logic
def test_unregistered_refused_before_any_index_lookup(local_net):
    class NoIndexHotkeys(list):
        def index(self, *a, **k):  # an index lookup for an unknown key would raise ValueError
            raise AssertionError("index() must not be reached for an unregistered hotkey")

    mg = SimpleNamespace(hotkeys=NoIndexHotkeys(local_net.metagraph.hotkeys), S=local_net.metagraph.S,
                         validator_permit=local_net.metagraph.validator_permit)
    h = MinerHandlers(FixedPredictor(), mg)
    refused, reason = asyncio.run(h.blacklist(synapse_from(hk(local_net, "stranger"))))
    assert refused and "unregistered" in reason


def test_blacklist_rules(local_net, handlers):
    bl = lambda name: asyncio.run(handlers.blacklist(synapse_from(hk(local_net, name))))  # noqa: E731
    assert bl("validator")[0] is False
    refused, reason = bl("member")
    assert refused and "validator permit" in reason
    assert bl("stranger")[0] is True
    assert asyncio.run(handlers.blacklist(synapse_from(None)))[0] is True  # no hotkey at all

    handlers.force_validator_permit = False
    assert bl("member")[0] is False and bl("stranger")[0] is True
    handlers.allow_non_registered = True
    assert bl("stranger")[0] is False


def test_priority_is_stake(local_net, handlers):
    pr = lambda name: asyncio.run(handlers.priority(synapse_from(hk(local_net, name))))  # noqa: E731
    assert pr("validator") == pytest.approx(local_net.validator_stake)
    assert pr("member") == pytest.approx(local_net.member_stake)
    assert pr("stranger") == 0.0
    assert pr("validator") > pr("member") > pr("stranger")


def test_metagraph_swap_is_seen_by_next_request(local_net, handlers):
    stranger = hk(local_net, "stranger")
    assert asyncio.run(handlers.blacklist(synapse_from(stranger)))[0] is True
    mg = local_net.metagraph
    handlers.metagraph = SimpleNamespace(hotkeys=list(mg.hotkeys) + [stranger], S=list(mg.S) + [3.0],
                                         validator_permit=list(mg.validator_permit) + [True])
    assert asyncio.run(handlers.blacklist(synapse_from(stranger)))[0] is False
    assert asyncio.run(handlers.priority(synapse_from(stranger))) == 3.0


def test_local_chain_metagraph_has_stakes_and_permits(local_net):
    mg = local_net.metagraph
    uid = {name: list(mg.hotkeys).index(hk(local_net, name)) for name in ("miner", "validator", "member")}
    assert hk(local_net, "stranger") not in list(mg.hotkeys)
    assert bool(mg.validator_permit[uid["validator"]]) and not bool(mg.validator_permit[uid["member"]])
    assert float(mg.S[uid["validator"]]) == pytest.approx(local_net.validator_stake)
    assert float(mg.S[uid["member"]]) == pytest.approx(local_net.member_stake)
    assert float(mg.S[uid["miner"]]) == 0.0
