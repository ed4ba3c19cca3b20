"""The validator's view of the chain: who is registered, where their axons are, and
how to set weights.

One small class so that the validator loop does not care whether it talks to a real
subtensor or to the local chain (``bitmind.local_chain.LocalSubtensor``): both expose
``metagraph(netuid)`` and ``set_weights(wallet, netuid, uids, weights, ...)``.
"""
from __future__ import annotations

import logging
from typing import Sequence

import bittensor as bt
import numpy as np
from bittensor.utils.mock.subtensor_mock import MockSubtensor
from bittensor.utils.weight_utils import process_weights_for_netuid

logger = logging.getLogger(__name__)


class ChainView:
    """Metagraph snapshot plus weight setting for one validator hotkey on one subnet."""

    def __init__(self, subtensor, wallet: "bt.Wallet", netuid: int):
        self.subtensor, self.wallet, self.netuid = subtensor, wallet, int(netuid)
        self.metagraph = None
        self.hotkeys: list[str] = []
        self.axons: list = []
        self.validator_permit: list[bool] = []
        self.my_uid: int | None = None

    def sync(self) -> None:
        """Refresh hotkeys, axons and our own UID from the chain."""
        mg = self.subtensor.metagraph(self.netuid)
        self.metagraph = mg
        self.hotkeys = list(mg.hotkeys)
        self.axons = list(mg.axons)
        self.validator_permit = [bool(p) for p in np.asarray(mg.validator_permit).reshape(-1)]
        me = self.wallet.hotkey.ss58_address
        self.my_uid = self.hotkeys.index(me) if me in self.hotkeys else None

    def miner_uids(self) -> list[int]:
        """UIDs worth challenging: every other neuron whose axon is served on chain."""
        return [uid for uid, ax in enumerate(self.axons) if uid != self.my_uid and getattr(ax, "is_serving", False)]

    def set_weights(self, uids: Sequence[int], weights: Sequence[float]) -> tuple[bool, str]:
        """Submit weights; returns (success, message). Never raises."""
        if self.my_uid is None:
            return False, "validator hotkey is not registered on this subnet"
        uids, weights = [int(u) for u in uids], [float(w) for w in weights]
        if not isinstance(self.subtensor, MockSubtensor):
            # On a real chain, respect the subnet's min_allowed_weights / max_weight_limit (as every
            # Bittensor validator does), or the extrinsic is rejected.
            try:
                pu, pw = process_weights_for_netuid(np.asarray(uids, dtype=np.int64), np.asarray(weights, dtype=np.float32),
                                                    self.netuid, self.subtensor, self.metagraph)
                uids, weights = [int(u) for u in pu], [float(w) for w in pw]
            except Exception as e:
                logger.warning("process_weights_for_netuid failed (%s); submitting the plain normalised weights", e)
        try:
            resp = self.subtensor.set_weights(wallet=self.wallet, netuid=self.netuid, uids=uids, weights=weights,
                                              wait_for_inclusion=False, wait_for_finalization=False)
        except Exception as e:
            return False, f"{type(e).__name__}: {e}"
        ok = bool(getattr(resp, "success", resp[0] if isinstance(resp, tuple) else resp))
        msg = str(getattr(resp, "message", "")) if not isinstance(resp, tuple) else str(resp[1])
        return ok, msg
