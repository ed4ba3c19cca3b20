"""Graceful stop for long-running processes: for neurons, SIGINT and SIGTERM (Ctrl-C,
``pm2 stop``) set an event that the main loop checks between steps, so a round or a request
in flight finishes and state is saved before the process exits; for training, Ctrl-C lets
the epoch in progress finish and be saved (``GracefulStop``); a Ctrl-C that stops a command
at once ends it with one line and exit status 130 (``exit_interrupted``), not a traceback."""
from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Callable, Iterable, Iterator, NoReturn

#: The line a Ctrl-C before a run began ends with (while torch and the rest import, ~2 s,
#: or while the options are read): nothing was written yet.
STARTING_INTERRUPTED = "stopped (Ctrl-C) while starting, before the run began: nothing was written; run the command again"


def exit_interrupted(message: str) -> NoReturn:
    """End a command that a Ctrl-C stopped at once as a first Ctrl-C ends a run: ``message``
    (what is kept, how to go on) as one line on stderr, after the terminal's ``^C``, and exit
    status 130; not a KeyboardInterrupt traceback."""
    print(f"\n{message}", file=sys.stderr, flush=True)
    raise SystemExit(130) from None


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
    main thread (signal handlers live there); elsewhere nothing is installed."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = None

    def install(self) -> "GracefulStop":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def uninstall(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def _handle(self, signum, frame) -> None:
        if self.requested:  # the second press: stop now
            self.uninstall()
            raise KeyboardInterrupt
        self.requested = True  # on stderr, as the line a second press (or the stop) ends with: not the run's output
        print("\nCtrl-C: stopping after this epoch is saved (press again to stop now)", file=sys.stderr, flush=True)


def stop_process(proc: subprocess.Popen, timeout: float = 20.0) -> None:
    """SIGTERM ``proc`` (a graceful stop, as pm2 does), then kill it after ``timeout`` s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
