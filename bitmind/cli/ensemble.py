"""Combine trained detectors into one ensemble checkpoint.

    python -m bitmind.ensemble --members a.pth b.pth --out mining_models/ensemble.pth

The result is an ordinary self-describing model file (arch ``ensemble``; its config lists
each member's arch and config; the weights sit under ``members.<i>.``): the miner serves
it, hot-reloads it and ``bitmind.eval`` measures it like any single model. The ensemble's
logit is the mean of its members' raw logits. Members' own calibrations do not carry
over; fit one for the ensemble with ``python -m bitmind.calibrate`` on the validation split.
"""
from __future__ import annotations

import argparse
import logging
import math
import sys
from pathlib import Path

from bitmind import checkpoint
from bitmind.checkpoint import CheckpointError, file_sha256, model_meta, read_checkpoint, save_checkpoint
from bitmind.common import output_path_problem
from bitmind.models import build_model
from bitmind.models.npr import detector_only

logger = logging.getLogger(__name__)


def build_ensemble_checkpoint(members: list[str | Path], out: str | Path) -> Path:
    """Write an ensemble of the checkpoints ``members`` to ``out``; returns ``out``. An
    ``out`` that cannot be written (a folder, a read-only place) is a ValueError before
    any member is read."""
    problem = output_path_problem(out, "--out")
    if problem:  # before reading every member, not an IsADirectoryError at the end
        raise ValueError(problem)
    if len(members) < 2:
        raise ValueError("an ensemble needs at least two member checkpoints")
    resolved = [Path(m).resolve() for m in members]
    if Path(out).resolve() in resolved:  # it would replace that member's file with the ensemble
        raise ValueError(f"--out {out} is one of the members: write the ensemble to another file")
    if len(set(resolved)) < len(resolved):
        logger.warning("a member is listed more than once: its logit counts once per listing in the mean")
    specs, states, provenance = [], [], []
    for path in members:
        state, meta = read_checkpoint(path)
        if meta.get("arch") == "ensemble":
            raise ValueError(f"{path} is already an ensemble; list its members instead")
        if meta.get("arch", "npr") == "npr":  # a member's auxiliary head is left behind, as the miner does
            state, meta = detector_only(state, meta)
        specs.append({"arch": meta.get("arch", "npr"), "config": meta.get("config", {})})
        states.append(state)
        provenance.append({"file": Path(path).name, "sha256": file_sha256(path), "val": meta.get("metrics", {}).get("val"),
                           "epoch": meta.get("metrics", {}).get("epoch"), "train_options": meta.get("train_options")})
    model = build_model("ensemble", members=specs)
    for sub, state in zip(model.members, states):
        sub.load_state_dict(state, strict=True)
    meta = model_meta(model, "ensemble", members=provenance)
    return save_checkpoint(model, out, meta)


def main(argv=None) -> Path:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--members", nargs="+", required=True, help="member checkpoints (.pth or .safetensors)")
    p.add_argument("--out", required=True, help="the ensemble checkpoint to write")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        out = build_ensemble_checkpoint(args.members, args.out)
    except (CheckpointError, OSError, ValueError) as e:  # one line, exit 2: a usage error, not a traceback
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"wrote {out} ({len(args.members)} members)")
    size, cap = Path(out).stat().st_size, checkpoint.MAX_MODEL_BYTES
    if size > cap:  # written, but a miner with the default cap would refuse it unread
        print(f"note: {out} is {size / 2**20:.1f} MiB, more than the {cap / 2**20:g} MiB a miner reads by default: "
              f"serve it with --neuron.max_model_mb {math.ceil(size / 2**20)} or more")
    return out


if __name__ == "__main__":
    main()
