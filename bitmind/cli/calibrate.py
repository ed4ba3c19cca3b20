"""Re-calibrate a checkpoint on held-out data: ``python -m bitmind.calibrate``.

Fits Platt scaling (``sigmoid(logit / T + b)``, see ``bitmind.calibration``) on the
logits of a validation split, optionally seen as several independent draws of
validator challenges (``--challenge --seeds 0 1 2 ...``: more samples of the
distribution the miner is scored on than one pass gives), and writes the result into
the checkpoint's metadata. The new fit is kept only if it does better (class-balanced
Brier score, on the same pictures) than the calibration already stored in the file:
otherwise the stored one stays, so a re-run on little or odd data never makes a model
worse (``--replace`` stores the fit anyway). Data that cannot calibrate (one class, or
not one readable picture) is an error and nothing is written; so is any usage error
(``error: ...``, exit status 2), an ``--out`` that cannot be written included, or one inside
a folder the pictures are read from (``DIR/real``, ``DIR/fake``: a model file there would sit
among the pictures), both checked before any picture is read.

Without ``--out`` the file given to ``--model`` is rewritten in place, whether or not the
new fit is kept (the calibration record in its metadata is always new): a miner serving
that file reloads it. The last line on stderr says what was written and which
calibration the file now serves with. The file is written whole, then renamed into place,
so a reader never sees half of it. A ``--model`` (or ``--out``) that is a symlink is written
through: the file it points at is replaced, the link kept (``ln -s v14.pth current.pth``:
calibrating ``current.pth`` in place rewrites ``v14.pth``; pass ``--out`` for a new file).
Ctrl-C stops it with one line and exit status 130; nothing is written then.

    python -m bitmind.calibrate --model M.pth --data DIR [DIR2 ...] --split val --challenge --seeds 0 1 2 3 4 5 --out M.cal.pth

``--data`` takes one or more roots, as ``bitmind.eval`` and the trainer do (each split
by picture stem with the trainer's rule, at the split seed and fractions the model was
trained with, as ``bitmind.eval`` does; the fit pools the chosen split of every root).
"""
from __future__ import annotations

from bitmind.shutdown import (exit_interrupted, exit_interrupted_while_starting, file_marks, interrupt_while_importing,
                              written_since)

with interrupt_while_importing("bitmind.calibrate", "bitmind.cli.calibrate"):  # torch loads here (~2 s): a Ctrl-C then is one line
    import argparse
    import json
    import logging
    import sys
    from dataclasses import dataclass
    from pathlib import Path
    from typing import Any

    import numpy as np

    from bitmind.calibration import (MIN_PER_CLASS, CalibrationDataError, calibrate_logits, store_calibration,
                                     too_few_to_calibrate)
    from bitmind.checkpoint import CheckpointError, check_calibration, load_model
    from bitmind.cli.eval import add_amp_argument, add_data_argument, add_split_arguments, picture_folder_holding
    from bitmind.common import check_device, non_negative_int, output_path_problem, write_target
    from bitmind.data.splits import SPLITS
    from bitmind.evaluation import build_dataset, collect_predictions, split_of

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Calibrated:
    """What ``calibrate`` did: the calibration ``record`` it stored, and the ``temperature`` /
    ``logit_bias`` the file stored before it was rewritten, as stored (absent: 1 and 0; a
    hand-edited file may hold anything), which the outcome line reports as "was". Why apart
    from the record: its ``previous_*`` hold the calibration in force instead, the identity
    map when the stored one is refused, and the outcome line tells the two apart."""
    record: dict
    temperature_before: Any
    logit_bias_before: Any
    #: the file replaced: ``--out`` (else ``--model``), or the file it links to
    written: Path | None = None


def stored_calibration(lm, path) -> tuple[float, float]:
    """The ``(temperature, bias)`` the file serves with: what a new fit must beat. One the
    miner would refuse (``check_calibration``) counts as none, the identity map."""
    try:
        check_calibration(lm.meta, path)
    except CheckpointError as e:
        logger.warning("ignoring the stored calibration: %s", e)
        return 1.0, 0.0
    return lm.temperature, lm.logit_bias


def pinned_amp(precision: str, amp: str) -> str:
    """The ``amp`` mode that runs every later forward in ``precision``, the arithmetic the first
    one ran in. Why: on a CPU with native bf16, "auto" chooses bf16 by a timing taken anew at
    each preparation, so the draws of one fit (``--challenge --seeds 0 1``) were scored in fp32
    and bf16 on a busy machine, and the pooled logits mixed the two (operator review)."""
    if amp != "auto":
        return amp
    return next((mode for mode in ("bf16", "fp16") if precision.startswith(mode)), "none")


def calibrate(model_path: str, data: list[str], out_path: str | None = None, split: str | None = "val", split_seed: int | None = None,
              challenge: bool = False, seeds=(0,), device: str = "auto", batch_size: int = 64, workers: int = 0,
              real_target: float | None = None, val_fraction: float | None = None, test_fraction: float | None = None,
              keep_if_better: bool = True, min_per_class: int = MIN_PER_CLASS, amp: str = "auto") -> Calibrated:
    """Fit the checkpoint's calibration on ``split`` of ``data`` (validator challenges of
    every seed in ``seeds`` if ``challenge``) and store it; returns the record stored, with
    the calibration the file stored before this run (``Calibrated``).

    The split is the one the model was trained with (``trained_split``: seed and fractions
    from the checkpoint, each overridable). With ``keep_if_better`` the fit must beat the
    stored calibration. Raises ``CalibrationDataError`` (nothing written) when the pictures
    read hold one class or none; ValueError / CheckpointError / OSError on bad arguments,
    an output that cannot be written (``out_path``, else ``model_path``) among them, before
    any picture is read."""
    target = write_target(out_path or model_path)  # a symlink is written through, the link kept
    # the file the weights come from, fixed now: re-pointing a linked --model during the
    # minutes of inference (a deploy swap) must not store one version's weights with the
    # other's calibration
    source = write_target(model_path, strict=False)
    problem = output_path_problem(target, "--out" if out_path else "--model")  # where the write lands, not the link's folder
    if problem and not out_path:
        problem = f"{problem} (without --out the calibrated model is written over --model)"
    if problem:  # before minutes of inference, not after (it was an IsADirectoryError at the very end)
        raise ValueError(problem)
    # a model written among the pictures (DIR/fake/x.pth) sits in the folder the next listing
    # reads: refused as bitmind.eval refuses a report there (``report_path_problem``)
    inside = picture_folder_holding(out_path, data)
    if inside:
        raise ValueError(f"--out {out_path} is inside {inside}, where the pictures are read from; write the model elsewhere")
    if real_target and not 0.0 < real_target < 1.0:  # before minutes of inference, not after
        raise ValueError(f"--real_target must lie in (0, 1), or be 0 for the Platt boundary, got {real_target}")
    dev = check_device(device)
    lm = load_model(source)
    t_before, b_before = lm.meta.get("temperature", 1.0), lm.meta.get("logit_bias", 0.0)  # the file's, as stored
    split_seed, fractions = split_of(lm.meta, split, split_seed, val_fraction, test_fraction)
    if split:
        logger.info("fitting on split %r of seed %d, train/val/test fractions %s", split, split_seed,
                    "/".join(f"{f:.3g}" for f in fractions))
    logits, labels, n_images, precision = [], [], 0, None
    for seed in seeds:
        ds = build_dataset(data, split=split, split_seed=split_seed, challenge=challenge, seed=seed, fractions=fractions)
        if not n_images and (why := too_few_to_calibrate(ds.labels(), min_per_class)):
            raise CalibrationDataError(why)  # before minutes of inference, not after
        pred = collect_predictions(lm, ds, batch_size=batch_size, device=dev, workers=workers, temperature=1.0, logit_bias=0.0,
                                   amp=amp)
        if precision is None:  # every later draw in the arithmetic of the first (``pinned_amp``)
            precision, amp = pred.precision, pinned_amp(pred.precision, amp)
        logits.append(pred.logits)
        labels.append(pred.labels)
        n_images += len(ds)
    if not sum(map(len, labels)):
        raise CalibrationDataError(f"none of the {n_images} images of {', '.join(map(str, data))}"
                                   + (f" (split {split!r})" if split else "") + " could be read")
    record = calibrate_logits(np.concatenate(logits), np.concatenate(labels), keep_if_better=keep_if_better, real_target=real_target,
                              min_per_class=min_per_class, per_picture=len(seeds),
                              current=stored_calibration(lm, model_path), split=split, split_seed=split_seed,
                              split_fractions=list(fractions) if split else None, challenge=challenge, seeds=list(seeds))
    record["precision"] = precision
    previous = (lm.meta.get("metrics") or {}).get("calibration")
    if not record["kept"] and isinstance(previous, dict):  # what placed the map still in force
        record["stored_record"] = {k: v for k, v in previous.items() if k != "stored_record"}
    stored = store_calibration(source, record, target)
    return Calibrated(stored, temperature_before=t_before, logit_bias_before=b_before, written=target)


def _same(x, y) -> bool:
    try:
        return float(x) == float(y)
    except (TypeError, ValueError, OverflowError):
        return x == y


def _num(x, sign: str = "") -> str:
    """A stored figure as the line shows it (one that is not a number, as stored)."""
    try:
        return format(float(x), f"{sign}.4g")
    except (TypeError, ValueError, OverflowError):
        return repr(x)


def _brier_change(before, after) -> str:
    """``X -> Y (lower)``: a change of the class-balanced Brier score with the way it went
    (lower is better), so a rise is never reported as an improvement."""
    try:
        x, y = float(before), float(after)
    except (TypeError, ValueError, OverflowError):
        return f"{_num(before)} -> {_num(after)}"
    way = "lower" if y < x else "higher" if y > x else "unchanged"
    return f"{x:.4g} -> {y:.4g} ({way})"


def _boundary_moved(rec: dict, platt_brier) -> str:
    """What ``--real_target`` did after the Platt step, with the Brier score it cost ("" without it):
    the boundary rule moves the bias to call a share of the real photos real, not to lower the
    Brier score, which it often raises."""
    if not rec.get("real_target"):
        return ""
    change = _brier_change(platt_brier, rec.get("val_balanced_brier_after", float("nan")))
    return (f"then the boundary moved so {rec['real_target']:g} of real photos are called real: class-balanced Brier {change}"
            + (", the cost of calling that share of real photos real" if change.endswith("(higher)") else ""))


def outcome_line(run: Calibrated, model_path: str, out_path: str | None, replace: bool = False) -> str:
    """What the run wrote, in one line. The record's ``kept`` says only whether the new
    Platt fit replaced the calibration in force (it did no worse, or ``--replace``); the file
    is written either way (with the new record in its metadata), and what it serves with
    may change even when the fit was not kept: ``--real_target`` moves the bias, and a
    stored calibration the miner would refuse gives way to the identity map. Each Brier
    score change is told with its direction: with ``--real_target`` the figure after the
    boundary move can be higher than before the run even when the Platt fit was kept."""
    rec = run.record
    t, b = rec["temperature"], rec["logit_bias"]
    link = run.written is not None and Path(run.written) != Path(out_path or model_path)
    through = f" through the link ({run.written} replaced, the link kept)" if link else ""
    where = f"wrote {out_path}{through}" if out_path else f"wrote {model_path} in place{through} (a miner serving it reloads it)"
    n = f"on {rec.get('n')} pictures"
    before = rec.get("val_balanced_brier_before", float("nan"))
    t0, b0 = run.temperature_before, run.logit_bias_before
    t0, b0 = (1.0 if t0 in (None, 0) else t0), (0.0 if b0 is None else b0)  # absent/None/0: no calibration
    was = f"was T={_num(t0)}, bias={_num(b0, '+')}"
    if rec.get("kept"):
        # the Platt step's own score: the record's "after" is the moved boundary's with --real_target
        platt = rec.get("val_balanced_brier_platt", float("nan")) if rec.get("real_target") else rec.get(
            "val_balanced_brier_after", float("nan"))
        how = "stored by --replace" if replace else "kept as no worse than the calibration in force"
        how = f"its Platt temperature and bias {how}"
        steps = "; ".join(x for x in (f"class-balanced Brier {_brier_change(before, platt)} {n}", _boundary_moved(rec, platt)) if x)
        return f"{where}: calibration T={t:.4g}, bias={b:+.4g} stored, {was} (the new fit, {how}: {steps})"
    not_kept = (f"the new Platt fit (its temperature and bias) was not kept: it did no better than the calibration in force "
                f"(class-balanced Brier {_num(before)} {n})")
    if _same(t, t0) and _same(b, b0):
        return (f"{where}: its stored calibration T={t:.4g}, bias={b:+.4g} is unchanged; {not_kept}; "
                f"only the calibration record in its metadata is new")
    refused = not (_same(rec.get("previous_temperature"), t0) and _same(rec.get("previous_logit_bias"), b0))
    why = "the stored one is out of bounds, so the identity map was in force" if refused else ""
    moved = _boundary_moved(rec, before).removeprefix("then ")
    return "; ".join(x for x in (f"{where}: calibration T={t:.4g}, bias={b:+.4g} stored, {was}" + (f" ({why})" if why else ""),
                                 not_kept, moved) if x)


def interrupted_line(model_path: str, out_path: str | None, marks: dict) -> str:
    """The line a Ctrl-C ends ``calibrate`` with: nothing written (the file is written whole,
    then renamed into place, so a stop before the rename leaves it as it was), or, past the
    rename, the whole calibrated file (``written_since``)."""
    name = out_path or model_path
    if written_since(marks):
        return f"interrupted after {name} was written: it holds the new calibration (its record was not printed)"
    if not out_path:
        return f"interrupted: nothing written (the model file {model_path} is unchanged)"
    state = "is unchanged" if any(m is not None for m in marks.values()) else "was not created"
    return f"interrupted: nothing written ({out_path} {state}; the model file {model_path} is unchanged)"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bitmind.calibrate", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True,
                    help="the checkpoint to calibrate; a symlink is written through (the file it points at is "
                         "replaced atomically, the link kept)")
    add_data_argument(ap)
    ap.add_argument("--out", default=None,
                    help="write the calibrated model here (default: over --model, in place: a miner serving it "
                         "reloads it); a symlink is written through, as --model is")
    ap.add_argument("--split", default="val", choices=SPLITS + ("all",),
                    help="split to fit on (by picture stem, as the model was trained); 'all' for every image "
                         "(default: %(default)s)")
    add_split_arguments(ap)
    ap.add_argument("--challenge", action="store_true", help="fit on validator challenges (random aug / plain + JPEG 75)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0], help="challenge draws to pool")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    ap.add_argument("--batch_size", type=int, default=64)
    ap.add_argument("--workers", type=int, default=0)
    add_amp_argument(ap)
    ap.add_argument("--real_target", type=float, default=None,
                    help="then move the boundary so this share of the split's real photos is called real, a "
                         "value in (0, 1) (0.85 for the shipped model: docs/Generalisation.md); 0 or left out: the "
                         "Platt boundary, as the trainer's --calibration_real_target 0")
    ap.add_argument("--min_per_class", type=non_negative_int, default=MIN_PER_CLASS,
                    help="fewest pictures of each class to fit on (default: %(default)s); with fewer nothing is "
                         "written: a calibration fitted on a handful follows those pictures")
    ap.add_argument("--replace", action="store_true",
                    help="store the new fit even if it does no better than the calibration stored in the file")
    try:
        a = ap.parse_args(argv)
        logging.basicConfig(level=logging.INFO)
        marks = file_marks([write_target(a.out or a.model, strict=False)])
    except KeyboardInterrupt:
        exit_interrupted_while_starting()
    try:
        run = calibrate(a.model, a.data, a.out, None if a.split == "all" else a.split, a.split_seed, a.challenge, a.seeds,
                        a.device, a.batch_size, a.workers, a.real_target, a.val_fraction, a.test_fraction,
                        keep_if_better=not a.replace, min_per_class=a.min_per_class, amp=a.amp)
    except (CheckpointError, OSError, ValueError) as e:  # CalibrationDataError is a ValueError
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        exit_interrupted(interrupted_line(a.model, a.out, marks))
    print(json.dumps(run.record, indent=2))
    print(outcome_line(run, a.model, a.out, replace=a.replace), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
