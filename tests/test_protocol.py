"""Protocol round trip: a real bt.Dendrite queries the real miner (MinerNeuron, built
from the same command line an operator uses) over loopback on the local chain."""
import math

import pytest

from bitmind.checkpoint import load_model
from bitmind.image_io import encode_image
from bitmind.miner.predict import predict
from bitmind.protocol import ImageSynapse, decode_synapse_image, prepare_image_synapse

pytestmark = pytest.mark.usefixtures("session_chain")


@pytest.fixture(scope="module")
def miner(local_net, tiny_model):
    from bitmind import local_chain
    from bitmind.miner.config import miner_config
    from bitmind.miner.neuron import MinerNeuron

    port = local_chain.free_port()
    config = miner_config(["--mock", "--local.root", str(local_net.root), "--netuid", str(local_net.netuid),
                           "--wallet.name", "miner", "--wallet.hotkey", "default", "--axon.port", str(port),
                           "--neuron.model_path", str(tiny_model), "--neuron.device", "cpu"])
    neuron = MinerNeuron(config, tiny_model)
    neuron.start()
    assert local_chain.wait_for_port(port)
    yield neuron
    neuron.stop()


def test_synapse_defaults_and_serialization():
    s = ImageSynapse()
    assert s.image == "" and s.prediction == -1.0 and s.deserialize() == -1.0
    s2 = ImageSynapse.model_validate_json(ImageSynapse(image="abc", prediction=0.25).model_dump_json())
    assert (s2.image, s2.prediction, s2.deserialize()) == ("abc", 0.25, 0.25)


def test_miner_axon_is_published_on_the_local_chain(miner, local_net):
    mg = local_net.chain.metagraph(local_net.netuid)
    uid = list(mg.hotkeys).index(local_net.wallets["miner"].hotkey.ss58_address)
    assert uid == miner.uid
    assert (mg.axons[uid].ip, mg.axons[uid].port) == ("127.0.0.1", miner.axon.external_port)


def test_round_trip_matches_local_predict(miner, local_net, image_factory, tiny_model, send):
    mg = local_net.chain.metagraph(local_net.netuid)
    axon = mg.axons[miner.uid]  # the address the miner published, as a validator would find it
    model = load_model(tiny_model)  # LoadedModel: predict() applies its calibration, as the miner does
    answers = []
    for seed in (1, 2):
        synapse = prepare_image_synapse(image_factory(seed=seed))
        resp = send(local_net.wallets["validator"], axon, synapse)
        assert resp.dendrite.status_code == 200, resp.dendrite.status_message
        assert 0.0 <= resp.prediction <= 1.0
        expected = predict(model, decode_synapse_image(synapse))
        assert resp.prediction == pytest.approx(expected, abs=1e-5)
        answers.append(resp.prediction)
    assert not math.isclose(answers[0], answers[1], abs_tol=1e-7), "different images should give different answers"
    counts = miner.handlers.stats.snapshot()
    assert counts["served"] >= 2 and counts["errors"] == 0


def test_status_line_reports_model_and_requests(miner):
    status = miner.status()
    assert status["model_sha256"] == miner.predictor.status()["sha256"] and len(status["model_sha256"]) == 64
    assert status["block"] == 0 and status["uid"] == miner.uid
    assert miner.predictor.batcher.max_batch == 1  # --neuron.max_batch 0 (auto) on CPU: one at a time per worker
    line = miner.status_line()
    assert status["model_sha256"][:12] in line and f"served {status['served']}" in line


def test_png_payload_is_also_answered(miner, local_net, image_factory, send):
    synapse = ImageSynapse(image=encode_image(image_factory(seed=3), "PNG"))
    resp = send(local_net.wallets["validator"], miner.axon.info(), synapse)
    assert 0.0 <= resp.prediction <= 1.0


def test_busy_axon_port_fails_loudly(local_net, tiny_model):
    import socket

    from bitmind.miner.config import miner_config
    from bitmind.miner.neuron import MinerNeuron, PortInUseError

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = miner_config(["--mock", "--local.root", str(local_net.root), "--netuid", str(local_net.netuid),
                               "--wallet.name", "miner", "--axon.port", str(port),
                               "--neuron.model_path", str(tiny_model), "--neuron.device", "cpu"])
        neuron = MinerNeuron(config, tiny_model)
        try:
            with pytest.raises(PortInUseError, match=str(port)):
                neuron.start()
        finally:
            neuron.stop()
