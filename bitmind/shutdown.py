"""Graceful stop for long-running processes: for neurons, SIGINT and SIGTERM (Ctrl-C,
``pm2 stop``) set an event that the main loop checks between steps, so a round or a request
in flight finishes and state is saved before the process exits; for training, Ctrl-C lets
the epoch in progress finish and be saved (``GracefulStop``)."""
from __future__ import annotations

import signal
import subprocess
import threading
from typing import Callable


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
        self.requested = True
        print("\nCtrl-C: stopping after this epoch is saved (press again to stop now)", flush=True)


def stop_process(proc: subprocess.Popen, timeout: float = 20.0) -> None:
    """SIGTERM ``proc`` (a graceful stop, as pm2 does), then kill it after ``timeout`` s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
