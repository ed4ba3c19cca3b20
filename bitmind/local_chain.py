"""A local chain for running miners and validators without a network.

Why: the real subnet needs a Subtensor node, registered hotkeys and an external IP.
For tests, the demo and the local harness we want the *real* ``bt.Axon`` /
``bt.Dendrite`` / ``bt.Metagraph`` code paths on loopback, against a chain we control.
bittensor ships ``bittensor.utils.mock.MockSubtensor`` for this, but in 10.5.0 several
paths are broken or reach for the (mocked-out) substrate connection:

* ``neurons_lite`` crashes (``NeuronInfo`` has no ``rank``);
* ``Metagraph.sync`` asks ``query_runtime_api("get_subnet_state")`` for stakes and
  ``get_metagraph_info`` for extras, which return ``MagicMock`` objects;
* ``get_uid_for_hotkey_on_subnet`` / ``is_hotkey_registered`` query the substrate directly;
* ``serve_axon`` goes through the extrinsic machinery;
* storage look-ups walk back one block at a time (slow once blocks advance).

``LocalSubtensor`` fixes those in a subclass, and adds two things:

* **Persistence across processes.** MockSubtensor's state lives in one process. The
  local chain is therefore described by a small JSON file, ``<root>/chain.json``:
  subnets, registered neurons (hotkey, coldkey, stake, validator permit) and served
  axons. Every process that opens the same ``root`` replays that file into its own
  MockSubtensor (again on every metagraph sync / registration check, when the file
  changed), so a miner process and a validator process agree on UIDs, stakes, permits
  and each other's axon addresses.
* **Blocks that advance with wall time** (``block_time`` seconds per block, counted
  from the file's creation, so all processes see the same block). ``block_time=0``
  freezes the block; ``advance(n)`` steps it by hand.

API (everything a local miner/validator/test needs)::

    from bitmind import local_chain as lc

    lc.patch_external_ip()                       # bt.Dendrite()/bt.Axon() never look up an IP online
    chain = lc.open_local_chain("/tmp/chain", netuid=34)   # LocalSubtensor; creates the subnet
    miner_w = lc.local_wallet("/tmp/chain", "miner")       # bt.Wallet under <root>/wallets, no password
    vali_w = lc.local_wallet("/tmp/chain", "validator")
    chain.register(miner_w)                               # uid 0, no stake, no permit
    chain.register(vali_w, stake=1000.0, validator=True)  # uid 1, stake in TAO, validator permit
    axon = bt.Axon(wallet=miner_w, ip="127.0.0.1", external_ip="127.0.0.1", port=port)
    chain.serve_axon(netuid=34, axon=axon)                # (or axon.serve(netuid=34, subtensor=chain))
    mg = chain.metagraph(1)                               # hotkeys, S (stake), validator_permit, axons

Helpers: ``free_port()``, ``wait_for_port(port)`` (``Axon.start`` returns before it
listens), ``wait_for_axon(...)`` (a miner process published its axon and listens).
``open_local_chain`` resets the process-wide MockSubtensor state when it opens a
different root (MockSubtensor keeps *one* chain per process; so does this module).
``local_setup(root, ...)`` does all of the above for the usual pair of neurons.

Command line (no Python needed to prepare a chain for a ``--mock`` miner and a client)::

    python -m bitmind.local_chain setup ROOT [--netuid 34] [--miners miner] [--validators validator]
                                             [--validator_stake 1000] [--json]
    python -m bitmind.local_chain show ROOT [--netuid N] [--json]

``setup`` creates (or completes) the chain under ``ROOT``: wallets under ``ROOT/wallets``
(unencrypted), miners registered without stake or permit, validators with stake and a
validator permit; running it again keeps every UID. ``show`` prints, per subnet, each
neuron's UID, wallet name, hotkey, stake, validator permit and served axon (written by a
running miner), and changes nothing.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import json
import logging
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any, Optional

import bittensor as bt
from bittensor.core.chain_data import NeuronInfoLite
from bittensor.core.settings import version_as_int
from bittensor.core.types import ExtrinsicResponse
from bittensor.utils import networking
from bittensor.utils.balance import Balance
from bittensor.utils.mock.subtensor_mock import MockSubtensor

from bitmind.common import SN34_NETUID, atomic_write_text, output_path_problem

logger = logging.getLogger(__name__)

LOCAL_IP = "127.0.0.1"
DEFAULT_NETUID = SN34_NETUID  # the same subnet as the neurons' default --netuid
DEFAULT_BLOCK_TIME = 12.0
CHAIN_FILE = "chain.json"
U16_MAX = 65535


# --------------------------------------------------------------------------- external IP
def patch_external_ip(ip: str = LOCAL_IP) -> None:
    """Make every bittensor external-IP lookup return ``ip`` (idempotent).

    ``bt.Dendrite()`` (and ``bt.Axon()`` without ``external_ip``) call
    ``bittensor.utils.networking.get_external_ip``, which asks web services and raises
    ``ExternalIPNotFound`` offline. In bittensor 10.5.0 (the pinned version) every caller
    (core.axon, core.dendrite, the serving extrinsics) uses it as an attribute of that
    module, none imports it by name, so patching the module is enough.
    """
    networking.get_external_ip = lambda: ip


# --------------------------------------------------------------------------- ports
def free_port(host: str = LOCAL_IP) -> int:
    """A TCP port that is free right now on ``host`` (for tests and local runs)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_for_port(port: int, host: str = LOCAL_IP, timeout: float = 30.0) -> bool:
    """Block until something accepts TCP connections on ``host:port`` (``bt.Axon.start``
    returns before uvicorn listens). Returns False on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return True
        time.sleep(0.05)
    return False


def wait_for_axon(chain, netuid: int, hotkey: str, port: int, proc, timeout: float):
    """Wait until the miner process ``proc`` (a ``subprocess.Popen``) published ``127.0.0.1:port``
    on the chain and listens there; returns its axon."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"miner exited early with status {proc.returncode}")
        mg = chain.metagraph(netuid)
        hotkeys = list(mg.hotkeys)
        if hotkey in hotkeys:
            axon = mg.axons[hotkeys.index(hotkey)]
            if axon.port == port and axon.ip == "127.0.0.1" and wait_for_port(port, timeout=0.5):
                return axon
        time.sleep(0.25)
    raise TimeoutError(f"miner did not serve on 127.0.0.1:{port} within {timeout:.0f}s")


# --------------------------------------------------------------------------- wallets
def wallet_dir(root: str | os.PathLike) -> Path:
    return Path(root).expanduser() / "wallets"


def local_wallet(root: str | os.PathLike, name: str, hotkey: str = "default") -> "bt.Wallet":
    """A ``bt.Wallet`` stored under ``<root>/wallets``; keys are created, unencrypted, if missing.

    Local wallets hold no funds on any real chain; they exist so that the axon and
    dendrite can sign and verify requests exactly as on the network.
    """
    w = bt.Wallet(name=name, hotkey=hotkey, path=str(wallet_dir(root)))
    if not (w.coldkeypub_file.exists_on_device() and w.hotkey_file.exists_on_device()):
        with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
            w.create_if_non_existent(coldkey_use_password=False, hotkey_use_password=False, suppress=True)
        logger.info("created local wallet %s/%s under %s", name, hotkey, wallet_dir(root))
    return w


# --------------------------------------------------------------------------- chain file
@contextlib.contextmanager
def _locked(path: Path):
    """Exclusive lock for read-modify-write of the chain file across processes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "a+") as lockf:  # closing the file releases the lock
        fcntl.flock(lockf, fcntl.LOCK_EX)
        yield


def _read_spec(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}


def _write_spec(path: Path, spec: dict) -> None:
    atomic_write_text(path, json.dumps(spec, indent=1, sort_keys=True))


# --------------------------------------------------------------------------- subtensor
class LocalSubtensor(MockSubtensor):
    """MockSubtensor that works with bittensor 10.5.0's metagraph/axon code and is shared
    between processes through ``<root>/chain.json`` (see the module docstring).

    Construct with ``open_local_chain``; plain ``LocalSubtensor()`` joins whatever
    local chain this process already has open.
    """

    # ---- construction --------------------------------------------------------------
    def _attach(self, root: Path, block_time: float) -> None:
        self.local_root = root
        self.chain_file = root / CHAIN_FILE
        self.block_time = block_time
        self._spec_sig = None
        self._applied: dict = {"neurons": {}, "axons": {}}
        with _locked(self.chain_file):
            spec = _read_spec(self.chain_file)
            if not spec:
                spec = {"created": time.time(), "block_time": block_time, "subnets": {}}
                _write_spec(self.chain_file, spec)
        self.created = float(spec["created"])
        self.network = "local"
        self._sync_from_file(force=True)

    # ---- file replay ---------------------------------------------------------------
    def _sync_from_file(self, force: bool = False) -> None:
        """Apply the chain file to this process's mock state if it changed since last time."""
        path = getattr(self, "chain_file", None)
        if path is None:
            return
        try:
            st = path.stat()
        except FileNotFoundError:
            return
        sig = (st.st_mtime_ns, st.st_size, st.st_ino)
        if not force and sig == self._spec_sig:
            return
        spec = _read_spec(path)
        self._spec_sig = sig
        state = self.chain_state["SubtensorModule"]
        for key, subnet in spec.get("subnets", {}).items():
            netuid = int(key)
            if netuid not in state["NetworksAdded"]:
                MockSubtensor.create_subnet(self, netuid)
            for n in subnet.get("neurons", []):
                self._apply_neuron(netuid, n)
            for hotkey, ax in subnet.get("axons", {}).items():
                self._apply_axon(netuid, hotkey, ax)

    def _apply_neuron(self, netuid: int, n: dict) -> None:
        state = self.chain_state["SubtensorModule"]
        key = (netuid, n["hotkey"])
        if self._applied["neurons"].get(key) == n:
            return
        block = self.block_number
        uid = self._uid_in_state(n["hotkey"], netuid)
        stake = Balance.from_tao(float(n.get("stake", 0.0)))
        if uid is None:
            uid = MockSubtensor.force_register_neuron(self, netuid, n["hotkey"], n["coldkey"], stake=stake)
        else:
            state["Stake"][n["hotkey"]].setdefault(n["coldkey"], {})[block] = stake.rao
        state["ValidatorPermit"][netuid][uid][block] = bool(n.get("validator", False))
        self._applied["neurons"][key] = dict(n)

    def _apply_axon(self, netuid: int, hotkey: str, ax: dict) -> None:
        key = (netuid, hotkey)
        if self._applied["axons"].get(key) == ax:
            return
        state = self.chain_state["SubtensorModule"]
        if hotkey not in state["Axons"].get(netuid, {}):
            return  # axon of a hotkey not (yet) registered here: ignored, like the chain would
        state["Axons"][netuid][hotkey][self.block_number] = {
            "block": self.block_number,
            "version": int(ax.get("version", 0)),
            "ip": networking.ip_to_int(ax["ip"]),
            "port": int(ax["port"]),
            "ip_type": networking.ip_version(ax["ip"]),
            "protocol": int(ax.get("protocol", 4)),
            "placeholder1": 0,
            "placeholder2": 0,
        }
        self._applied["axons"][key] = dict(ax)

    def _update_file(self, fn) -> None:
        """Read-modify-write the chain file under the lock, then replay it here."""
        with _locked(self.chain_file):
            spec = _read_spec(self.chain_file) or {"created": time.time(), "block_time": self.block_time, "subnets": {}}
            fn(spec)
            _write_spec(self.chain_file, spec)
        self._sync_from_file(force=True)

    # ---- blocks ----------------------------------------------------------------------
    def get_current_block(self) -> int:
        bt_ = getattr(self, "block_time", 0) or 0
        if bt_ > 0:
            target = int((time.time() - self.created) / bt_)
            while self.block_number < target:
                self.do_block_step()
        return self.block_number

    def advance(self, blocks: int = 1) -> int:
        """Step the block number by hand (tests); returns the new block."""
        for _ in range(blocks):
            self.do_block_step()
        return self.block_number

    @staticmethod
    def _get_most_recent_storage(storage: dict, block_number: Optional[int] = None) -> Any:
        """Value at the latest block <= ``block_number`` (O(entries), not O(blocks))."""
        if not storage:
            return None
        keys = [k for k in storage if isinstance(k, int) and (block_number is None or k <= block_number)]
        return storage[max(keys)] if keys else None

    # ---- chain edits (persisted) ---------------------------------------------------
    def create_subnet(self, netuid: int) -> None:
        """Create ``netuid`` if missing (idempotent, unlike MockSubtensor's)."""
        self._update_file(lambda spec: spec["subnets"].setdefault(str(netuid), {"neurons": [], "axons": {}}))

    def register(self, wallet: "bt.Wallet", netuid: int = DEFAULT_NETUID, stake: float = 0.0,
                 validator: bool = False) -> int:
        """Register ``wallet``'s hotkey on ``netuid`` with ``stake`` (TAO) and a validator
        permit if ``validator``. Re-registering updates stake/permit. Returns the UID."""
        entry = {"hotkey": wallet.hotkey.ss58_address, "coldkey": wallet.coldkeypub.ss58_address,
                 "stake": float(stake), "validator": bool(validator), "name": f"{wallet.name}/{wallet.hotkey_str}"}

        def edit(spec):
            neurons = spec["subnets"].setdefault(str(netuid), {"neurons": [], "axons": {}})["neurons"]
            for i, n in enumerate(neurons):  # list order = UID order; re-registering keeps the UID
                if n["hotkey"] == entry["hotkey"]:
                    neurons[i] = entry
                    break
            else:
                neurons.append(entry)

        self._update_file(edit)
        uid = self.get_uid_for_hotkey_on_subnet(entry["hotkey"], netuid)
        assert uid is not None
        return uid

    def serve_axon(self, netuid: int, axon: "bt.Axon", certificate=None, **_: Any) -> ExtrinsicResponse:
        """Publish ``axon``'s external ip/port for its hotkey (what ``axon.serve`` calls)."""
        hotkey = axon.wallet.hotkey.ss58_address
        ax = {"ip": axon.external_ip, "port": int(axon.external_port), "version": int(version_as_int), "protocol": 4}

        def edit(spec):
            subnet = spec["subnets"].setdefault(str(netuid), {"neurons": [], "axons": {}})
            subnet.setdefault("axons", {})[hotkey] = ax

        self._update_file(edit)
        return ExtrinsicResponse(success=True, message=f"axon {ax['ip']}:{ax['port']} served on local chain")

    def set_weights(self, wallet: "bt.Wallet", netuid: int, uids, weights, *args: Any, **kwargs: Any) -> ExtrinsicResponse:
        """Store normalised u16 weights for the caller (this process only) and bump LastUpdate."""
        self._sync_from_file()
        uid = self.get_uid_for_hotkey_on_subnet(wallet.hotkey.ss58_address, netuid)
        if uid is None:
            return ExtrinsicResponse(success=False, message="hotkey not registered on local chain")
        uids = [int(u) for u in list(uids)]
        ws = [float(w) for w in list(weights)]
        top = max(ws) if ws and max(ws) > 0 else 1.0
        state = self.chain_state["SubtensorModule"]
        block = self.get_current_block()
        state["Weights"][netuid][uid][block] = [(u, int(round(w / top * U16_MAX))) for u, w in zip(uids, ws)]
        state["LastUpdate"][netuid][uid][block] = block
        return ExtrinsicResponse(success=True, message="weights set on local chain")

    # ---- queries the 10.5.0 mock gets wrong ---------------------------------------------
    def _uid_in_state(self, hotkey_ss58: str, netuid: int, block: Optional[int] = None) -> Optional[int]:
        uids = self.chain_state["SubtensorModule"]["Uids"].get(netuid, {})
        if hotkey_ss58 not in uids:
            return None
        return self._get_most_recent_storage(uids[hotkey_ss58], block)

    def get_uid_for_hotkey_on_subnet(self, hotkey_ss58: str, netuid: int, block: Optional[int] = None) -> Optional[int]:
        self._sync_from_file()
        return self._uid_in_state(hotkey_ss58, netuid, block)

    def neurons(self, netuid: int, block: Optional[int] = None):
        self._sync_from_file()
        return super().neurons(netuid, block)

    def neurons_lite(self, netuid: int, block: Optional[int] = None):
        self._sync_from_file()
        return super().neurons_lite(netuid, block)

    def neuron_for_uid_lite(self, uid: int, netuid: int, block: Optional[int] = None) -> Optional[NeuronInfoLite]:
        """The full neuron cut down to ``NeuronInfoLite``'s fields (the mock's own lite path
        reads a ``rank`` that 10.5.0's NeuronInfo no longer has)."""
        n = self.neuron_for_uid(uid, netuid, block)
        if n is None:
            return None
        return NeuronInfoLite(**{f.name: getattr(n, f.name) for f in dataclasses.fields(NeuronInfoLite)})

    def query_runtime_api(self, runtime_api: str, method: str, params=None, block: Optional[int] = None):
        """Answer ``get_subnet_state`` (the metagraph's stake source) from the mock state."""
        if method != "get_subnet_state":
            return None
        netuid = int((params or [DEFAULT_NETUID])[0])
        if netuid not in self.chain_state["SubtensorModule"]["NetworksAdded"]:
            return None
        ns = MockSubtensor.neurons(self, netuid, block)
        z = [0] * len(ns)
        return {
            "netuid": netuid, "hotkeys": [n.hotkey for n in ns], "coldkeys": [n.coldkey for n in ns],
            "active": [bool(n.active) for n in ns], "validator_permit": [bool(n.validator_permit) for n in ns],
            "pruning_score": z, "last_update": [int(n.last_update) for n in ns], "emission": z, "dividends": z,
            "incentives": z, "consensus": z, "trust": z, "rank": z, "block_at_registration": z,
            "alpha_stake": [int(n.total_stake.rao) for n in ns], "tao_stake": z,
            "total_stake": [int(n.total_stake.rao) for n in ns], "emission_history": [],
        }

    def get_metagraph_info(self, *args: Any, **kwargs: Any):
        return None

    def get_mechanism_count(self, *args: Any, **kwargs: Any) -> int:
        return 1

    def get_mechanism_emission_split(self, *args: Any, **kwargs: Any):
        return None

    def metagraph(self, netuid: int, mechid: int = 0, lite: bool = True, block: Optional[int] = None) -> "bt.Metagraph":
        self._sync_from_file()
        return super().metagraph(netuid, mechid=mechid, lite=lite, block=block)


def open_local_chain(root: str | os.PathLike, netuid: int = DEFAULT_NETUID,
                     block_time: float = DEFAULT_BLOCK_TIME) -> LocalSubtensor:
    """Open (creating if needed) the local chain stored under ``root``, with ``netuid`` created.

    Resets this process's MockSubtensor state if a different root was open before;
    reopening the root that is already open only re-reads its file (``block_time`` is
    taken from the first opening).
    """
    root = Path(root).expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    current = _attached(root, block_time)
    current.create_subnet(netuid)
    return current


def _attached(root: Path, block_time: float) -> LocalSubtensor:
    """This process's chain, attached to ``root`` (MockSubtensor's state reset if another root was open)."""
    current = LocalSubtensor()
    if getattr(current, "local_root", None) != root:
        MockSubtensor.reset()
        current = LocalSubtensor()
        current._attach(root, block_time)
    return current


def local_setup(root: str | os.PathLike, netuid: int = DEFAULT_NETUID, miners: tuple[str, ...] = ("miner",),
                validators: tuple[str, ...] = ("validator",), validator_stake: float = 1000.0,
                block_time: float = DEFAULT_BLOCK_TIME) -> tuple[LocalSubtensor, dict[str, "bt.Wallet"]]:
    """Patch the external IP, open the chain, create wallets and register them.

    Miners are registered without stake or permit; validators with ``validator_stake``
    TAO and a validator permit (so a miner's blacklist serves them). Returns the
    subtensor and ``{name: wallet}``.
    """
    patch_external_ip()
    chain = open_local_chain(root, netuid, block_time)
    wallets: dict[str, bt.Wallet] = {}
    for name in miners:
        wallets[name] = w = local_wallet(root, name)
        if chain.get_uid_for_hotkey_on_subnet(w.hotkey.ss58_address, netuid) is None:
            chain.register(w, netuid)
    for name in validators:
        wallets[name] = w = local_wallet(root, name)
        chain.register(w, netuid, stake=validator_stake, validator=True)
    return chain, wallets


def describe_chain(root: str | os.PathLike, netuid: Optional[int] = None) -> dict:
    """The state of the local chain under ``root``, as ``show`` prints it (read only).

    ``{"root", "block", "block_time", "subnets": {netuid: [{"uid", "name", "hotkey",
    "coldkey", "stake", "validator_permit", "axon"}, ...]}}``; ``axon`` is ``"ip:port"``
    once a miner served one, else None. Raises FileNotFoundError if there is no chain.
    """
    root = Path(root).expanduser().resolve()
    path = root / CHAIN_FILE
    spec = _read_spec(path)
    if not spec:
        raise FileNotFoundError(f"no local chain at {root} (no {CHAIN_FILE}); create one with "
                                f"'python -m bitmind.local_chain setup {root}'")
    current = _attached(root, float(spec.get("block_time", DEFAULT_BLOCK_TIME)))  # creates nothing
    netuids = sorted(int(k) for k in spec.get("subnets", {}))
    if netuid is not None:
        if netuid not in netuids:
            raise ValueError(f"netuid {netuid} does not exist on the local chain at {root} (subnets: {netuids})")
        netuids = [netuid]
    out = {"root": str(root), "block": current.get_current_block(), "block_time": current.block_time, "subnets": {}}
    for n in netuids:
        names = {e["hotkey"]: e.get("name") for e in spec["subnets"][str(n)].get("neurons", [])}
        mg = current.metagraph(n)
        rows = []
        for uid, hotkey in zip(mg.uids.tolist(), mg.hotkeys):
            ax = mg.axons[uid]
            served = ax.ip not in ("0.0.0.0", "") and int(ax.port) > 0
            rows.append({"uid": int(uid), "name": names.get(hotkey), "hotkey": hotkey, "coldkey": mg.coldkeys[uid],
                         "stake": float(mg.S[uid]), "validator_permit": bool(mg.validator_permit[uid]),
                         "axon": f"{ax.ip}:{ax.port}" if served else None})
        out["subnets"][n] = rows
    return out


def format_chain(state: dict) -> str:
    """``describe_chain``'s result as the table ``show`` prints."""
    lines = [f"local chain {state['root']} (block {state['block']}, "
             + (f"{state['block_time']:g} s per block)" if state["block_time"] else "block frozen)"),
             f"wallets: {wallet_dir(state['root'])} (bt.Wallet(name=NAME, hotkey='default', path=that folder))"]
    for netuid, rows in state["subnets"].items():
        lines.append(f"\nnetuid {netuid}: {len(rows)} neuron(s)")
        lines.append(f"  {'uid':>3}  {'name':<20} {'hotkey':<48} {'stake':>10}  {'permit':<6}  axon")
        for r in rows:
            lines.append(f"  {r['uid']:>3}  {(r['name'] or '?'):<20} {r['hotkey']:<48} {r['stake']:>10.3f}  "
                         f"{'yes' if r['validator_permit'] else 'no':<6}  {r['axon'] or '-'}")
    return "\n".join(lines)


def _cli_setup(a: argparse.Namespace) -> int:
    overlap = set(a.miners) & set(a.validators)
    if overlap:
        print(f"error: {sorted(overlap)} named as both miner and validator (a hotkey has one registration)",
              file=sys.stderr)
        return 2
    problem = output_path_problem(a.root, "ROOT", folder=True)  # a file, under a file, or not writable
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    root = Path(a.root).expanduser().resolve()
    try:
        local_setup(root, a.netuid, miners=tuple(a.miners), validators=tuple(a.validators),
                    validator_stake=a.validator_stake, block_time=a.block_time)
    except OSError as e:  # a folder the checks above cannot foresee (read-only file system, /proc)
        print(f"error: cannot create the local chain at {a.root}: {e.strerror or e}", file=sys.stderr)
        return 2
    state = describe_chain(root, a.netuid)
    if a.json:
        print(json.dumps(state, indent=1))
        return 0
    print(format_chain(state))
    if a.miners:
        print(f"\nstart a miner on it:\n  python neurons/miner.py --mock --local.root {root} --netuid {a.netuid} "
              f"--wallet.name {a.miners[0]} --wallet.hotkey default --axon.port 8091")
    if a.validators:
        print(f"a client signs as validator {a.validators[0]!r} with bt.Wallet(name={a.validators[0]!r}, "
              f"hotkey='default', path={str(wallet_dir(root))!r}); offline, call "
              "bitmind.local_chain.patch_external_ip() before bt.Dendrite()")
    return 0


def _cli_show(a: argparse.Namespace) -> int:
    root = Path(a.root).expanduser()
    if root.exists() and not root.is_dir():
        print(f"error: ROOT {a.root} is a file, not a folder", file=sys.stderr)
        return 2
    try:
        state = describe_chain(a.root, a.netuid)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # under a file (NotADirectoryError), unreadable (PermissionError)
        print(f"error: cannot read the local chain at {a.root}: {e.strerror or e}", file=sys.stderr)
        return 2
    print(json.dumps(state, indent=1) if a.json else format_chain(state))
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bitmind.local_chain",
                                 description="Create and inspect a local mock chain (for --mock miners and validators).")
    sub = ap.add_subparsers(dest="command", required=True)
    s = sub.add_parser("setup", help="create wallets and register them on the local chain under ROOT (idempotent)")
    s.add_argument("root", metavar="ROOT", help="chain folder (chain.json, wallets/); the miner's --local.root")
    s.add_argument("--netuid", type=int, default=DEFAULT_NETUID, help="subnet to create (default 34, the miner's default --netuid)")
    s.add_argument("--miners", nargs="*", default=["miner"], metavar="NAME",
                   help="wallet names to register as miners, no stake or permit (default: miner)")
    s.add_argument("--validators", nargs="*", default=["validator"], metavar="NAME",
                   help="wallet names to register as validators, with stake and a validator permit (default: validator)")
    s.add_argument("--validator_stake", type=float, default=1000.0, help="validators' stake in TAO (default 1000)")
    s.add_argument("--block_time", type=float, default=DEFAULT_BLOCK_TIME,
                   help=f"seconds per block when the chain is created (default {DEFAULT_BLOCK_TIME:g}; 0 freezes it)")
    s.add_argument("--json", action="store_true", help="print the resulting state as JSON")
    s.set_defaults(run=_cli_setup)
    sh = sub.add_parser("show", help="print hotkeys, UIDs, stakes, validator permits and served axons (read only)")
    sh.add_argument("root", metavar="ROOT", help="chain folder")
    sh.add_argument("--netuid", type=int, default=None, help="only this subnet (default: all)")
    sh.add_argument("--json", action="store_true", help="print JSON instead of a table")
    sh.set_defaults(run=_cli_show)
    a = ap.parse_args(argv)
    return a.run(a)


def query_axon(wallet, axon, synapse, timeout: float = 30.0):
    """One request through a fresh ``bt.Dendrite`` signed by ``wallet``, on its own event
    loop; returns the response synapse (used by the demo, benchmarks and tests)."""
    import asyncio

    async def one():
        dendrite = bt.Dendrite(wallet=wallet)
        try:
            return dendrite, await dendrite.forward(axon, synapse, timeout=timeout, deserialize=False)
        finally:
            await dendrite.aclose_session()

    # Keep the dendrite alive until the loop is gone: its __del__ warns inside a running loop.
    dendrite, response = asyncio.run(one())
    del dendrite
    return response


if __name__ == "__main__":
    sys.exit(main())
