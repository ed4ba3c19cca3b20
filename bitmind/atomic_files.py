"""Files written whole: a temporary file beside the target, then renamed over it, so a reader
or a crash sees the whole old file or the whole new one, never half of either.

Its own module, without torch, so light scripts (the benchmarks' report writer,
``bitmind.report``) can write whole files without loading it; ``bitmind.common`` re-exports both.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Callable


def atomic_write(path: str | os.PathLike, writer: Callable[[str], None], durable: bool = False) -> Path:
    """Write ``path`` all at once: ``writer(tmp)`` fills a temporary file in the same folder
    (created if missing), which then replaces ``path``, so readers and crashes see the whole
    old or the whole new file. ``durable`` also fsyncs the file and the rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        writer(tmp)
        # mkstemp makes the file private (0600); give it the mode a plain open() would have
        # (0666 less the umask), so a model file written here is readable like any other.
        os.chmod(tmp, 0o666 & ~_umask())
        if durable:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    if durable:  # the rename too (a folder that cannot be opened or fsynced is skipped)
        with contextlib.suppress(OSError):
            dfd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
    return path


def _umask() -> int:
    """The process umask: from /proc on Linux (no side effect), else by setting it and
    putting it back (there is no getter; the moment between is a few instructions)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str, durable: bool = False) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"), durable=durable)
