"""Combine trained detectors into one ensemble checkpoint.

    python -m bitmind.ensemble --members a.pth b.pth --out mining_models/ensemble.pth

The result is an ordinary self-describing model file (arch ``ensemble``; its config lists
each member's arch and config; the weights sit under ``members.<i>.``): the miner serves
it, hot-reloads it and ``bitmind.eval`` measures it like any single model. The ensemble's
logit is the mean of its members' raw logits. The file is written uncalibrated (T=1,
bias=0): the members' own calibrations do not carry over; fit one for the ensemble with
``python -m bitmind.calibrate`` on the validation split (the command prints the exact line).

A member that does not load (not a model file, or weights that do not fit the architecture
its metadata names) is one ``error: member I of N: ...`` line with exit status 2, as is any
usage error; nothing is written then. An ``--out`` that is a symlink is written through: the
file it points at is replaced (atomically), the link kept. Ctrl-C stops it with one line and
exit status 130, nothing half-written (the file is written whole, then renamed into place).
"""
from __future__ import annotations

from bitmind.shutdown import (exit_interrupted, exit_interrupted_while_starting, file_marks, interrupt_while_importing,
                              written_since)

with interrupt_while_importing("bitmind.ensemble", "bitmind.cli.ensemble"):  # torch loads here (~2 s): a Ctrl-C then is one line
    import argparse
    import json
    import logging
    import math
    import shlex
    import sys
    from pathlib import Path

    from bitmind import checkpoint
    from bitmind.checkpoint import (CheckpointError, build_network, file_sha256, model_meta, read_checkpoint,
                                    save_checkpoint)
    from bitmind.common import output_path_problem, write_target
    from bitmind.evaluation import members_split
    from bitmind.models import build_model

logger = logging.getLogger(__name__)

PROG = "python -m bitmind.ensemble"
#: How the ensemble's calibration is fitted (as ``bitmind.calibrate``'s docstring shows):
#: validator challenges of the validation split, six draws pooled.
CALIBRATE_OPTIONS = "--split val --challenge --seeds 0 1 2 3 4 5"


#: The same on pictures none of the members trained on, where they were split differently.
CALIBRATE_OPTIONS_HELD_OUT = "--split all --challenge --seeds 0 1 2 3 4 5"


def calibrate_command(out: str | Path, members_data: list | None = None, same_split: bool = True) -> str:
    """The ``python -m bitmind.calibrate`` line that fits the ensemble file ``out`` in place:
    on ``members_data`` (the data roots the members were trained on, when they all share
    them) and their validation split, else on ``DIR`` for the operator to name; where the
    members were split differently (``same_split`` False) no split keeps every member off its
    training pictures, so on all of ``DIR``, pictures none of them trained on."""
    if not same_split:
        return f"python -m bitmind.calibrate --model {shlex.quote(str(out))} --data DIR {CALIBRATE_OPTIONS_HELD_OUT}"
    data = " ".join(shlex.quote(str(d)) for d in members_data) if members_data else "DIR"
    return f"python -m bitmind.calibrate --model {shlex.quote(str(out))} --data {data} {CALIBRATE_OPTIONS}"


def member_roots(path: str | Path, record: dict) -> list[str] | None:
    """The ``--data`` roots member ``path`` trained on, as its run folder's ``opt.json`` holds
    them (absolute) where that file sits beside it, else as its ``train_options`` hold them (as
    typed). Why: the roots as typed (``../tiny``) made the printed calibrate line fail from any
    other folder (operator review). Its ``--challenge_data`` roots are left out: they already
    are validator challenges, which the trainer validates on as they are, while the printed
    line's ``--challenge`` would send them through the validator's augmentation and JPEG again."""
    options = record.get("train_options") or {}
    try:
        saved = json.loads((Path(path).parent / "opt.json").read_text())
    except (OSError, ValueError):
        saved = {}
    if not isinstance(saved, dict) or len(saved.get("data") or []) != len(options.get("data") or []):
        saved = {}  # another run's options, or none
    value = saved.get("data") if isinstance(saved.get("data"), list) else options.get("data")
    return [str(v) for v in value] if isinstance(value, list) and value else None


def shared_data(provenance: list[dict], members: list[str | Path]) -> list | None:
    """The data roots every member was trained on (``member_roots`` of each member file and
    its provenance record), when all members have the same ones; else None."""
    roots = [member_roots(m, rec) for m, rec in zip(members, provenance)]
    first = roots[0] if roots else None
    if not first or not isinstance(first, list) or any(r != first for r in roots):
        return None
    return first


def build_ensemble_checkpoint(members: list[str | Path], out: str | Path) -> Path:
    """``write_ensemble``'s file alone."""
    return write_ensemble(members, out)[0]


def write_ensemble(members: list[str | Path], out: str | Path) -> tuple[Path, dict]:
    """Write an ensemble of the checkpoints ``members`` to ``out`` (through a symlink: the
    file it points at is replaced); returns ``out`` and the metadata written. An ``out``
    that cannot be written (a folder, a read-only place) is a ValueError before any member
    is read; a member that does not load, a ``CheckpointError`` naming it (``member I of N:
    ...``), before anything is written. The file is uncalibrated (T=1, bias=0)."""
    target = write_target(out)
    problem = output_path_problem(target, "--out")  # where the write lands (through a link), not the link's folder
    if problem:  # before reading every member, not an IsADirectoryError at the end
        raise ValueError(problem)
    if len(members) < 2:
        raise ValueError("an ensemble needs at least two member checkpoints")
    resolved = [Path(m).resolve() for m in members]
    if Path(out).resolve() in resolved:  # it would replace that member's file with the ensemble
        raise ValueError(f"--out {out} is one of the members: write the ensemble to another file")
    if len(set(resolved)) < len(resolved):
        logger.warning("a member is listed more than once: its logit counts once per listing in the mean")
    specs, nets, provenance = [], [], []
    for i, path in enumerate(members, 1):
        try:
            state, meta = read_checkpoint(path)
            if meta.get("arch") == "ensemble":
                raise ValueError(f"{path} is already an ensemble; list its members instead")
            # the network its metadata describes, loaded strictly (a member's auxiliary head is
            # left behind, as the miner does): weights that do not fit are a CheckpointError here
            net, meta = build_network(meta.get("arch", "npr"), state, meta, detector_only=True, path=path)
        except CheckpointError as e:
            raise CheckpointError(f"member {i} of {len(members)}: {e}") from None
        except ValueError as e:
            raise ValueError(f"member {i} of {len(members)}: {e}") from None
        specs.append({"arch": meta.get("arch", "npr"), "config": meta.get("config") or {}})
        nets.append(net)
        provenance.append({"file": Path(path).name, "run": Path(path).resolve().parent.name,
                           "sha256": file_sha256(path), "val": meta.get("metrics", {}).get("val"),
                           "epoch": meta.get("metrics", {}).get("epoch"), "train_options": meta.get("train_options")})
    model = build_model("ensemble", members=specs)
    for sub, net in zip(model.members, nets):
        sub.load_state_dict(net.state_dict(), strict=True)
    meta = model_meta(model, "ensemble", members=provenance)
    save_checkpoint(model, target, meta)
    return Path(out), meta


def interrupted_line(out: str | Path, marks: dict) -> str:
    """What a Ctrl-C left: nothing (the file is written whole, then renamed over ``out``'s
    target), or, past the rename, the whole new file."""
    target = write_target(out, strict=False)
    if written_since(marks):
        return f"interrupted after {out} was written: it holds the whole ensemble (uncalibrated)"
    state = "is unchanged" if marks.get(target) is not None else "was not created"
    return f"interrupted: nothing written ({out} {state})"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG, description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="The file is written UNCALIBRATED (T=1, bias=0): the members' calibrations do not carry\n"
               "over. Calibrate it afterwards, in place (the command prints this line with its --out\n"
               "and, where the members record the same data roots, those):\n  " + calibrate_command("OUT.pth"))
    p.add_argument("--members", nargs="+", required=True, help="member checkpoints (.pth or .safetensors)")
    p.add_argument("--out", required=True,
                   help="the ensemble checkpoint to write (uncalibrated); a symlink is written through: the file it "
                        "points at is replaced atomically and the link kept")
    return p


def main(argv=None) -> Path:
    try:
        args = build_parser().parse_args(argv)
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        marks = file_marks([write_target(args.out, strict=False)])
    except KeyboardInterrupt:
        exit_interrupted_while_starting()
    try:
        out, meta = write_ensemble(args.members, args.out)
    except (CheckpointError, OSError, ValueError) as e:  # one line, exit 2: a usage error, not a traceback
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        exit_interrupted(interrupted_line(args.out, marks))
    target = write_target(out, strict=False)
    through = f"; through the link: {target} replaced, the link kept" if target != Path(out) else ""
    try:
        members_split(meta)
        same_split = True
    except ValueError as e:  # said, and the line fits on pictures none of them trained on
        print(f"note: {e}")
        same_split = False
    command = calibrate_command(out, shared_data(meta["members"], args.members), same_split)
    print(f"wrote {out} ({len(args.members)} members{through}): uncalibrated (T=1, bias=0; the members' calibrations "
          f"do not carry over); calibrate it before serving it:\n  {command}")
    size, cap = Path(out).stat().st_size, checkpoint.MAX_MODEL_BYTES
    if size > cap:  # written, but a miner with the default cap would refuse it unread
        print(f"note: {out} is {size / 2**20:.1f} MiB, more than the {cap / 2**20:g} MiB a miner reads by default: "
              f"serve it with --neuron.max_model_mb {math.ceil(size / 2**20)} or more")
    return out


if __name__ == "__main__":
    main()
