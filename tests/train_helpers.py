"""What the trainer's and the sweep's tests share: a training config small enough for a CPU in
seconds, and the means to look at a run folder and to stop a run at a known point."""
from __future__ import annotations

import hashlib
import subprocess
import threading
from pathlib import Path
from typing import Callable

import pytest

from bitmind.training import TrainConfig
from bitmind.training.run_folder import ASIDE


def tiny_config(data: Path, out: Path, **kw) -> TrainConfig:
    """A ``TrainConfig`` for ``data`` writing to ``out/t``: a 2-block, 8-channel network, one
    process, no progress bars, a calibration fitted on however few validation pictures there are;
    ``kw`` overrides any option."""
    base = dict(data=[str(data)], checkpoints_dir=str(out), name="t", epochs=2, batch_size=8, layers=[1, 1], width=8,
                workers=0, progress=False, device="cpu", val_fraction=0.25, test_fraction=0.15, seed=0,
                calibration_min_per_class=0)  # a handful of validation pictures: the fit's mechanics, not its quality
    base.update(kw)
    return TrainConfig(**base)


def tiny_sweep_base(tmp_path: Path, data: Path, name: str, epochs: int, **extra) -> dict:
    """The ``base`` of a sweep spec small enough for the CPU in seconds (``tmp_path/ck/name``)."""
    return {"data": [str(data)], "checkpoints_dir": str(tmp_path / "ck"), "name": name, "epochs": epochs, "batch_size": 8,
            "workers": 0, "progress": False, "device": "cpu", "val_fraction": 0.25, "test_fraction": 0.15,
            "layers": [1, 1], "width": 8, **extra}


def tree(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (hidden ones too) by its path there: its SHA-256."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def looking_aside(folder: Path) -> tuple[dict, Callable[[], None]]:
    """``(seen, look)``: ``look()`` records in ``seen`` what an ``--overwrite`` run's ``folder`` holds
    at that moment: ``seen["aside"]``, the ``tree`` of its ``.previous_run`` ({} if none), and
    ``seen["top"]``, the names at its top (``in_epoch_0(real, look)``: as the new run's first epoch
    starts, the earlier run is aside, not gone, and nothing of it is mixed in)."""
    seen: dict = {}

    def look() -> None:
        seen["aside"] = tree(folder / ASIDE) if (folder / ASIDE).is_dir() else {}
        seen["top"] = sorted(p.name for p in folder.iterdir())

    return seen, look


def in_epoch_0(real, action):
    """A ``train_one_epoch`` (``real``: the trainer's or the sweep's) that runs ``action()`` as the
    first epoch it trains starts."""
    state = {"done": False}

    def epoch(*a, **kw):
        if not state["done"]:
            state["done"] = True
            action()
        return real(*a, **kw)

    return epoch


def kill_when_it_says(cmd: list[str], line: str, **popen) -> None:
    """Run ``cmd`` (``popen``: more ``subprocess.Popen`` keywords) until it prints ``line`` on stdout,
    then kill it (SIGKILL: no clean-up at all, as an out-of-memory kill or a lost machine). One that
    ends before failing the test with its stderr, one that never gets there killed after 120 s (the
    test fails, never hangs)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)
    guard = threading.Timer(120, proc.kill)
    guard.start()
    try:
        for said in proc.stdout:  # the command's own lines first
            if said.strip() == line:
                break
        else:
            pytest.fail(proc.stderr.read()[-3000:])
    finally:
        guard.cancel()
        proc.kill()
        proc.wait()
