"""CPU preparation of the serving model, and keeping torch's threads where they belong.

CPU speed: on a CPU the validated model is also prepared for inference: batch norms
folded into the convolutions that feed them (found by watching a probe forward, so any
architecture) and weights in channels-last layout, which oneDNN runs fastest: about 1.8x faster than
eager for NPR on 2 cores. The prepared forward must match the eager one on a random
probe, else the eager model serves. On a hot reload the new model serves eager at once
and its prepared forward is swapped in by a background thread when ready, so preparing
never delays the swap (``bitmind.miner.reload.ModelSlot`` does both). On CUDA the eager model runs in channels-last with bf16 autocast.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn as nn

from bitmind.checkpoint import LoadedModel
from bitmind.inference import forward_logits


@contextlib.contextmanager
def single_threaded(enabled: bool = True):
    """Run this thread's torch ops on one intra-op thread, restoring the setting after.

    Why: on a CPU the forward workers are the only threads that should run torch with
    several intra-op threads. Every thread that does runs its own OpenMP team, and a live
    team in one thread measurably slows another thread's multi-threaded forward (on 2
    cores: a worker's 20 ms forward took 25 ms once the main thread had run a single
    parallel op). So model loading, validation, preparing and decoding stay on one thread.
    The setting is per thread and costs well under a microsecond."""
    prev = torch.get_num_threads()
    if not enabled or prev == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(prev)


@torch.inference_mode()
def logits_of(model: nn.Module, batch: torch.Tensor, amp_dtype: torch.dtype | None = None) -> torch.Tensor:
    """The eager serving forward (channels-last, autocast on CUDA): (B,) logits on the CPU."""
    return forward_logits(model, batch, amp_dtype=amp_dtype).cpu()


@dataclass(frozen=True)
class Serving:
    """What answers requests: the loaded model and the forward used for it (eager or
    CPU-prepared). Replaced as one reference, so a batch never mixes two models."""

    lm: LoadedModel
    forward: nn.Module | None = None  # the CPU-prepared copy, or None: lm.model runs as it is

    def logits(self, batch: torch.Tensor, amp_dtype: torch.dtype | None) -> torch.Tensor:
        if self.forward is None:
            return logits_of(self.lm.model, batch, amp_dtype)
        with torch.inference_mode():
            return forward_logits(self.forward, batch, channels_last=True)
