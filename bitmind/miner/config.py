"""Command-line configuration of the miner neuron (``neurons/miner.py``).

Lives in the package so argument parsing is testable and shared by the demo. The
parser is bittensor's usual one (wallet, subtensor, axon, logging options) plus the
miner's own ``--neuron.*``, ``--blacklist.*`` and local-mode options; unknown options
are an error (a mistyped flag must not silently fall back to a default).
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import bittensor as bt
from bittensor.core.config import DefaultMunch

from bitmind.checkpoint import MAX_MODEL_BYTES
from bitmind.common import SN34_NETUID, non_negative_float, non_negative_int, parse_bool, positive_float, positive_int
from bitmind.image_io import DEFAULT_MAX_B64_CHARS, DEFAULT_MAX_PIXELS

DEFAULT_MODEL_PATH = "./mining_models/base.pth"
DEFAULT_NETUID = SN34_NETUID
DEFAULT_LOCAL_ROOT = "~/.bitmind/local_chain"


def add_miner_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The miner's own options (``neuron_config`` adds ``--netuid`` and bittensor's)."""
    parser.add_argument("--neuron.model_path", type=str, default=DEFAULT_MODEL_PATH,
                        help="Model file to serve (hot reloaded when it changes). A relative path is looked up "
                             "from the current folder, then from the repository root.")
    parser.add_argument("--neuron.device", type=str, default="auto", help="'auto' (cuda if available), 'cpu', 'cuda', 'cuda:1', ...")
    parser.add_argument("--neuron.amp", type=str, default="auto", choices=["auto", "bf16", "none"],
                        help="Precision of the forward: 'auto' = bf16 autocast on CUDA, and on a CPU that computes bf16 "
                             "natively (AMX or AVX512-BF16) where it is also measured faster at model load (about 2.2x "
                             "faster with AMX, slower on some CPUs without; served probabilities of the shipped model move "
                             "by 0.045 at most, median 0.013: docs/Performance.md); 'bf16' = always, without the timing; 'none' = fp32 everywhere.")
    parser.add_argument("--neuron.compile", type=parse_bool, nargs="?", const=True, default=False,
                        help="On a CPU, compile the prepared model with TorchInductor before serving (needs a C++ "
                             "compiler; 5-60 s more at start-up, cached after the first): about 1.4x faster forwards "
                             "(docs/Performance.md). A hot-reloaded model serves uncompiled until the next restart; any "
                             "failure serves the uncompiled model. Off by default.")
    parser.add_argument("--neuron.sync_interval", type=positive_float, default=300.0,
                        help="Seconds between metagraph syncs (the main loop looks once a second: below 1, every second).")
    parser.add_argument("--neuron.status_interval", type=positive_float, default=60.0,
                        help="Seconds between status lines (looked at once a second, as the sync).")
    parser.add_argument("--neuron.max_batch", type=non_negative_int, default=0,
                        help="Largest micro-batch of concurrent requests; 0 = auto (32 on CUDA; 1 on CPU, where "
                             "larger batches cost more time per image and concurrent requests go to several "
                             "forward workers instead: docs/Performance.md).")
    parser.add_argument("--neuron.batch_window_ms", type=non_negative_float, default=2.0, help="How long to wait to fill a micro-batch.")
    parser.add_argument("--neuron.max_queue", type=positive_int, default=256,
                        help="Images being decoded or queued beyond which requests are refused (answered -1) before decoding.")
    parser.add_argument("--neuron.max_payload_chars", type=positive_int, default=DEFAULT_MAX_B64_CHARS,
                        help="Largest base64 image payload accepted, in characters; a longer one is answered -1 "
                             "without being decoded.")
    parser.add_argument("--neuron.max_image_pixels", type=positive_int, default=DEFAULT_MAX_PIXELS,
                        help="Largest image accepted, in pixels (width x height, read from the header before any "
                             "decoding); also sets Pillow's Image.MAX_IMAGE_PIXELS.")
    parser.add_argument("--neuron.max_model_mb", type=positive_int, default=MAX_MODEL_BYTES // 2**20,
                        help="Largest model file read, in MiB (the shipped files are 6 MB): a larger file at the "
                             "model path is refused from its size, unread, at start-up and on hot reload.")
    parser.add_argument("--neuron.allow_arch_change", type=parse_bool, nargs="?", const=True, default=False,
                        help="Let a hot reload swap in a model of another architecture or config (default: refuse "
                             "it and keep serving; restart the miner to change architecture).")
    parser.add_argument("--blacklist.allow_non_registered", type=parse_bool, nargs="?", const=True, default=False,
                        help="Serve hotkeys that are not registered on the subnet (default: refuse).")
    parser.add_argument("--blacklist.force_validator_permit", type=parse_bool, nargs="?", const=True, default=True,
                        help="Refuse callers without a validator permit (default: true; "
                             "'--blacklist.force_validator_permit false' turns it off).")
    parser.add_argument("--mock", "--local", dest="mock", action="store_true",
                        help="Run on a local mock chain (no network): wallet created under --local.root, "
                             "hotkey registered there, axon served on 127.0.0.1.")
    parser.add_argument("--local.root", type=str, default=DEFAULT_LOCAL_ROOT,
                        help="Folder of the local chain (chain.json + wallets/) used with --mock.")
    return parser


def neuron_config(args: list[str], description: str, add_own_args, bittensor_parts) -> "bt.Config":
    """Parse ``args`` (e.g. ``sys.argv[1:]``) with ``--netuid``, the neuron's own options
    (``add_own_args(parser)``) and those of ``bittensor_parts`` (``bt.Wallet``, ``bt.Axon`` ...)
    into a nested ``bt.Config``; exits with usage on errors. Shared by the miner and validator.

    We parse with argparse ourselves: bittensor 10's ``bt.Config(parser)`` ignores the
    parser unless ``BT_NO_PARSE_CLI_ARGS=false`` is set, falls back to ``sys.argv`` for an
    empty list, and ignores unknown options.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--netuid", type=int, default=DEFAULT_NETUID, help="Subnet UID (34 on finney, 168 on testnet).")
    add_own_args(parser)
    for part in bittensor_parts:
        part.add_args(parser)
    chain_keys = [k for k in _CHAIN_KEYS if any(a.dest == k for a in parser._actions)]
    defaults = {k: parser.get_default(k) for k in chain_keys}
    parser.set_defaults(**{k: _UNSET for k in chain_keys})  # given or not, whatever the value (env defaults too)
    ns = parser.parse_args(list(args))
    given = {k for k in chain_keys if getattr(ns, k) is not _UNSET}
    for k in chain_keys:
        if k not in given:
            setattr(ns, k, defaults[k])
    _endpoint_names_the_chain(ns, given)
    return nest_namespace(ns)


_CHAIN_KEYS = ("subtensor.network", "subtensor.chain_endpoint")
_UNSET = object()  # the default of _CHAIN_KEYS while parsing: tells "given" from "given the default's value"


def _endpoint_names_the_chain(ns: argparse.Namespace, given: set[str]) -> None:
    """A ``--subtensor.chain_endpoint`` given on the command line is the chain connected to.

    Why: bittensor's ``setup_config`` takes the last set candidate of (endpoint, network), and
    ``--subtensor.network`` always has a value (finney by default), so an endpoint alone (an
    operator's own lite node: ``--subtensor.chain_endpoint ws://10.0.0.5:9944``) was ignored
    and the neuron went to the main network. Its help says the endpoint overrides the network:
    we make that so by naming the endpoint as the network, which bittensor resolves to that URL.
    The network name given beside it, if any, is kept as ``subtensor.network_name`` (what a
    validator names its state folder by: ``network_state_dir``)."""
    if "subtensor.chain_endpoint" in given and getattr(ns, "subtensor.chain_endpoint"):
        setattr(ns, "subtensor.network_name", getattr(ns, "subtensor.network") if "subtensor.network" in given else None)
        setattr(ns, "subtensor.network", getattr(ns, "subtensor.chain_endpoint"))


def miner_config(args: list[str]) -> "bt.Config":
    """The miner's command line (``neurons/miner.py``) as a nested ``bt.Config``."""
    return neuron_config(args, "bitmind miner: answers ImageSynapse challenges with P(AI-generated).", add_miner_args,
                         (bt.Wallet, bt.Subtensor, bt.Axon, bt.logging))


def nest_namespace(ns) -> "bt.Config":
    """Flat ``a.b`` argparse names -> a nested ``bt.Config`` on top of bittensor's defaults."""
    config = bt.Config()  # bittensor's defaults, overridden below by every parsed option
    for key, value in vars(ns).items():
        node = config
        *parents, leaf = key.split(".")
        for part in parents:
            child = node.get(part)
            if not isinstance(child, dict):
                child = DefaultMunch(None)
                node[part] = child
            node = child
        node[leaf] = value
    return config


def resolve_model_path(path: str | os.PathLike, repo_root: str | os.PathLike | None = None) -> Path:
    """``path`` as given if it exists (absolute, or relative to the current folder);
    otherwise, for a relative path, the same path under ``repo_root`` if that exists;
    otherwise the path relative to the current folder (the predictor reports it missing).

    Made absolute without following links: a model path that is a symlink stays the link,
    so re-pointing it (``ln -sfn new.pth current.pth``, the usual atomic swap of a deploy)
    is a hot reload; resolving it here would watch the old target forever."""
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists() or repo_root is None:
        return _absolute(p)
    candidate = Path(repo_root) / p
    return _absolute(candidate) if candidate.exists() else _absolute(p)


#: The link the operator's guide serves (README, steps 4 and 7), and the command that makes it.
SERVED_LINK = "mining_models/local/current.pth"
MAKE_SERVED_LINK = "mkdir -p mining_models/local && ln -sfn ../base.pth mining_models/local/current.pth"


def missing_model_message(path: Path, given: str) -> str:
    """The line a miner whose model path holds no file exits with: a dangling link names where
    it points, the guide's link not made yet gives the command that makes it (an operator who
    pulled and ran ``pm2 start ecosystem.config.js`` without step 4), anything else how to get
    a model."""
    where = f"(from --neuron.model_path {given})"
    if path.is_symlink():
        target = os.readlink(path)
        return (f"model file not found: {path} {where} is a link to {target}, which does not exist "
                f"(a relative target is read from the link's own folder: {path.parent}); re-point it, e.g. "
                f"ln -sfn ../base.pth {path}")
    if path.as_posix().endswith(SERVED_LINK):
        return (f"model file not found: {path} {where}: the served link is not made yet; from the repository root: "
                f"{MAKE_SERVED_LINK} (README, step 4)")
    return f"model file not found: {path} {where}. Train one (see README, Training) or point --neuron.model_path at a checkpoint."


def _absolute(p: Path) -> Path:
    """``p`` from the root, links and ``..`` kept as they are: folding ``..`` by name would be
    wrong after a link to a folder (``models/../base.pth``, with ``models`` a link, is the file
    next to the link's target, as the kernel resolves it)."""
    return p if p.is_absolute() else Path.cwd() / p
