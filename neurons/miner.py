#!/usr/bin/env python3
"""bitmind miner: answers ImageSynapse challenges with P(AI-generated).

Network (testnet shown; mainnet is --netuid 34 without --subtensor.network):

    pm2 start ./neurons/miner.py --name miner --interpreter python3 -- \\
        --neuron.model_path ./mining_models/local/current.pth --netuid 168 --subtensor.network test \\
        --wallet.name default --wallet.hotkey default --axon.port 8091

or the same with the options kept in ecosystem.config.js (repository root):

    pm2 start ecosystem.config.js

Local, without any network (mock chain under ~/.bitmind/local_chain, 127.0.0.1):

    python neurons/miner.py --mock --axon.port 8091

(the link made once by ``mkdir -p mining_models/local && ln -sfn ../base.pth
mining_models/local/current.pth``: README, step 4). The model file is hot reloaded: re-point
the link at a new checkpoint (or copy one over a plain file) and the next request is answered
by the new model (a broken file is refused; the old model keeps serving).
All the wiring and the sync/status loop live in ``bitmind.miner.neuron``; this file
parses the command line, sets up logging and handles signals.
"""
import sys
from pathlib import Path

import bittensor as bt

from bitmind.checkpoint import CheckpointError
from bitmind.common import check_device, route_library_logs
from bitmind.miner.config import miner_config, missing_model_message, resolve_model_path
from bitmind.miner.neuron import MinerNeuron, NotRegisteredError, PortInUseError
from bitmind.shutdown import stop_event_on_signals

REPO_ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    config = miner_config(sys.argv[1:] if argv is None else argv)
    bt.logging(config=config, logging_dir=config.logging.logging_dir)
    bt.logging.set_info(True)
    route_library_logs()

    model_path = resolve_model_path(config.neuron.model_path, REPO_ROOT)
    if model_path.is_dir():  # as bitmind.eval and bitmind.model_info say it
        bt.logging.error(f"--neuron.model_path {config.neuron.model_path}: {model_path} is a folder, not a model file "
                         "(give the .pth inside it, e.g. a run's model_epoch_best.pth)")
        return 2
    if not model_path.is_file():
        bt.logging.error(missing_model_message(model_path, config.neuron.model_path))
        return 2
    try:  # a device this machine lacks is a configuration error (exit 2: pm2 does not restart it),
        check_device(config.neuron.device, flag="--neuron.device")  # not a chain outage (exit 1, restarted forever)
    except ValueError as e:
        bt.logging.error(str(e))
        return 2
    mode = f"local mock chain at {config.local.root}" if config.mock else f"network {config.subtensor.network!r}"
    bt.logging.info(f"starting miner: netuid {config.netuid} on {mode}, model {model_path}")

    try:
        miner = MinerNeuron(config, model_path)
    except NotRegisteredError as e:
        bt.logging.error(str(e))
        return 3
    except CheckpointError as e:
        bt.logging.error(f"cannot serve {model_path}: {e}")
        return 2
    except Exception as e:  # typically: the subtensor endpoint cannot be reached
        where = "the local chain" if config.mock else f"subtensor network {config.subtensor.network!r}"
        bt.logging.error(f"miner setup failed on {where} ({type(e).__name__}: {e}); is the endpoint reachable?")
        return 1

    stop = stop_event_on_signals(lambda signum: bt.logging.info(f"received signal {signum}; stopping"))

    try:
        miner.start()
    except PortInUseError as e:
        bt.logging.error(str(e))
        miner.stop()
        return 1
    try:
        code = miner.run(stop)
    finally:
        miner.stop()
        bt.logging.info("miner stopped")
    return code


if __name__ == "__main__":
    sys.exit(main())
