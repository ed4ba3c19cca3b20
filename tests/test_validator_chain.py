"""ChainView against a stand-in subtensor: membership, miner selection, weight processing."""
from types import SimpleNamespace

import numpy as np

from bitmind.validator.chain import ChainView


class FakeSubtensor:
    """Just what ChainView and bittensor's process_weights_for_netuid call on a real subtensor."""

    def __init__(self, hotkeys, serving, max_weight_limit=1.0, fail=False):
        axons = [SimpleNamespace(is_serving=s) for s in serving]
        self.mg = SimpleNamespace(hotkeys=hotkeys, axons=axons, validator_permit=np.zeros(len(hotkeys), bool),
                                  n=len(hotkeys))
        self.limit, self.fail, self.calls = max_weight_limit, fail, []

    def metagraph(self, netuid):
        return self.mg

    def min_allowed_weights(self, netuid):
        return 1

    def max_weight_limit(self, netuid):
        return self.limit

    def set_weights(self, **kw):
        if self.fail:
            raise ConnectionError("endpoint down")
        self.calls.append(kw)
        return SimpleNamespace(success=True, message="ok")


def _wallet(hotkey):
    return SimpleNamespace(hotkey=SimpleNamespace(ss58_address=hotkey))


def test_sync_finds_own_uid_and_serving_miners():
    st = FakeSubtensor(["a", "me", "b", "c"], [True, True, False, True])
    view = ChainView(st, _wallet("me"), 7)
    view.sync()
    assert view.my_uid == 1
    assert view.miner_uids() == [0, 3]  # not ourselves, not the unserved axon


def test_unregistered_validator_cannot_set_weights():
    view = ChainView(FakeSubtensor(["a"], [True]), _wallet("me"), 7)
    view.sync()
    ok, msg = view.set_weights([0], [1.0])
    assert not ok and "not registered" in msg


def test_real_chain_weights_respect_max_weight_limit():
    st = FakeSubtensor(["me", "a", "b", "c"], [False, True, True, True], max_weight_limit=0.5)
    view = ChainView(st, _wallet("me"), 7)
    view.sync()
    ok, _ = view.set_weights([1, 2, 3], [0.9, 0.08, 0.02])
    assert ok
    sent = dict(zip(st.calls[0]["uids"], st.calls[0]["weights"]))
    assert st.calls[0]["netuid"] == 7
    assert max(sent.values()) <= 0.5 + 1e-6 and abs(sum(sent.values()) - 1) < 1e-5
    assert sent[1] > sent[2] > sent[3]


def test_set_weights_failure_is_reported_not_raised():
    st = FakeSubtensor(["me", "a"], [False, True], fail=True)
    view = ChainView(st, _wallet("me"), 7)
    view.sync()
    ok, msg = view.set_weights([1], [1.0])
    assert not ok and "endpoint down" in msg
