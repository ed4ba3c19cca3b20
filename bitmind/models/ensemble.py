"""Several detectors served as one: the ``ensemble`` architecture (written by ``python -m bitmind.ensemble``)."""
from __future__ import annotations

import torch
import torch.nn as nn

from bitmind.models.registry import build_model, register_model


@register_model("ensemble")
class Ensemble(nn.Module):
    """Several detectors in one file: the logit is the mean of the members' logits.

    ``members`` is a list of ``{"arch": name, "config": {...}}``; the state dict holds
    each member's weights under ``members.<i>.``. Served like any single model (one
    input batch, one logit per image), so the predictor, hot reload and CPU batch-norm
    folding need nothing special."""

    def __init__(self, members: list[dict]):
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.config = {"members": [{"arch": m["arch"], "config": dict(m.get("config", {}))} for m in members]}
        self.members = nn.ModuleList(build_model(m["arch"], **m.get("config", {})) for m in members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # each member's first output: its detector logit (a member trained with an auxiliary head has more)
        return torch.stack([m(x)[:, :1] for m in self.members], dim=0).mean(dim=0)
