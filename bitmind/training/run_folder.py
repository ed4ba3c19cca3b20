"""What a run folder (``<checkpoints_dir>/<name>/``) holds, and who may write into it.

Why: every run without ``--name`` writes to the same folder, so a second run used to
replace the first one's best model, state and history without a word (and a run that died
on a typo in ``--data`` had already rewritten its ``opt.json``). A folder that holds a run
is now refused unless the new run continues it (``--resume``) or is told to replace it
(``--overwrite``). And a resumed run is the same run: the options it was started with are
read back from its ``opt.json`` (the command line may leave them out), a network option
that contradicts them is refused (the saved weights would not fit, or would be read as
another input), and so are other validation roots (``check_same_data``: the run's best score and
calibration would mix two validation sets); any other change (learning rate, schedule,
``--train_data``) is allowed but logged.
Where and how fast it runs (``RUNTIME_KEYS``: workers, device, progress, ...) is the command
line's where it sets it, else the run's again (``--workers 2`` is not lost to the default 4).

``opt.json`` holds the path-valued options absolute (``PATH_KEYS``, ``write_options``), so a
run started in one working folder resumes from any other (the repository root and
``base_miner/NPR``, as the guide runs the trainer). An ``opt.json`` written before that holds
them as given, relative to the folder the run was started in: ``resumed_options`` reads them
from here, and says so in one line when a data root is not found.
"""
from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

from bitmind.data.sources import split_hf_spec
from bitmind.shutdown import signals_deferred

try:
    import fcntl
except ImportError:  # Windows: no advisory locks here (runs are not guarded against each other)
    fcntl = None

logger = logging.getLogger(__name__)

#: Files a run writes into its folder; any of the first three means the folder holds a run.
RUN_MARKERS = ("model_epoch_best.pth", "state_last.pt", "model_last.pth")
#: A fine-tune's copy of its ``--init_from`` file's calibration as it started (``trainer.save_starting_calibration``).
INIT_CALIBRATION = "init_calibration.json"
RUN_FILES = (*RUN_MARKERS, "val_logits_best.npy", "history.json", "summary.json", "curves.png", "opt.json", INIT_CALIBRATION)
#: Options a resumed run takes from the command line as given, never from ``opt.json``: where
#: and how fast it runs, not what it trains.
RUNTIME_KEYS = ("resume", "overwrite", "name", "checkpoints_dir", "device", "workers", "pin_memory", "progress",
                "log_every", "compile", "loader_parts", "cudnn_benchmark", "channels_last", "uint8_loading")
#: Of ``RUNTIME_KEYS``, those that find the run (or say how to start it): the command line's,
#: never read back from ``opt.json``. The others are the run's again where the command line
#: leaves them out, and the command line's where it sets them.
LOCATION_KEYS = ("resume", "overwrite", "name", "checkpoints_dir")
#: Options that name files or folders: ``opt.json`` holds them absolute (``write_options``).
#: ``data``, ``train_data`` and ``challenge_data`` are lists of roots (``hf:NAME_OR_PATH[:role]``
#: names a Hub data set, or a local one by its path).
PATH_KEYS = ("data", "train_data", "challenge_data", "init_from", "checkpoints_dir")
#: Options a resumed run must keep: its saved weights were built with them, and its pictures were
#: split with them (another split would train on pictures it validated on, and the stored options
#: would name a test split the model saw).
FIXED_ON_RESUME = ("arch", "layers", "width", "input", "stem_pool", "pool", "dropout", "aux_weight",
                   "aux_by", "history_weight", "adv_weight", "split_seed", "val_fraction", "test_fraction")
#: Data roots a resumed run must keep: its validation split is read from them, and its best
#: score, best epoch and calibration were measured there (``check_same_data``). ``train_data``
#: (training only) may change, logged like ``--lr``.
VALIDATION_ROOTS = ("data", "challenge_data")


#: A sweep's resumable state, in its folder (``bitmind.training.sweep_state``).
SWEEP_STATE = "sweep_state.pt"


class RunFolderError(ValueError):
    """A run folder the run may not use as asked (a usage error, not a crash)."""


def holds_run(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a run's checkpoints or resumable state."""
    return any((run_dir / f).exists() for f in RUN_MARKERS)


def saved_options(run_dir: Path) -> dict:
    """The options ``run_dir``'s run was started with (``opt.json``; {} if absent or unreadable)."""
    try:
        return json.loads((run_dir / "opt.json").read_text())
    except (OSError, ValueError):
        return {}


def prepare_run_folder(run_dir: Path, resume: bool, overwrite: bool) -> None:
    """Check that a run may write into ``run_dir`` (a ``RunFolderError`` if not). Changes
    nothing: with ``overwrite`` the caller sets the earlier run aside (``EarlierRun``) once the
    data has been read, and removes it only once the new run has saved an epoch, so neither a
    typo in ``--data`` nor a new run that fails before its first epoch is saved costs the earlier run."""
    check_writable_folder(run_dir)
    if resume:
        if not (run_dir / "state_last.pt").exists():
            raise RunFolderError(f"--resume: {run_dir} has no state_last.pt, so there is nothing to resume "
                                 "(leave --resume out to start a new run there)")
        return
    if holds_run(run_dir) and not overwrite:
        raise RunFolderError(f"{run_dir} already holds a run (its model_epoch_best.pth / state_last.pt would be "
                             "replaced): pass --resume to continue it, --overwrite to replace it, or another --name")


def lock_path(folder: Path) -> Path:
    """The lock file of the run (or sweep) folder ``folder``: beside it, not in it, so taking
    the lock before the data is read makes no run folder (only ``--checkpoints_dir`` if it is
    not there yet, as the run would)."""
    folder = Path(folder)
    return folder.parent / f".{folder.name}.lock"


_HELD: set[int] = set()  # lock files this process holds open (closed in forked children: see below)
if fcntl is not None and hasattr(os, "register_at_fork"):
    # A forked child (a DataLoader worker) shares the open file and so the lock: a worker that
    # outlived its run would keep the folder held. Children close their copies at once.
    def _close_held_in_child() -> None:
        for fd in _HELD:
            os.close(fd)
        _HELD.clear()

    os.register_at_fork(after_in_child=_close_held_in_child)


@contextlib.contextmanager
def hold_run_folder(folder: Path):
    """Hold ``folder`` for this process while the block runs; a ``RunFolderError`` if another
    training or sweep holds it now.

    Why: the folder checks look for a run's files, and a run writes its first only after an
    epoch, so a second training started with the same ``--name`` during the first one's first
    epoch (hours on real data) passed them: both ran, and the folder ended with one's model
    and the other's ``opt.json`` and history, and both runs' TensorBoard events. An advisory
    ``flock`` on a file beside the folder: the system drops it when the process ends however it
    ends (Ctrl-C, SIGKILL, a crash), so there is never a stale lock to remove by hand. The file
    itself stays (removing it while held would let two later runs lock two different files).
    Where no lock can be taken (Windows, a file system without ``flock``, a folder that cannot
    be written: ``check_writable_folder`` says that one) the run goes on unguarded, with a
    warning where a lock was expected."""
    fd = _lock(folder)
    try:
        yield
    finally:
        if fd is not None:
            _HELD.discard(fd)
            os.close(fd)  # closing drops the lock


def _lock(folder: Path) -> int | None:
    """The open, locked lock file of ``folder`` (``hold_run_folder``), None where none can be taken."""
    if fcntl is None:
        return None
    path = lock_path(folder)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        logger.debug("no run lock at %s: %s", path, e)
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        held = e.errno in _HELD_ERRNOS
        holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() if held else ""
        os.close(fd)
        if held:
            raise RunFolderError(f"{folder} is being written by another run right now ({holder or 'another process'}): "
                                 "wait for it to end, or choose another --name") from None
        logger.warning("cannot lock %s (%s): a second run with this --name would not be refused", path,
                       e.strerror or e)  # a file system without flock (some network and FUSE mounts)
        return None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}: "
                  f"{' '.join(sys.argv)[:300]}".encode(), 0)
    _HELD.add(fd)
    return fd


_HELD_ERRNOS = (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)  # flock's "someone holds it"


def check_writable_folder(folder: Path) -> None:
    """A ``RunFolderError`` unless files can be made in ``folder`` (or, where it does not exist
    yet, in its nearest existing parent, where it will be made): tried with a temporary file,
    removed at once, so a read-only disk, a folder of another user or a file in the way is
    found as the real writes would find it. Why: the run made its folder only once the data had been read and died there with
    a traceback (``FileExistsError``, ``PermissionError``), minutes into a large run."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise RunFolderError(f"{folder} is a file, not a run folder: choose another --name or --checkpoints_dir")
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise RunFolderError(f"cannot make the run folder {folder}: {probe} is a file, not a folder")
    try:
        fd, tmp = tempfile.mkstemp(dir=probe, prefix=".write-test.")
    except OSError as e:
        raise RunFolderError(f"cannot write the run folder {folder}: {probe}: {e.strerror or e} "
                             "(choose a writable --checkpoints_dir)") from None
    os.close(fd)
    os.unlink(tmp)


#: Where ``--overwrite`` keeps the earlier run's files, inside the run folder, until the new run
#: has saved its first epoch (``EarlierRun``); ``ASIDE_MOVING`` while they are being moved there.
ASIDE = ".previous_run"
ASIDE_MOVING = ".previous_run.moving"
#: Inside ``ASIDE``: which kind of folder set the files aside (``{"kind": "run"}`` or ``"sweep"``,
#: ``FolderKind.what``), so ``recover_earlier_run`` judges a killed run by its own files whoever
#: calls it. Never moved back into the run folder (``_move_back``); no run or sweep writes a file
#: of that name (``_run_entries``, ``_sweep_entries``).
ASIDE_KIND = ".set_aside_by.json"


def _run_entries(run_dir: Path) -> list[Path]:
    """What a run wrote into ``run_dir``: its files (``RUN_FILES``), TensorBoard events and the
    event folders of older layouts."""
    found = [run_dir / f for f in RUN_FILES if (run_dir / f).exists()]
    found += sorted(run_dir.glob("events.out.tfevents.*"))
    return found + [run_dir / d for d in ("tb", "tensorboard") if (run_dir / d).is_dir()]


@dataclasses.dataclass(frozen=True)
class FolderKind:
    """What ``EarlierRun`` sets aside on an ``--overwrite`` of a folder, and how it judges that
    folder: a training run's (``RUN``) or a sweep's (``SWEEP``: its spec, summary and state beside
    one sub-folder per variant). Why: one mechanism for both, so a sweep's ``--overwrite`` keeps the
    earlier sweep until the new one has saved an epoch, as a run's keeps the earlier run (it removed
    the earlier sweep as soon as the data was read).

    ``what``: its name in the lines (``run``, ``sweep``); ``entries(folder)``: what one wrote there
    (set aside; and removed before the earlier one's files go back); ``holds(folder)``: whether the
    folder holds one worth keeping; ``saved``: files of which any, in the folder beside
    ``.previous_run``, says that a killed new one had saved its first epoch (``recover_earlier_run``)."""

    what: str
    entries: Callable[[Path], list[Path]]
    holds: Callable[[Path], bool]
    saved: tuple[str, ...]


#: A training run's folder (``bitmind.training.trainer``): it saves ``state_last.pt`` after every epoch.
RUN = FolderKind("run", _run_entries, holds_run, ("state_last.pt",))


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def _move_back(run_dir: Path, kind: FolderKind = RUN) -> list[str]:
    """Put the earlier run's files back into ``run_dir`` (a folder of ``kind``: the kind that set them
    aside); returns their names. What a run wrote since they were set aside (it saved no epoch) is
    removed first, then ``.previous_run`` is renamed ``.previous_run.moving`` and emptied into
    ``run_dir`` (its ``ASIDE_KIND`` removed, never put back): a process killed at any point leaves
    either ``.previous_run`` beside the new run's files or ``.previous_run.moving`` beside the
    earlier run's only, each of which ``recover_earlier_run`` finishes, never mixing the two."""
    moving, aside = run_dir / ASIDE_MOVING, run_dir / ASIDE
    if not moving.is_dir():
        for p in kind.entries(run_dir):
            _remove(p)
        os.replace(aside, moving)
    names = []
    for p in sorted(moving.iterdir()):
        if p.name == ASIDE_KIND:  # the set-aside's own note, not a file of the earlier run
            p.unlink()
            continue
        os.replace(p, run_dir / p.name)  # nothing of that name is there: each was moved out of run_dir, or removed above
        names.append(p.name)
    moving.rmdir()
    return names


def _aside_kind(folder: Path, kind: FolderKind) -> FolderKind:
    """The kind of folder that set ``folder`` (``.previous_run`` or ``.previous_run.moving``) aside,
    as its ``ASIDE_KIND`` records; ``kind`` (the caller's) where it records none: set aside by a
    version before the note, or killed before the note was written (nothing was moved yet then).
    Why: the next run in the folder may be of the other kind (a sweep started where a training run
    was killed, or a trainer where a sweep was), and judged by its own files a killed run had saved
    nothing (a sweep looks for ``sweep_state.pt``, a run for ``state_last.pt``): the earlier files
    were put back over the new run's, mixing the two runs."""
    try:
        recorded = json.loads((folder / ASIDE_KIND).read_text())["kind"]
    except FileNotFoundError:
        return kind
    except (OSError, ValueError, KeyError, TypeError) as e:
        logger.warning("%s: unreadable (%s); judged as a %s's folder", folder / ASIDE_KIND, e, kind.what)
        return kind
    found = {k.what: k for k in (RUN, SWEEP)}.get(recorded)
    if found is None:
        logger.warning("%s names an unknown kind %r; judged as a %s's folder", folder / ASIDE_KIND, recorded, kind.what)
        return kind
    return found


class EarlierRun:
    """``--overwrite`` (``overwrite``): the earlier run's files in ``run_dir`` (``_run_entries``),
    moved into ``run_dir/.previous_run`` when the new run starts (``set_aside``, once its data has
    been read), removed once it has saved its first epoch (``drop``) and moved back if it ends
    before that (``restore``, which the ``with`` block's end does: an exception, Ctrl-C, SIGTERM,
    a run that stopped on a diverging loss), in one line each. Why: they were removed as soon as
    the data was read, so a new run that failed in its first epoch (no picture readable, a
    diverging --lr, Ctrl-C) left the operator neither the old model nor a new one. A process
    killed while they are aside (SIGKILL, a lost machine) leaves the folder; the next run in the
    run folder settles it before anything else (``recover_earlier_run``, by the kind recorded in
    ``.previous_run``: ``ASIDE_KIND``, whatever kind that next run is). Only the process
    holding the run folder (``hold_run_folder``) may use it. ``kind``: what the folder holds
    (``RUN``, or ``SWEEP``: a sweep's folder, its variants' folders set aside whole)."""

    def __init__(self, run_dir: Path, overwrite: bool = True, kind: FolderKind = RUN) -> None:
        self.run_dir = Path(run_dir)
        self.aside = self.run_dir / ASIDE
        self.overwrite = overwrite
        self.kind = kind
        self.pending = False  # the earlier run's files are aside: put back unless this run saves an epoch
        self.saved = False  # this run has saved an epoch (``drop``)
        self.restored = False  # the earlier run's files are back, this run's gone (``restore``)

    def __enter__(self) -> "EarlierRun":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        try:
            if self.pending:
                self.restore()
        except BaseException as late:  # a Ctrl-C or SIGTERM held while the files went back, raised as ``restore`` ends
            self._mark(late)  # (``signals_deferred``): it leaves ``train`` instead of ``exc``, and must say the same
            raise
        if exc is not None:
            self._mark(exc)
        return False

    def _mark(self, exc: BaseException) -> None:
        """Set ``earlier_run_kept`` on ``exc``, the exception leaving the run, where the folder holds
        the earlier run again as it was: the line a stop ends with (``trainer.interrupted_message``)
        then says so, not "--resume goes on from there" (which would resume the earlier run). Why:
        a Ctrl-C held by ``restore`` came out of it unmarked, and that line advised --resume."""
        if self.overwrite and not self.saved and self.kind.holds(self.run_dir):
            with contextlib.suppress(AttributeError):
                exc.earlier_run_kept = self.run_dir

    def set_aside(self) -> None:
        """Move the earlier run's files out of the way (nothing without ``overwrite``): into
        ``.previous_run.moving``, beside a note of this folder's kind (``ASIDE_KIND``, written first),
        renamed ``.previous_run`` once all are there, so a process killed midway leaves a folder
        ``recover_earlier_run`` knows to put back as it is."""
        what = self.kind.what
        if not self.overwrite or not self.kind.holds(self.run_dir):
            return
        found = self.kind.entries(self.run_dir)
        moving = self.run_dir / ASIDE_MOVING
        with signals_deferred():
            moving.mkdir()
            self.pending = True  # from here on, ``restore`` puts back whatever was moved
            (moving / ASIDE_KIND).write_text(json.dumps({"kind": what}))  # who set them aside (``_aside_kind``)
            for p in found:
                os.replace(p, moving / p.name)
            os.replace(moving, self.aside)
            logger.warning("--overwrite: the earlier %s's files are set aside in %s until this %s saves its first "
                           "epoch (put back if it ends before): %s", what, self.aside, what, ", ".join(p.name for p in found))

    def drop(self) -> None:
        """This run has saved an epoch: remove the earlier run's files for good (nothing if none are aside)."""
        self.saved = True
        if not self.pending:
            return
        self.pending = False
        what = self.kind.what
        names = sorted(p.name for p in self.aside.iterdir() if p.name != ASIDE_KIND)
        try:
            shutil.rmtree(self.aside)
        except OSError as e:  # the next run in the folder removes it (``recover_earlier_run``)
            logger.warning("--overwrite: cannot remove the earlier %s's files in %s (%s)", what, self.aside, e.strerror or e)
            return
        logger.warning("--overwrite: this %s saved its first epoch; removed the earlier %s's files from %s: %s",
                       what, what, self.run_dir, ", ".join(names))

    def restore(self) -> None:
        """This run ends without having saved an epoch: remove what it wrote and put the earlier run's files back."""
        self.pending = False
        what = self.kind.what
        with signals_deferred():
            try:
                _move_back(self.run_dir, self.kind)
            except OSError as e:  # said, not raised: the exception that ended the run is the one to see
                logger.error("--overwrite: this %s ended before saving an epoch, but the earlier %s's files could not "
                             "be put back from %s (%s): the next %s in %s tries again", what, what, self.aside,
                             e.strerror or e, what, self.run_dir)
                return
            self.restored = True
            logger.warning("--overwrite: this %s ended before saving an epoch; the earlier %s's files are back in %s",
                           what, what, self.run_dir)


def recover_earlier_run(run_dir: Path, kind: FolderKind = RUN) -> str | None:
    """Settle what an ``--overwrite`` run killed while the earlier run's files were aside
    (``EarlierRun``: SIGKILL, an out-of-memory kill, a lost machine) left in ``run_dir``, before
    anything reads the folder: if it had saved an epoch (one of ``kind.saved`` is there: a run's
    ``state_last.pt``) the earlier files are removed, as it would have done ("removed"); else what
    it wrote is removed and the earlier files are put back ("restored"). Each in one line; None when
    nothing was left. Never mixes the two runs' files. ``kind`` is the kind of folder that set the
    files aside as ``.previous_run`` records it (``_aside_kind``: a sweep started where a training
    run was killed settles it as the run's), the caller's where it records none. Call it only while
    holding the run folder (``hold_run_folder``): another run's ``.previous_run`` is in use while
    that run lives."""
    run_dir = Path(run_dir)
    moving, aside = run_dir / ASIDE_MOVING, run_dir / ASIDE
    if not moving.is_dir() and not aside.is_dir():
        return None
    kind = _aside_kind(moving if moving.is_dir() else aside, kind)
    what = kind.what
    if not moving.is_dir() and any((run_dir / f).exists() for f in kind.saved):
        shutil.rmtree(aside)
        logger.warning("%s: an --overwrite %s that was killed after saving its first epoch left the earlier %s's "
                       "files there; removed them, as it would have (%s holds that %s)", aside, what, what, run_dir, what)
        return "removed"
    names = _move_back(run_dir, kind)
    logger.warning("%s: an --overwrite %s was killed before it saved an epoch; the earlier %s's files are back in %s "
                   "(%s), anything that %s wrote is removed", aside, what, what, run_dir, ", ".join(names), what)
    return "restored"


def settle_earlier_run(run_dir: Path, kind: FolderKind = RUN) -> None:
    """``recover_earlier_run`` for a command that reads the folder before the run (or sweep) holds
    it (``resumed_options``: a run's ``opt.json``; ``generalisation.py train``: whether the folder
    holds a sweep to resume): the folder is held for the while (a ``RunFolderError`` if another run
    holds it now, whose ``.previous_run`` is in use). Nothing to do, nothing held."""
    if (Path(run_dir) / ASIDE).is_dir() or (Path(run_dir) / ASIDE_MOVING).is_dir():
        with hold_run_folder(run_dir):
            recover_earlier_run(run_dir, kind)


def _refuse(cfg, clash: dict, asks: str, hint: str = "") -> None:
    """A ``RunFolderError`` naming each option of ``clash`` (``option_differences``: this
    run's value, the saved run's) that a resumed run may not change."""
    if clash:
        raise RunFolderError(f"--resume {cfg.run_dir}: the run was built with "
                             + ", ".join(f"{k}={w!r}" for k, (_, w) in clash.items()) + asks
                             + ", ".join(f"{k}={g!r}" for k, (g, _) in clash.items()) + hint)


def _split_spec(spec: str) -> tuple[str, str, str]:
    """A path option's value as (prefix, path, suffix): ``hf:PATH:real`` -> (``hf:``, PATH,
    ``:real``), a plain path -> ("", path, "")."""
    hf = split_hf_spec(spec)
    if not hf:
        return "", spec, ""
    path, role = hf
    return "hf:", path, f":{role}" if role else ""


def _absolute(spec, base: Path | None = None):
    """``spec`` (a path option's value) with its path absolute, read from ``base`` (the
    working folder if None), normalised but with its links kept (a data root's folder name
    names its loose pictures' source); as given: an ``hf:`` name that is no local path, "" (no
    file), and a path that does not exist from there (its absolute form would be a guess)."""
    if not isinstance(spec, str) or not spec:
        return spec
    prefix, path, suffix = _split_spec(spec)
    p = Path(path).expanduser()
    full = p if p.is_absolute() else (base or Path.cwd()) / p
    if not full.exists():
        return spec
    return f"{prefix}{os.path.abspath(full)}{suffix}"


def _is_relative(spec) -> bool:
    """Whether ``spec`` names a local path relative to some working folder."""
    if not isinstance(spec, str) or not spec:
        return False
    prefix, path, _ = _split_spec(spec)
    return not Path(path).expanduser().is_absolute() and (not prefix or path.startswith("."))


def _absolute_option(value):
    """A path option's value (one path, or a list of data roots) with each path absolute (``_absolute``)."""
    return [_absolute(v) for v in value] if isinstance(value, (list, tuple)) else _absolute(value)


def absolute_options(cfg) -> dict:
    """``cfg.to_dict()`` with every path-valued option (``PATH_KEYS``) absolute, as read from the
    working folder: what ``opt.json`` holds, so the run resumes from any other folder."""
    opts = cfg.to_dict()
    for key in PATH_KEYS:
        opts[key] = _absolute_option(opts.get(key))
    return opts


def write_options(cfg, run_dir: Path, **resolved) -> None:
    """Write ``run_dir/opt.json``: ``cfg``'s options, its paths absolute (``absolute_options``),
    and ``resolved``: what an option came to on this machine (``amp_resolved``: ``--amp bf16`` on
    a CPU trains in fp32), keys that are no option, so a resume never reads them back.
    Why: a run started from the repository root with ``--data ../shared/data/sn34-mini`` and
    resumed from ``base_miner/NPR`` read that root from the wrong folder (data folder not found)."""
    (Path(run_dir) / "opt.json").write_text(json.dumps({**absolute_options(cfg), **resolved}, indent=2))


def _saved_paths(cfg, adopted: dict) -> dict:
    """``adopted`` (options read back from an ``opt.json``) with each relative path that exists
    from here made absolute; a ``RunFolderError`` for a relative data root that does not. Why:
    an ``opt.json`` written before paths were stored absolute holds them as given, relative to
    the folder the run was started in, which it does not record: the command must be run from
    there, or give the roots again."""
    from bitmind.training.config import _ROOT_LISTS

    out = {k: _absolute_option(v) if k in PATH_KEYS else v for k, v in adopted.items()}  # a path not found stays as given
    lost = [(k, spec) for k in _ROOT_LISTS if k in adopted  # a resumed run does not read init_from (its state has the weights)
            for spec in out[k] if _is_relative(spec)]
    if lost:
        raise RunFolderError(
            f"--resume {cfg.run_dir}: opt.json names " + ", ".join(f"--{k} {s}" for k, s in lost)
            + f", relative to the folder the run was started in (written before paths were stored absolute), and "
            f"not found from here ({Path.cwd()}): run the command from that folder, or give "
            + " ".join(sorted({f"--{k}" for k, _ in lost})) + " with the path from here")
    return out


def _usable_here(cfg, adopted: dict, runtime: dict) -> dict:
    """Of ``runtime`` (options of how the run ran, read back from ``opt.json``), those this
    machine can use (a ``--device cuda`` run resumed on a machine without a GPU keeps the
    command line's device, and says so)."""
    import dataclasses

    from bitmind.training.config import ConfigError

    def problem(**kw):
        try:
            dataclasses.replace(cfg, **adopted, **kw).check()
        except (ConfigError, TypeError, ValueError) as e:  # a hand-edited opt.json's value of the wrong type too
            return str(e)
        return None

    base, kept = problem(), {}
    for key, value in runtime.items():
        err = problem(**kept, **{key: value})
        if err == base:
            kept[key] = value
        else:
            logger.warning("--resume %s: the run's --%s %r cannot be used here (%s): --%s %r is used",
                           cfg.run_dir, key, value, err, key, getattr(cfg, key))
    return kept


def resumed_options(cfg, explicit: set[str]):
    """``cfg`` with the options of the run it resumes (``opt.json`` beside its state) where the
    command line left them out; a ``RunFolderError`` if it sets a network option to another
    value than the run was built with, or other validation roots (``check_same_data``); other
    changes are logged (the run goes on with them).
    Where and how fast it runs (``RUNTIME_KEYS`` but ``LOCATION_KEYS``) is the command line's
    where it sets it, else the run's (if this machine can use it). Relative paths of an
    ``opt.json`` written before they were stored absolute are found from the folder the run
    was started in, found from here or named in one line (``_saved_paths``)."""
    import dataclasses

    from bitmind.training.init_from import option_differences

    # an --overwrite run killed while the earlier run was aside: settled before its opt.json is read,
    # so a resume reads the options of the run it resumes, not those of the killed one
    settle_earlier_run(cfg.run_dir)
    saved = saved_options(cfg.run_dir)
    if not saved:
        logger.warning("--resume: %s has no readable opt.json; the command line's options are used as given", cfg.run_dir)
        return cfg
    known = {f.name for f in dataclasses.fields(cfg)} - set(RUNTIME_KEYS)
    _refuse(cfg, option_differences(cfg, fixed_as_saved(saved), [k for k in FIXED_ON_RESUME if k in explicit]),
            "; the command line asks for ", ": leave those options out (they are read from opt.json) or start a new run")
    check_same_data(cfg, saved, [k for k in VALIDATION_ROOTS if k in explicit])  # left out: read from opt.json
    changed = {k: (now, was) for k, (now, was) in option_differences(cfg, saved, sorted(known & explicit)).items()
               if (k not in PATH_KEYS or _absolute_option(was) != _absolute_option(now))  # a relative path to where opt.json's absolute one points: no change
               and not (k in VALIDATION_ROOTS and _same_roots(was, now))}  # d/, ./d, a link to d: the same roots
    if changed:
        logger.warning("--resume %s: options changed from the run's opt.json: %s", cfg.run_dir,
                       ", ".join(f"{k} {was!r} -> {now!r}" for k, (now, was) in changed.items()))
    adopted = {k: was for k, (_, was) in option_differences(cfg, saved, sorted(known - explicit)).items()}
    adopted = _saved_paths(cfg, adopted)
    runtime = set(RUNTIME_KEYS) - set(LOCATION_KEYS)
    given = option_differences(cfg, saved, sorted(runtime & explicit))
    if given:  # the command line's, as it asks
        logger.info("--resume %s: from the command line: %s", cfg.run_dir,
                    ", ".join(f"{k} {was!r} -> {now!r}" for k, (now, was) in given.items()))
    adopted.update(_usable_here(cfg, adopted, {k: was for k, (_, was) in
                                               option_differences(cfg, saved, sorted(runtime - explicit)).items()}))
    if adopted:
        logger.info("--resume %s: options read from opt.json: %s", cfg.run_dir, ", ".join(sorted(adopted)))
    return dataclasses.replace(cfg, **adopted)


def fixed_as_saved(saved: dict) -> dict:
    """``saved`` (a run's ``opt.json``) with each ``FIXED_ON_RESUME`` option it lacks at its
    default: a run written before an option existed was built with what the option's default
    builds (every run before ``--aux_by`` grouped its head by family), so a resume that asks for
    another value must be refused, not read as "not recorded, anything goes"."""
    import dataclasses

    from bitmind.training.config import TrainConfig

    if not saved:  # nothing recorded (no readable opt.json): nothing to hold the run to
        return saved
    defaults = dataclasses.asdict(TrainConfig())  # as check_same_sweep reads a spec.json older than an option
    return {**{k: defaults[k] for k in FIXED_ON_RESUME}, **saved}


def check_resume_matches(cfg) -> None:
    """A ``RunFolderError`` if ``cfg`` resumes a run built with other network options, split or
    validation roots (``train`` asks, for callers that build a config without ``resumed_options``)."""
    from bitmind.training.init_from import option_differences

    saved = saved_options(cfg.run_dir)
    _refuse(cfg, option_differences(cfg, fixed_as_saved(saved), FIXED_ON_RESUME), ", this run builds ")
    check_same_data(cfg, saved)


def _root_key(spec) -> str | None:
    """The data root ``spec`` as what it reads: a local path resolved (``d``, ``d/``, ``./d`` and a
    link to ``d`` are one root), an ``hf:`` Hub name as given; None for a local path not found here."""
    if not isinstance(spec, str):
        return None
    prefix, path, suffix = _split_spec(spec)
    p = Path(path).expanduser()
    if p.exists():
        return f"{prefix}{p.resolve()}{suffix}"
    return spec if prefix and not p.is_absolute() and not path.startswith(".") else None  # a Hub name


def _same_roots(was, now) -> bool | None:
    """Whether the root lists ``was`` (``opt.json``'s) and ``now`` name the same roots in the same
    order (a root given twice counts once, as the trainer reads it); None where that cannot be told:
    a root not found here (moved since the run started, or a typo the data read then names), or a
    relative path in ``was`` (an ``opt.json`` written before paths were stored absolute: relative to
    a folder it does not record)."""
    keys = [[None if i == 0 and _is_relative(s) else _root_key(s) for s in (v if isinstance(v, (list, tuple)) else [v])]
            for i, v in enumerate((was, now))]
    if any(k is None for ks in keys for k in ks):
        return None
    return [*dict.fromkeys(keys[0])] == [*dict.fromkeys(keys[1])]


def check_same_data(cfg, saved: dict, keys=VALIDATION_ROOTS) -> None:
    """A ``RunFolderError`` if ``cfg`` resumes the run of ``saved`` (its ``opt.json``) on other
    validation roots (``keys``, of ``VALIDATION_ROOTS``). Why: a resumed run keeps its best score and best
    epoch and calibrates on its validation split at the end, so on another data set it compared
    epochs across two validation sets and shipped a model chosen on one and calibrated on the
    other, with a warning only. Roots not found here are let through (``_same_roots``)."""
    def roots(v) -> str:
        return " ".join(map(str, v if isinstance(v, (list, tuple)) else [v])) or "(none)"

    for key in keys:
        if key in saved and _same_roots(saved[key], getattr(cfg, key)) is False:
            raise RunFolderError(
                f"--resume {cfg.run_dir}: the run was trained and validated on --{key} {roots(saved[key])}, "
                f"the command line asks for --{key} {roots(getattr(cfg, key))}: its best score and "
                f"calibration would mix two validation sets; to train on this data start a new run (another --name) "
                f"or replace this one (--overwrite instead of --resume), or leave --{key} out to go on with the run's")


def holds_sweep(out_dir: Path) -> bool:
    """Whether ``out_dir`` holds a sweep: its summary, its resumable state, or a variant folder with a run."""
    return ((out_dir / "sweep.json").exists() or (out_dir / SWEEP_STATE).exists()
            or any(holds_run(d) for d in out_dir.glob("*") if d.is_dir()))


#: Files a sweep (and ``benchmarks/generalisation.py`` on it) writes into its folder, beside one
#: sub-folder per variant.
SWEEP_FILES = ("spec.json", "sweep.json", "sweep_report.json", SWEEP_STATE, "logo_spec.json", "logo_scores.npz")


def _sweep_entries(out_dir: Path) -> list[Path]:
    """What a sweep wrote into ``out_dir``: its files (``SWEEP_FILES``), the temporary files of a
    state write that a killed sweep left, and each variant's folder (a sub-folder holding anything a
    run writes, ``_run_entries``), whole."""
    if not out_dir.is_dir():
        return []
    found = [out_dir / f for f in SWEEP_FILES if (out_dir / f).exists()]
    found += sorted(out_dir.glob(f".{SWEEP_STATE}.*.tmp"))
    return found + [d for d in sorted(out_dir.iterdir())
                    if d.is_dir() and not d.is_symlink() and not d.name.startswith(".") and _run_entries(d)]


#: A sweep's folder (``bitmind.training.sweep``): it has saved an epoch once it wrote its state
#: (``sweep_state.pt``) or, at its end, its summary (``sweep.json``).
SWEEP = FolderKind("sweep", _sweep_entries, holds_sweep, (SWEEP_STATE, "sweep.json"))


def finished_sweep(out_dir: Path) -> dict | None:
    """The summary (``sweep.json``) of a sweep in ``out_dir`` that ran to its end, else None
    (none, unreadable, or one that stopped early and left its state to resume from)."""
    try:
        summary = json.loads((out_dir / "sweep.json").read_text())
    except (OSError, ValueError):
        return None
    return None if summary.get("stopped") or (out_dir / SWEEP_STATE).exists() else summary


def prepare_sweep_folder(out_dir: Path, overwrite: bool, resume: bool = False) -> None:
    """``prepare_run_folder`` for a sweep's folder (one sub-folder per variant): one that holds
    a sweep is refused (a ``RunFolderError``) unless ``resume`` (it must hold a state to go on
    from, or a finished sweep, which a resumed run then leaves as it is) or ``overwrite``; the
    caller then sets it aside (``EarlierRun`` with ``SWEEP``) once the data has been read, and
    removes it once the new sweep has saved an epoch. Why: a sweep is the longest run there is (a
    shipped recipe: 135 epochs on a GPU), and a second one with the same name replaced it variant
    by variant without a word. Changes nothing: what a killed ``--overwrite`` sweep left is
    settled first by the caller (``recover_earlier_run``, ``settle_earlier_run``)."""
    if resume:
        if not (out_dir / SWEEP_STATE).exists() and finished_sweep(out_dir) is None:
            raise RunFolderError(f"--resume: {out_dir} has no {SWEEP_STATE}, so there is no sweep to resume "
                                 "(leave --resume out to start one there)")
        return
    if holds_sweep(out_dir) and not overwrite:
        raise RunFolderError(f"{out_dir} already holds a sweep (sweep.json, {SWEEP_STATE} or variant checkpoints), "
                             "which this one would replace: pass --resume to continue a stopped one (RESUME=1 for the "
                             "scripts), --overwrite to replace it (OVERWRITE=1) or choose another --name / work folder")

