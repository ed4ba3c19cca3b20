"""Local challenge harness: N miners and one validator on one machine, real wire path.

    python -m bitmind.validator.harness --models A.pth B.pth --data DIR --challenges 200 [--seed S] [--json OUT]

Starts a local chain (``bitmind.local_chain``) in a temporary folder, registers a
validator (with stake and a validator permit) and one miner per model file, serves each
miner with the real miner wiring (``bitmind.miner.neuron.MinerNeuron``: ``Predictor``,
``MinerHandlers`` forward/blacklist/priority, a real ``bt.Axon`` on 127.0.0.1), then
sends K challenges drawn from the data through the validator pipeline with a real
``bt.Dendrite``, and prints a per-miner table: accuracy, real and fake accuracy, mean
and p95 latency, failures, final moving-average score and weight.

Everything runs in this process (axons serve from their own threads), so it needs no
ports beyond loopback and no cleanup of stray processes. ``run_harness(...)`` is the
same thing as a function returning the results.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Sequence

import bittensor as bt

from bitmind import local_chain as lc
from bitmind.checkpoint import model_file_problem
from bitmind.common import PLAIN_SHARE, atomic_write_text, output_path_problem, positive_float, positive_int, unit_fraction

from bitmind.data import SPLITS
from bitmind.validator.chain import ChainView
from bitmind.validator.challenges import ChallengeGenerator
from bitmind.validator.core import Validator, ValidatorConfig
from bitmind.validator.query import DEFAULT_TIMEOUT
from bitmind.validator.report import format_table

logger = logging.getLogger(__name__)


class LocalNetwork:
    """A local chain with a registered validator wallet and miners served on loopback.

    Use as a context manager; ``close()`` stops every axon and predictor it started.
    """

    def __init__(self, root: str | os.PathLike, netuid: int = lc.DEFAULT_NETUID, validator_name: str = "validator",
                 validator_stake: float = 1000.0):
        lc.patch_external_ip()
        self.root, self.netuid = Path(root), int(netuid)
        self.chain = lc.open_local_chain(self.root, self.netuid, block_time=0)  # frozen block: no time-driven surprises
        self.validator_wallet = lc.local_wallet(self.root, validator_name)
        self.validator_uid = self.chain.register(self.validator_wallet, self.netuid, stake=validator_stake, validator=True)
        self.names: dict[int, str] = {}
        self.miners: list = []  # MinerNeuron instances
        self.axons: list = []  # bare axons (add_axon_miner)

    def add_model_miner(self, name: str, model_path: str | os.PathLike, device: str = "cpu") -> int:
        """Start the real miner (predictor + handlers + axon) serving ``model_path``; returns its UID."""
        from bitmind.miner.config import miner_config
        from bitmind.miner.neuron import MinerNeuron

        port = lc.free_port()
        cfg = miner_config(["--mock", "--local.root", str(self.root), "--netuid", str(self.netuid),
                            "--wallet.name", name, "--axon.port", str(port), "--neuron.model_path", str(model_path),
                            "--neuron.device", device])
        neuron = MinerNeuron(cfg, model_path, subtensor=self.chain, wallet=lc.local_wallet(self.root, name))
        neuron.start()
        self.miners.append(neuron)
        return self._listening(neuron.uid, name, port)

    def add_axon_miner(self, name: str, forward_fn: Callable, **attach_kw) -> int:
        """Register a hotkey and serve a bare ``bt.Axon`` with ``forward_fn`` (for misbehaving test miners)."""
        wallet = lc.local_wallet(self.root, name)
        uid = self.chain.register(wallet, self.netuid)
        port = lc.free_port()
        axon = bt.Axon(wallet=wallet, port=port, ip=lc.LOCAL_IP, external_ip=lc.LOCAL_IP)
        axon.attach(forward_fn=forward_fn, **attach_kw)
        axon.serve(netuid=self.netuid, subtensor=self.chain)
        axon.start()
        self.axons.append(axon)
        return self._listening(uid, name, port)

    def _listening(self, uid: int, name: str, port: int, timeout: float = 15.0) -> int:
        """Name ``uid`` once its axon on 127.0.0.1:``port`` accepts connections (its server thread is up)."""
        if not lc.wait_for_port(port, timeout=timeout):
            raise TimeoutError(f"nothing listening on {lc.LOCAL_IP}:{port} after {timeout:.0f}s")
        self.names[uid] = name
        return uid

    def register_down_miner(self, name: str) -> int:
        """A registered miner whose published axon has nothing listening (a miner that is down)."""
        wallet = lc.local_wallet(self.root, name)
        uid = self.chain.register(wallet, self.netuid)
        axon = bt.Axon(wallet=wallet, port=lc.free_port(), ip=lc.LOCAL_IP, external_ip=lc.LOCAL_IP)
        axon.serve(netuid=self.netuid, subtensor=self.chain)  # published, never started
        self.names[uid] = name
        return uid

    def validator(self, generator: ChallengeGenerator, config: ValidatorConfig = ValidatorConfig()) -> Validator:
        """A ``Validator`` for the registered validator wallet (miners re-sync first, so they know it)."""
        for m in self.miners:
            m.sync()
        chain = ChainView(self.chain, self.validator_wallet, self.netuid)
        return Validator(chain, bt.Dendrite(wallet=self.validator_wallet), generator, config, names=dict(self.names))

    def close(self) -> None:
        for served in self.miners + self.axons:  # MinerNeuron.stop stops its axon and predictor
            try:
                served.stop()
            except Exception as e:
                logger.warning("stopping %s: %s", type(served).__name__, e)
        self.miners, self.axons = [], []

    def __enter__(self) -> "LocalNetwork":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class HarnessInputError(ValueError):
    """A model file, data source or output path the harness cannot use: raised before any
    miner starts, so a typo costs no chain, no miner and no challenge."""


def _unique_names(paths: Sequence[str]) -> list[str]:
    names, seen = [], {}
    for p in paths:
        base = Path(p).stem or "model"
        seen[base] = seen.get(base, 0) + 1
        names.append(base if seen[base] == 1 else f"{base}#{seen[base]}")
    return names


def run_harness(models: Sequence[str | os.PathLike], data: str | Sequence[str], challenges: int = 100, seed: int = 0,
                timeout: float = DEFAULT_TIMEOUT, plain_share: float = PLAIN_SHARE, device: str = "cpu",
                json_out: str | os.PathLike | None = None, root: str | os.PathLike | None = None,
                split: str | None = None, split_seed: int = 0, progress: bool = False) -> dict:
    """Serve each model file as a local miner, send ``challenges`` challenges from ``data``
    to all of them, and return the per-miner results (also written to ``json_out``).

    Returns ``{"config", "challenges", "labels", "elapsed_s", "miners": [row, ...], "table"}``;
    each row has uid, name, model, challenges, accuracy, real_accuracy, fake_accuracy,
    latency_mean_ms, latency_p95_ms, failures (timeouts/errors/invalid), score, weight.

    Every input is checked before anything starts (``HarnessInputError``, a ValueError):
    ``json_out`` and ``root`` writable, the data sources readable and holding images, each
    model file present and loadable.
    """
    if not models:
        raise HarnessInputError("give at least one model file")
    problem = output_path_problem(json_out, "json_out") or output_path_problem(root, "root", folder=True)
    if problem:
        raise HarnessInputError(problem)
    missing = next((f"model file {m} not found" for m in models if not Path(m).expanduser().exists()), None)
    if missing:  # a stat, before listing the data
        raise HarnessInputError(missing)
    specs = [data] if isinstance(data, (str, os.PathLike)) else list(data)
    try:
        generator = ChallengeGenerator.from_specs([str(s) for s in specs], plain_share=plain_share, seed=seed,
                                                  split=split, split_seed=split_seed)
    except (OSError, ValueError) as e:  # no such folder, no images, a hub dataset that cannot be read
        raise HarnessInputError(str(e)) from e
    problem = next(filter(None, map(model_file_problem, models)), None)
    if problem:
        raise HarnessInputError(problem)
    tmp = tempfile.TemporaryDirectory(prefix="bitmind-harness-") if root is None else None
    t0 = time.perf_counter()
    try:
        with LocalNetwork(tmp.name if tmp else root) as net:
            paths = [str(Path(m).expanduser().resolve()) for m in models]
            uid_model = {}
            for name, path in zip(_unique_names(paths), paths):
                uid_model[net.add_model_miner(name, path, device=device)] = path
            cfg = ValidatorConfig(sample_size=len(paths), timeout=timeout, epoch_length=0, sync_every=0,
                                  seed=seed, set_weights=False)
            validator = net.validator(generator, cfg)
            try:
                step = max(1, challenges // 10)
                for k in range(challenges):
                    validator.run_round()
                    if progress and ((k + 1) % step == 0 or k + 1 == challenges):
                        print(f"  {k + 1}/{challenges} challenges", file=sys.stderr, flush=True)
                weights = validator.scores.weights(exclude=[net.validator_uid])
                ok, msg = validator.chain.set_weights(sorted(uid_model), [float(weights[u]) for u in sorted(uid_model)])
                rows = validator.stats.summaries(validator.scores.scores)
            finally:
                validator.close()
    finally:
        if tmp is not None:
            tmp.cleanup()
    for row in rows:
        row["model"] = uid_model.get(row["uid"])
        row["weight"] = float(weights[row["uid"]])
    result = {
        "config": {"models": [str(m) for m in models], "data": [str(s) for s in specs], "challenges": challenges,
                   "seed": seed, "timeout": timeout, "plain_share": plain_share, "device": device,
                   "split": split, "split_seed": split_seed if split else None},
        "challenges": validator.stats.challenges,
        "labels": {"real": validator.stats.labels[0], "fake": validator.stats.labels[1]},
        "weights_set": ok, "elapsed_s": time.perf_counter() - t0, "miners": rows,
    }
    result["table"] = format_table(rows)
    if json_out:
        atomic_write_text(json_out, json.dumps(result, indent=2))
    return result


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bitmind.validator.harness", description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", required=True, help="Model files, one local miner each.")
    p.add_argument("--data", nargs="+", required=True,
                   help="Challenge sources: CLASS/SOURCE/* folders or hf:NAME_OR_PATH[:real|fake].")
    p.add_argument("--challenges", type=positive_int, default=100, help="Number of challenges (each goes to every miner).")
    p.add_argument("--seed", type=int, default=0, help="Seed of the challenge sequence (same seed, same challenges).")
    p.add_argument("--timeout", type=positive_float, default=DEFAULT_TIMEOUT, help="Seconds a miner has to answer.")
    p.add_argument("--plain_share", "--plain-share", type=unit_fraction, default=PLAIN_SHARE, help="Share of challenges without random augmentation.")
    p.add_argument("--split", choices=SPLITS, default=None,
                   help="Challenge only with this split of the data (by picture stem, as the trainer splits); "
                        "default: all images. Use 'test' to compare models on pictures they never trained on.")
    p.add_argument("--split_seed", type=int, default=0, help="Seed of the split (the trainer's --split_seed).")
    p.add_argument("--device", default="cpu", help="Device the miners run on (cpu, cuda, cuda:1, ...).")
    p.add_argument("--json", dest="json_out", default=None, help="Write the results as JSON here.")
    p.add_argument("--root", default=None, help="Local chain folder (default: a temporary one).")
    p.add_argument("-v", "--verbose", action="store_true", help="Log the miners' and validator's progress.")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    problem = output_path_problem(args.json_out, "--json") or output_path_problem(args.root, "--root", folder=True)
    if problem:  # before the chain, the miners and the challenges, not after
        print(f"error: {problem}", file=sys.stderr)
        return 2
    try:
        res = run_harness(args.models, args.data, args.challenges, seed=args.seed, timeout=args.timeout,
                          plain_share=args.plain_share, device=args.device, json_out=args.json_out, root=args.root,
                          split=args.split, split_seed=args.split_seed, progress=True)
    except HarnessInputError as e:  # raised before anything started: one line, as bitmind.eval says it
        print(f"error: {e}", file=sys.stderr)
        return 2
    where = f"split {args.split!r} (seed {args.split_seed})" if args.split else "all images"
    print(f"{res['challenges']} challenges ({res['labels']['real']} real, {res['labels']['fake']} fake) from {where}, "
          f"{len(res['miners'])} miners, {res['elapsed_s']:.1f}s, timeout {args.timeout}s, seed {args.seed}")
    print(res["table"])
    if args.json_out:
        print(f"results written to {args.json_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
