"""Graceful stop for long-running processes: for neurons, SIGINT and SIGTERM (Ctrl-C,
``pm2 stop``) set an event that the main loop checks between steps, so a round or a request
in flight finishes and state is saved before the process exits; for training, Ctrl-C lets
the epoch in progress finish and be saved (``GracefulStop``), and so does SIGTERM (``timeout``,
``docker stop``, ``systemctl stop``) in the trainer; a Ctrl-C that stops a command at once ends
it with one line and exit status 130 (``exit_interrupted``), not a traceback, and a SIGTERM that
does (``StopSignal``, raised as Ctrl-C raises KeyboardInterrupt) with exit status 143."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Callable, Iterable, Iterator, NoReturn

#: The line a Ctrl-C before a run began ends with (while torch and the rest import, ~2 s,
#: or while the options are read): nothing was written yet.
STARTING_INTERRUPTED = "stopped (Ctrl-C) while starting, before the run began: nothing was written; run the command again"


class StopSignal(KeyboardInterrupt):
    """A stop asked by a signal other than SIGINT (SIGTERM: ``timeout``, ``docker stop``,
    ``systemctl stop``, ``pm2 stop``), raised where Ctrl-C raises KeyboardInterrupt, so it takes
    Ctrl-C's path: the ``finally`` blocks run (the trainer puts an ``--overwrite``'s earlier run
    back) and the command ends in one line (``exit_interrupted``), with exit status 128 + the
    signal's number (143), what a shell reports for a process the signal ended."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def stop_name() -> str:
    """What stopped the command, for the line it ends with: the signal's name while a
    ``StopSignal`` is being handled (``SIGTERM``), else ``Ctrl-C``."""
    exc = sys.exc_info()[1]
    return exc.args[0] if isinstance(exc, StopSignal) else "Ctrl-C"


def exit_interrupted(message: str) -> NoReturn:
    """End a command that a Ctrl-C stopped at once as a first Ctrl-C ends a run: ``message``
    (what is kept, how to go on) as one line on stderr, after the terminal's ``^C``, and exit
    status 130; not a KeyboardInterrupt traceback. Called while a ``StopSignal`` is handled
    (a SIGTERM), the exit status is 128 + its number (143)."""
    exc = sys.exc_info()[1]
    print(f"\n{message}", file=sys.stderr, flush=True)
    raise SystemExit(128 + exc.signum if isinstance(exc, StopSignal) else 130) from None


def exit_interrupted_while_starting() -> NoReturn:
    """``exit_interrupted`` for a Ctrl-C while a command starts (imports, options):
    ``STARTING_INTERRUPTED``."""
    exit_interrupted(STARTING_INTERRUPTED)


@contextlib.contextmanager
def interrupt_while_importing(*commands: str) -> Iterator[None]:
    """Around a command module's imports (torch, ~2 s): a Ctrl-C there ends the command with
    ``STARTING_INTERRUPTED`` when it runs as one of ``commands`` (the ``python -m`` names,
    the shim's and its module's), and goes on as the KeyboardInterrupt it is when other code
    imported the module (a test, a script: the importer's Ctrl-C)."""
    try:
        yield
    except KeyboardInterrupt:
        if getattr(getattr(sys.modules.get("__main__"), "__spec__", None), "name", None) not in commands:
            raise
        exit_interrupted_while_starting()


def file_marks(paths: Iterable[Path]) -> dict[Path, tuple | None]:
    """(inode, mtime, size) of each of ``paths`` (None: absent). Taken before a command
    writes, and compared after a Ctrl-C (``written_since``), it tells the files the command
    wrote from those it found, so the line it ends with says only what is true."""
    marks = {}
    for path in map(Path, paths):
        try:
            st = path.stat()
            marks[path] = (st.st_ino, st.st_mtime_ns, st.st_size)
        except OSError:
            marks[path] = None
    return marks


def written_since(marks: dict[Path, tuple | None]) -> list[Path]:
    """Those of ``marks``' files (``file_marks``) made, replaced, changed or removed since."""
    now = file_marks(marks)
    return [path for path, mark in marks.items() if now[path] != mark]


def stop_event_on_signals(on_signal: Callable[[int], None] | None = None) -> threading.Event:
    """Install SIGINT/SIGTERM handlers (main thread only) that call ``on_signal(signum)``,
    then set the returned event."""
    stop = threading.Event()

    def _handler(signum, _frame):
        if on_signal is not None:
            on_signal(signum)
        stop.set()

    signal.signal(signal.SIGINT, _handler)
    signal.signal(signal.SIGTERM, _handler)
    return stop


class GracefulStop:
    """Ctrl-C while training: the first press asks the run to stop once the epoch in progress is
    trained, validated and saved (then the best checkpoint is calibrated and the summary
    written, as at a normal end); a second press stops at once (KeyboardInterrupt). Only in the
    main thread (signal handlers live there); elsewhere nothing is installed.

    ``signals``: those handled so (SIGINT only by default). The trainer adds SIGTERM: a first one
    asks for the same stop as a first Ctrl-C (``signum`` says which came first), a second one
    (or a Ctrl-C) stops at once (``StopSignal``, KeyboardInterrupt for a Ctrl-C). ``uninstall``
    puts each signal's earlier handler back."""

    def __init__(self, signals: Iterable[int] = (signal.SIGINT,)) -> None:
        self.signals = tuple(signals)
        self.requested = False
        self.signum: int | None = None  # the signal that asked for the stop
        self._previous: dict[int, object] = {}

    @property
    def name(self) -> str:
        """What asked for the stop, for the lines a person reads: ``Ctrl-C`` or the signal's name."""
        return stop_label(self.signum)

    @property
    def reason(self) -> str:
        """What a run's summary says of this stop (its ``stopped``): ``stop_reason(signum)``."""
        return stop_reason(self.signum)

    def install(self) -> "GracefulStop":
        if threading.current_thread() is threading.main_thread():
            for signum in self.signals:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def uninstall(self) -> None:
        for signum, previous in self._previous.items():
            restore_handler(signum, previous)
        self._previous = {}

    def _handle(self, signum, frame) -> None:
        if self.requested:  # the second press (or signal): stop now
            self.uninstall()
            raise KeyboardInterrupt if signum == signal.SIGINT else StopSignal(signum)
        self.requested, self.signum = True, signum  # on stderr, as the line a second press (or the stop) ends with: not the run's output
        if signum == signal.SIGINT:
            _say_from_handler("Ctrl-C: stopping after this epoch is saved (press again to stop now)")
        else:
            _say_from_handler(f"{self.name}: stopping after this epoch is saved and the best checkpoint calibrated "
                              "(send it again, or press Ctrl-C, to stop now)")


def stop_reason(signum: int | None) -> str:
    """What a run's (or a sweep's) summary says of a stop that ``signum`` asked for (``stopped``):
    ``terminated`` for SIGTERM, ``interrupted`` for Ctrl-C (SIGINT), each with its exit status
    (``bitmind.training.trainer.EXIT_STATUS``: 143, 130). Why one place: the trainer and the sweep
    each wrote the mapping out, and a second copy drifts. The trainer's ranks agree on the signal
    first (any rank may have had it), so it takes the signal, not a ``GracefulStop``."""
    return "terminated" if signum == signal.SIGTERM else "interrupted"


def stop_label(signum: int | None) -> str:
    """What asked for a stop, for the lines a person reads: ``Ctrl-C`` (SIGINT, or no signal) or
    the signal's name (``SIGTERM``)."""
    return "Ctrl-C" if signum in (None, signal.SIGINT) else signal.Signals(signum).name


def _say_from_handler(line: str) -> None:
    """``line`` on stderr from a signal handler. Why not a bare ``print``: the handler runs
    between two bytecodes of the main thread, which may be inside a write to the same buffered
    ``sys.stderr`` (the trainer logs there); ``print`` then raised "reentrant call", which came
    out of the interrupted write as a "--- Logging error ---" traceback in the run's log (a
    SIGTERM from a process manager lands there more often than a key press). That case writes
    the line with one unbuffered ``os.write`` instead."""
    try:
        print(f"\n{line}", file=sys.stderr, flush=True)
    except RuntimeError:  # reentrant call inside the buffered stderr the main thread is writing
        with contextlib.suppress(OSError):
            os.write(2, f"\n{line}\n".encode(errors="replace"))


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """While the block runs, SIGTERM raises ``StopSignal`` where it comes, as Ctrl-C raises
    KeyboardInterrupt (main thread only; the earlier handler is put back afterwards). Why: its
    default action ends the process at once, so no ``finally`` ran and no line said what was
    kept; a ``GracefulStop`` installed inside the block handles it as a first Ctrl-C instead."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _raise(signum, _frame):
        raise StopSignal(signum)

    previous = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        restore_handler(signal.SIGTERM, previous)


def restore_handler(signum: int, previous) -> None:
    """Put back the handler ``signal.signal`` returned when it was replaced (None: one not set
    from Python, for which the default is the nearest)."""
    signal.signal(signum, signal.SIG_DFL if previous is None else previous)


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold a Ctrl-C or SIGTERM that comes while the block runs (main thread only), and deliver
    it to the handler it would have reached once the block is done: a block that moves files
    (``bitmind.training.run_folder.EarlierRun``) must not be left half done by a second Ctrl-C."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    previous = {s: signal.signal(s, lambda signum, _frame: held.append(signum)) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            restore_handler(signum, handler)
        for signum in dict.fromkeys(held):
            signal.raise_signal(signum)


def leave_sigterm_to_parent() -> None:
    """In a DataLoader worker (``bitmind.data.dataset.worker_init``): a SIGTERM from any process
    but the worker's parent is ignored; one from the parent (torch's or multiprocessing's
    ``terminate``) ends the worker at once with status 0, as torch's own handler does. Why:
    ``timeout``, ``systemctl stop`` and a kill of the process group send SIGTERM to every
    process of the run, and the workers died of it ("DataLoader worker (pid N) is killed by
    signal: Terminated": a traceback, exit status 1) while the trainer was finishing the epoch a
    SIGTERM asks it to finish; the trainer decides, and its end ends them. SIGTERM is blocked in
    the worker and taken by a thread that sees its sender (``sigwaitinfo``); where that does not
    exist (macOS, Windows) nothing is changed."""
    if not (hasattr(signal, "sigwaitinfo") and hasattr(signal, "pthread_sigmask")):
        return
    parent = os.getppid()
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # threads started from here on inherit the mask

    def take() -> None:
        while True:
            info = signal.sigwaitinfo({signal.SIGTERM})
            if info.si_pid == parent or os.getppid() != parent:  # the trainer's own stop, or it is gone
                os._exit(0)

    threading.Thread(target=take, name="sigterm-from-parent", daemon=True).start()


def stop_process(proc: subprocess.Popen, timeout: float = 20.0) -> None:
    """SIGTERM ``proc`` (a graceful stop, as pm2 does), then kill it after ``timeout`` s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
