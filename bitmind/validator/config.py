"""Command-line configuration of the validator neuron (``neurons/validator.py``).

Same shape as the miner's (``bitmind.miner.config``): bittensor's wallet, subtensor
and logging options plus the validator's own ``--neuron.*`` and local-mode options,
parsed with argparse (unknown options are an error) into a nested ``bt.Config``.
"""
from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

import bittensor as bt

from bitmind.common import PLAIN_SHARE, non_negative_float, positive_float, positive_fraction, positive_int, unit_fraction
from bitmind.data import SPLITS
from bitmind.miner.config import DEFAULT_LOCAL_ROOT, neuron_config
from bitmind.validator.core import ValidatorConfig
from bitmind.validator.query import DEFAULT_TIMEOUT
from bitmind.validator.scores import DEFAULT_ALPHA

DEFAULT_STATE_DIR = "~/.bitmind/validator"


def add_validator_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--neuron.data", type=str, nargs="+", required=True,
                        help="One or more challenge sources: a folder in the CLASS/SOURCE/* layout "
                             "(CLASS = real|fake), or hf:NAME_OR_PATH[:real|fake] for a Hugging Face dataset.")
    parser.add_argument("--neuron.split", type=str, choices=SPLITS, default=None,
                        help="Challenge only with this split of the data (by picture stem, as the trainer splits), "
                             "e.g. 'test' to score local miners on pictures no model was trained on. Default: all images.")
    parser.add_argument("--neuron.split_seed", type=int, default=0, help="Seed of that split (the trainer's --split_seed).")
    parser.add_argument("--neuron.sample_size", type=positive_int, default=50, help="Miners challenged per round.")
    parser.add_argument("--neuron.timeout", type=positive_float, default=DEFAULT_TIMEOUT, help="Seconds a miner has to answer.")
    parser.add_argument("--neuron.plain_share", type=unit_fraction, default=PLAIN_SHARE,
                        help="Share of challenges sent with base transforms only (the rest get random augmentation).")
    parser.add_argument("--neuron.alpha", type=positive_fraction, default=DEFAULT_ALPHA, help="Moving-average factor of scores.")
    parser.add_argument("--neuron.epoch_length", type=positive_int, default=20,
                        help="Rounds between weight settings (and per-miner summary tables).")
    parser.add_argument("--neuron.sync_every", type=positive_int, default=5, help="Rounds between metagraph syncs.")
    parser.add_argument("--neuron.round_interval", type=non_negative_float, default=5.0, help="Seconds to wait between rounds.")
    parser.add_argument("--neuron.rounds", type=positive_int, default=None, help="Stop after this many rounds (default: run forever).")
    parser.add_argument("--neuron.seed", type=int, default=None, help="Seed for challenges and miner sampling (reproducible runs).")
    parser.add_argument("--neuron.state_path", type=str, default=None,
                        help=f"Score file (JSON, saved after every round). Default: {DEFAULT_STATE_DIR}/"
                             "<network>/<wallet>/<hotkey>/netuid<N>/scores.json")
    parser.add_argument("--neuron.dont_set_weights", action="store_true", help="Score miners but never set weights.")
    parser.add_argument("--mock", "--local", dest="mock", action="store_true",
                        help="Run on the local mock chain under --local.root (no network): wallet created there, "
                             "hotkey registered with stake and a validator permit, miners found through chain.json.")
    parser.add_argument("--local.root", type=str, default=DEFAULT_LOCAL_ROOT, help="Folder of the local chain (with --mock).")
    parser.add_argument("--local.stake", type=positive_float, default=1000.0, help="Stake (TAO) given to the validator on the local chain.")
    return parser


def validator_config(args: list[str]) -> "bt.Config":
    """The validator's command line (``neurons/validator.py``) as a nested ``bt.Config``."""
    return neuron_config(args, "bitmind validator: challenges miners with real/fake images and sets weights.",
                         add_validator_args, (bt.Wallet, bt.Subtensor, bt.logging))


def network_state_dir(config: "bt.Config") -> Path:
    """Default state folder of a validator on a network: one folder per chain, named as before
    endpoints were honoured where it can be (so scores saved there are picked up again):
    bittensor's name of the chain (``finney``, ``test``, ``local``, ``archive``; also when it is
    given as the endpoint of one of them), else the ``--subtensor.network`` given beside an
    endpoint of its own node, else the endpoint's URL as a folder name (``ws://10.0.0.5:9944``
    -> ``ws_10.0.0.5_9944``: a URL is no folder name)."""
    from bittensor.utils import determine_chain_endpoint_and_network

    network = str(config.subtensor.network)
    name = determine_chain_endpoint_and_network(network)[0]
    if name in (None, "unknown"):
        name = config.subtensor.get("network_name") or re.sub(r"[^A-Za-z0-9._-]+", "_", network).strip("_") or "network"
    return Path(os.path.expanduser(DEFAULT_STATE_DIR)) / name


def loop_config(config: "bt.Config", state_path: str | None) -> ValidatorConfig:
    """The ``ValidatorConfig`` of the loop from the command-line config."""
    n = config.neuron
    return ValidatorConfig(sample_size=int(n.sample_size), timeout=float(n.timeout), alpha=float(n.alpha),
                           epoch_length=int(n.epoch_length), sync_every=int(n.sync_every),
                           round_interval=float(n.round_interval), state_path=state_path,
                           seed=None if n.seed is None else int(n.seed) + 1,
                           set_weights=not bool(n.dont_set_weights))


def challenge_generator(config: "bt.Config"):
    """The ``ChallengeGenerator`` the command line asks for (data, plain share, seed, split)."""
    from bitmind.validator.challenges import ChallengeGenerator

    n = config.neuron
    return ChallengeGenerator.from_specs(n.data, plain_share=float(n.plain_share), seed=n.seed,
                                         split=n.split, split_seed=int(n.split_seed))
