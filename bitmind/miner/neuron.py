"""The miner neuron: chain, wallet, metagraph, predictor, axon, and its run loop
(``MinerNeuron.run``, as ``bitmind.validator.core.Validator.run`` is the validator's).

``neurons/miner.py`` is the thin command-line entry point; this class does the work
so that tests and the demo can run the very same miner in-process.

Network mode uses ``bt.Wallet``/``bt.Subtensor`` from the config. Local mode
(``--mock``) opens the local chain (``bitmind.local_chain``) under ``--local.root``,
creates the wallet there without a password, registers the hotkey if needed, and
serves on 127.0.0.1 without any external-IP lookup.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any, Optional

import bittensor as bt

from bitmind.common import register_command
from bitmind.image_io import DEFAULT_MAX_B64_CHARS, DEFAULT_MAX_PIXELS, DecodeLimits, apply_pil_limit
from bitmind.miner.handlers import MinerHandlers
from bitmind.miner.predict import Predictor, PredictorConfig

logger = logging.getLogger(__name__)

#: In local mode the chain file is cheap to re-read, so sync often.
LOCAL_SYNC_INTERVAL = 5.0
#: Seconds between looks at the model file when no request comes (so a new model is loaded, and logged, anyway).
RELOAD_CHECK_INTERVAL = 5.0


class PortInUseError(RuntimeError):
    """The axon port cannot be bound."""


class NotRegisteredError(RuntimeError):
    """The miner's hotkey is not registered on the subnet: nothing would ever query it."""


class MinerNeuron:
    """Everything a running miner holds. ``start()`` serves and starts the axon;
    ``sync()`` refreshes the metagraph; ``status_line()`` summarises the state."""

    def __init__(self, config: Any, model_path: str | os.PathLike, subtensor: Any = None, wallet: Any = None):
        self.config = config
        self.netuid = int(config.netuid)
        self.local = bool(getattr(config, "mock", False))
        self.model_path = str(model_path)
        self.sync_interval = float(config.neuron.sync_interval)
        if self.local:
            self.sync_interval = min(self.sync_interval, LOCAL_SYNC_INTERVAL)
        self._setup_chain(subtensor, wallet)
        self.uid = self.check_registered()
        self.metagraph = self.subtensor.metagraph(self.netuid)
        limits = DecodeLimits(max_b64_chars=int(config.neuron.max_payload_chars or DEFAULT_MAX_B64_CHARS),
                              max_pixels=int(config.neuron.max_image_pixels or DEFAULT_MAX_PIXELS))
        apply_pil_limit(limits)
        self.predictor = Predictor(self.model_path, PredictorConfig(
            device=None if config.neuron.device in (None, "", "auto") else config.neuron.device, max_batch=int(config.neuron.max_batch),
            batch_window_ms=float(config.neuron.batch_window_ms), max_queue=int(config.neuron.max_queue), limits=limits,
            amp=config.neuron.amp, compile=bool(config.neuron.compile),
            allow_arch_change=bool(config.neuron.allow_arch_change),
            max_model_bytes=int(config.neuron.max_model_mb) * 2**20 if config.neuron.max_model_mb else None))
        self.handlers = MinerHandlers(self.predictor, self.metagraph,
                                      allow_non_registered=bool(config.blacklist.allow_non_registered),
                                      force_validator_permit=bool(config.blacklist.force_validator_permit))
        if self.local:
            self.axon = bt.Axon(wallet=self.wallet, config=config, port=config.axon.port, ip="127.0.0.1",
                                external_ip="127.0.0.1")
        else:
            self.axon = bt.Axon(wallet=self.wallet, config=config)
        self.handlers.attach(self.axon)
        self.last_sync = time.monotonic()

    # ------------------------------------------------------------------ setup
    def _setup_chain(self, subtensor: Any, wallet: Any) -> None:
        if self.local:
            from bitmind import local_chain

            local_chain.patch_external_ip()
            root = Path(os.path.expanduser(self.config.local.root))
            self.subtensor = subtensor or local_chain.open_local_chain(root, self.netuid)
            self.wallet = wallet or local_chain.local_wallet(root, self.config.wallet.name, self.config.wallet.hotkey)
            if self.subtensor.get_uid_for_hotkey_on_subnet(self.wallet.hotkey.ss58_address, self.netuid) is None:
                uid = self.subtensor.register(self.wallet, self.netuid)
                logger.info("registered local hotkey %s as uid %d on local netuid %d",
                            self.wallet.hotkey.ss58_address, uid, self.netuid)
        else:
            self.wallet = wallet or bt.Wallet(config=self.config)
            self.subtensor = subtensor or bt.Subtensor(config=self.config)

    def check_registered(self) -> int:
        hotkey = self.wallet.hotkey.ss58_address
        uid = self.subtensor.get_uid_for_hotkey_on_subnet(hotkey, self.netuid)
        if uid is None:
            network = "local chain" if self.local else f"network {getattr(self.subtensor, 'network', '?')!r}"
            raise NotRegisteredError(
                f"hotkey {self.config.wallet.name}/{self.config.wallet.hotkey} ({hotkey}) is not registered on "
                f"netuid {self.netuid} of the {network}. Register it first, e.g.\n"
                f"  {register_command(self.config, self.netuid)}")
        return int(uid)

    # ------------------------------------------------------------------ running
    def check_port_free(self) -> None:
        """bt.Axon starts uvicorn in a thread that only logs a failed bind; the miner would
        then run without serving. Try the bind here first and fail loudly instead."""
        port = int(self.axon.port)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
            try:
                s.bind(("127.0.0.1" if self.local else "0.0.0.0", port))
            except OSError as e:
                raise PortInUseError(f"axon port {port} is not available ({e}); "
                                     "stop whatever uses it or pick another --axon.port") from e

    def start(self) -> "MinerNeuron":
        """Publish the axon's address on the chain and start serving."""
        self.check_port_free()
        self.axon.serve(netuid=self.netuid, subtensor=self.subtensor)
        self.axon.start()
        logger.info("axon serving on %s:%d (external %s:%d), netuid %d, uid %d", self.axon.ip, self.axon.port,
                    self.axon.external_ip, self.axon.external_port, self.netuid, self.uid)
        st, amp = self.predictor.status(), self.predictor.amp_dtype
        precision = ("bf16 autocast" if st["cpu_bf16"] else f"{str(amp).removeprefix('torch.')} autocast" if amp is not None
                     else "fp32")
        logger.info("model on %s, %s%s%s", st["device"], "CPU-prepared, " if st["optimized"] else "", precision,
                    ", compiled" if st["compiled"] else "")
        return self

    def sync(self) -> None:
        """Sync into a fresh metagraph and swap it in with one assignment.

        Raises ``NotRegisteredError`` if the hotkey was deregistered meanwhile.
        """
        mg = self.subtensor.metagraph(self.netuid)
        hotkey = self.wallet.hotkey.ss58_address
        if hotkey not in list(mg.hotkeys):
            raise NotRegisteredError(f"hotkey {hotkey} is no longer registered on netuid {self.netuid}")
        self.uid = list(mg.hotkeys).index(hotkey)
        self.metagraph = mg
        self.handlers.metagraph = mg
        self.last_sync = time.monotonic()

    def maybe_sync(self) -> bool:
        if time.monotonic() - self.last_sync >= self.sync_interval:
            self.sync()
            return True
        return False

    def current_block(self) -> Optional[int]:
        try:
            return int(self.subtensor.get_current_block())
        except Exception as e:  # a flaky RPC must not stop serving
            logger.warning("could not read the current block: %s", e)
            return None

    def status(self) -> dict:
        st = self.predictor.status()
        counts = self.handlers.stats.snapshot()
        try:
            stake = float(self.metagraph.S[self.uid])
        except Exception:
            stake = float("nan")
        return {"block": self.current_block(), "uid": self.uid, "stake": stake, "model_sha256": st["sha256"],
                "reloads": st["reloads"], "bad_model_versions": st["bad_versions"], **counts}

    def status_line(self) -> str:
        s = self.status()
        return (f"block {s['block']} | uid {s['uid']} | stake {s['stake']:.3f} | model {s['model_sha256'][:12]} "
                f"(reloads {s['reloads']}) | requests {s['requests']} served {s['served']} bad {s['bad_input']} "
                f"overloaded {s['overloaded']} timed out {s['timed_out']} errors {s['errors']} blacklisted {s['blacklisted']}")

    def run(self, stop: threading.Event) -> int:
        """Serve until ``stop`` is set: sync the metagraph, look at the model file and log a
        status line now and then. Returns the exit status (3: the hotkey was deregistered)."""
        logger.info(self.status_line())
        status_interval = float(self.config.neuron.status_interval)
        last_status = last_reload_check = time.monotonic()
        while not stop.wait(1.0):
            now = time.monotonic()
            try:
                self.maybe_sync()
            except NotRegisteredError as e:
                logger.error("%s; stopping", e)
                return 3
            except Exception as e:  # keep serving on a flaky chain connection
                logger.warning("metagraph sync failed: %s: %s", type(e).__name__, e)
                self.last_sync = now
            if now - last_reload_check >= RELOAD_CHECK_INTERVAL:
                try:
                    self.predictor.check_reload()
                except Exception as e:  # noqa: BLE001 - the last good model keeps serving; never stop the miner
                    logger.error("model reload check failed, still serving the last good model: %s: %s",
                                 type(e).__name__, e)
                last_reload_check = now
            if now - last_status >= status_interval:
                logger.info(self.status_line())
                last_status = now
        return 0

    def stop(self) -> None:
        self.axon.stop()
        self.predictor.close()
