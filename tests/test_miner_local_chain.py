"""The local chain: no external-IP lookups, registrations with stake and permits, state
shared through chain.json, and the miner's registration check."""
import bittensor as bt
import pytest

from bitmind import local_chain

pytestmark = pytest.mark.usefixtures("session_chain")


def test_patch_external_ip_reaches_dendrite_and_axon(local_net):
    local_chain.patch_external_ip()
    from bittensor.utils import networking

    assert networking.get_external_ip() == "127.0.0.1"
    assert bt.Dendrite(wallet=local_net.wallets["validator"]).external_ip == "127.0.0.1"
    axon = bt.Axon(wallet=local_net.wallets["miner"], ip="127.0.0.1", port=local_chain.free_port())
    assert axon.external_ip == "127.0.0.1"


def test_local_wallet_is_created_once(tmp_path):
    w1 = local_chain.local_wallet(tmp_path, "alice")
    w2 = local_chain.local_wallet(tmp_path, "alice")
    assert w1.hotkey.ss58_address == w2.hotkey.ss58_address
    assert w1.coldkeypub.ss58_address == w2.coldkeypub.ss58_address
    assert (tmp_path / "wallets" / "alice" / "hotkeys" / "default").is_file()


def test_state_is_replayed_from_chain_json(tmp_path, reopen_session_chain):
    root_a, root_b = tmp_path / "a", tmp_path / "b"
    chain, wallets = local_chain.local_setup(root_a, 7, miners=("m",), validators=("v",), block_time=0)
    port = local_chain.free_port()
    axon = bt.Axon(wallet=wallets["m"], ip="127.0.0.1", external_ip="127.0.0.1", port=port)
    assert chain.serve_axon(7, axon).success
    # Another chain replaces this process's mock state (as another process would start fresh)...
    local_chain.open_local_chain(root_b, 7, block_time=0)
    assert local_chain.LocalSubtensor().metagraph(7).n.item() == 0
    # ...and reopening root_a rebuilds everything from its chain.json.
    again = local_chain.open_local_chain(root_a, 7, block_time=0)
    mg = again.metagraph(7)
    hotkeys = list(mg.hotkeys)
    m, v = hotkeys.index(wallets["m"].hotkey.ss58_address), hotkeys.index(wallets["v"].hotkey.ss58_address)
    assert (m, v) == (0, 1)
    assert (mg.axons[m].ip, mg.axons[m].port) == ("127.0.0.1", port)
    assert bool(mg.validator_permit[v]) and float(mg.S[v]) == pytest.approx(1000.0)
    # re-registering updates stake/permit and keeps the uid
    assert again.register(wallets["v"], 7, stake=1.0, validator=False) == v
    mg = again.metagraph(7)
    assert not bool(mg.validator_permit[v]) and float(mg.S[v]) == pytest.approx(1.0)


def test_blocks_advance(tmp_path, reopen_session_chain):
    chain = local_chain.open_local_chain(tmp_path, 3, block_time=0)
    start = chain.get_current_block()
    assert chain.advance(5) == start + 5 == chain.get_current_block()


def test_miner_refuses_to_start_unregistered(local_net, tiny_model):
    from bitmind.miner.config import miner_config
    from bitmind.miner.neuron import MinerNeuron, NotRegisteredError

    config = miner_config(["--netuid", str(local_net.netuid), "--wallet.name", "stranger",
                           "--neuron.model_path", str(tiny_model)])
    with pytest.raises(NotRegisteredError, match="(?s)not registered.*btcli s register"):
        MinerNeuron(config, tiny_model, subtensor=local_net.chain, wallet=local_net.wallets["stranger"])
