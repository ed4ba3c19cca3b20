"""Graceful stop for long-running neurons: SIGINT and SIGTERM (Ctrl-C, ``pm2 stop``)
set an event that the main loop checks between steps, so a round or a request in
flight finishes and state is saved before the process exits."""
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


def stop_process(proc: subprocess.Popen, timeout: float = 20.0) -> None:
    """SIGTERM ``proc`` (a graceful stop, as pm2 does), then kill it after ``timeout`` s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
