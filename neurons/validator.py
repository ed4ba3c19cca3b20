#!/usr/bin/env python3
"""bitmind validator: challenges miners with real and AI-generated images, scores them,
and sets weights.

Network (testnet shown; mainnet is --netuid 34 without --subtensor.network):

    pm2 start ./neurons/validator.py --name validator --interpreter python3 -- \\
        --netuid 168 --subtensor.network test --wallet.name default --wallet.hotkey default \\
        --neuron.data /data/sn34 hf:/data/hf/some_fakes:fake

Local, without any network (mock chain under ~/.bitmind/local_chain; start local
miners with ``python neurons/miner.py --mock ...`` against the same --local.root):

    python neurons/validator.py --mock --neuron.data ../shared/data/sn34-mini

Each round draws one challenge (real or fake with probability 0.5), sends it to
--neuron.sample_size miners with a --neuron.timeout time-out, rewards correct answers
with 1 (wrong, missing, NaN or out-of-range answers get 0), updates the moving-average
scores and saves them (so a restart, even after kill -9, resumes them). Every
--neuron.epoch_length rounds it logs a per-miner table and sets weights. All the work
is in ``bitmind.validator``; this file parses the command line, wires the chain and
handles signals.
"""
import os
import sys
from pathlib import Path

import bittensor as bt

from bitmind.common import register_command, route_library_logs

from bitmind.shutdown import stop_event_on_signals
from bitmind.validator.chain import ChainView
from bitmind.validator.config import challenge_generator, loop_config, network_state_dir, validator_config
from bitmind.validator.core import Validator



def _setup_chain(config):
    """(subtensor, wallet, default state folder) for network or local mode."""
    netuid = int(config.netuid)
    if config.mock:
        from bitmind import local_chain

        local_chain.patch_external_ip()
        root = Path(os.path.expanduser(config.local.root))
        subtensor = local_chain.open_local_chain(root, netuid)
        wallet = local_chain.local_wallet(root, config.wallet.name, config.wallet.hotkey)
        # (Re-)register with stake and a validator permit so that miners' blacklists serve us.
        uid = subtensor.register(wallet, netuid, stake=float(config.local.stake), validator=True)
        bt.logging.info(f"local chain {root}: validator {wallet.hotkey.ss58_address} is uid {uid} on netuid {netuid}")
        state_dir = root / "validator_state"
    else:
        wallet = bt.Wallet(config=config)
        subtensor = bt.Subtensor(config=config)
        state_dir = network_state_dir(config)
    return subtensor, wallet, state_dir / config.wallet.name / config.wallet.hotkey / f"netuid{netuid}"


def main(argv=None) -> int:
    config = validator_config(sys.argv[1:] if argv is None else argv)
    bt.logging(config=config, logging_dir=config.logging.logging_dir)
    bt.logging.set_info(True)
    route_library_logs(debug=bool(config.logging.debug or config.logging.trace))

    try:
        generator = challenge_generator(config)
    except Exception as e:
        bt.logging.error(f"cannot open challenge data {config.neuron.data}: {type(e).__name__}: {e}")
        return 2
    try:
        subtensor, wallet, state_dir = _setup_chain(config)
        chain = ChainView(subtensor, wallet, int(config.netuid))
        chain.sync()
    except Exception as e:  # typically: the subtensor endpoint cannot be reached
        where = "the local chain" if config.mock else f"subtensor network {config.subtensor.network!r}"
        bt.logging.error(f"validator setup failed on {where} ({type(e).__name__}: {e})")
        return 1
    if chain.my_uid is None:
        bt.logging.error(f"hotkey {config.wallet.name}/{config.wallet.hotkey} ({wallet.hotkey.ss58_address}) is not "
                         f"registered on netuid {config.netuid}. Register it first: "
                         f"{register_command(config, config.netuid)}")
        return 3
    state_path = config.neuron.state_path or str(state_dir / "scores.json")
    cfg = loop_config(config, state_path)
    validator = Validator(chain, bt.Dendrite(wallet=wallet), generator, cfg)
    bt.logging.info(f"validator uid {chain.my_uid} on netuid {config.netuid}: {len(chain.miner_uids())} miners serving; "
                    f"scores in {state_path} (restored step {validator.scores.step}); sample {cfg.sample_size}, "
                    f"timeout {cfg.timeout}s, weights every {cfg.epoch_length} rounds")

    stop = stop_event_on_signals(lambda signum: bt.logging.info(f"received signal {signum}; stopping after the current round"))
    try:
        validator.run(rounds=config.neuron.rounds, stop=stop)
    finally:
        validator.close()
        bt.logging.info(f"validator stopped after {validator.round} rounds; per-miner totals:\n"
                        f"{validator.stats.table(validator.scores.scores)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
