"""What the trainer's tests share: a training config small enough for a CPU in seconds."""
from __future__ import annotations

from pathlib import Path

from bitmind.training import TrainConfig


def tiny_config(data: Path, out: Path, **kw) -> TrainConfig:
    """A ``TrainConfig`` for ``data`` writing to ``out/t``: a 2-block, 8-channel network, one
    process, no progress bars, a calibration fitted on however few validation pictures there are;
    ``kw`` overrides any option."""
    base = dict(data=[str(data)], checkpoints_dir=str(out), name="t", epochs=2, batch_size=8, layers=[1, 1], width=8,
                workers=0, progress=False, device="cpu", val_fraction=0.25, test_fraction=0.15, seed=0,
                calibration_min_per_class=0)  # a handful of validation pictures: the fit's mechanics, not its quality
    base.update(kw)
    return TrainConfig(**base)
