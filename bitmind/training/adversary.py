"""The content adversary (``TrainConfig.adv_weight``): a training-only head that tries to name
each real photo's kind (faces, COCO, ImageNet, low light, ...) from the detector's pooled
features, with its gradient reversed into the network.

Why: the detector learned what pictures show instead of how they were made ("faces look real,
art looks fake"), and on sources absent from the pools it scores near chance. Real photo kinds
were all made by cameras; what sets them apart is their content. A head that reads the kind
from the features the classifier sees, trained normally, finds whatever content those features
carry; the same gradient, reversed and scaled, tells the network to carry less of it
(domain-adversarial training, Ganin & Lempitsky, ICML 2015, with the real kinds as domains).
The family head's gain turned out to be mostly a regulariser (the shuffled-class probe,
docs/Generalisation_record.md): this one is aimed at the content the detector should not read.

The head is not part of the served network: checkpoints hold the detector alone; a resumable
state keeps the head's weights (``Learner.rng_state``) so a resumed run goes on against the
same adversary."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class _ReverseGradient(torch.autograd.Function):
    """Identity forward; backward multiplies the gradient by ``-scale``."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:  # noqa: D401
        ctx.scale = float(scale)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return -ctx.scale * grad, None


def reverse_gradient(x: torch.Tensor, scale: float) -> torch.Tensor:
    """``x`` unchanged; the gradient flowing back through it is multiplied by ``-scale``."""
    return _ReverseGradient.apply(x, scale)


def ramp(progress: float) -> float:
    """The reversal's share at ``progress`` (0 at the first epoch, 1 at the last): 0 at the start,
    rising smoothly to about 1 (``2 / (1 + exp(-10 p)) - 1``, the schedule of domain-adversarial
    training). Why a ramp: at the start the adversary names nothing yet, and its reversed
    gradient is noise into features the detector has not formed."""
    p = min(max(float(progress), 0.0), 1.0)
    return 2.0 / (1.0 + math.exp(-10.0 * p)) - 1.0


class ContentAdversary(nn.Module):
    """A linear head from the pooled features to the real kinds (``content_classes``)."""

    def __init__(self, features: int, kinds: int, seed: int = 0):
        super().__init__()
        if kinds < 2:
            raise ValueError(f"a content adversary needs two real kinds or more, got {kinds}")
        self.head = nn.Linear(features, kinds)
        gen = torch.Generator().manual_seed(int(seed))  # its own stream: the global one (dropout) is left as it was
        with torch.no_grad():
            bound = 1.0 / math.sqrt(features)
            self.head.weight.uniform_(-bound, bound, generator=gen)
            self.head.bias.uniform_(-bound, bound, generator=gen)

    def term(self, features: torch.Tensor, kinds: torch.Tensor, scale: float) -> torch.Tensor:
        """The adversary's cross-entropy over the rows whose kind is known (``kinds`` >= 0; a
        generated picture is -1), 0 for a batch without one (no host sync: weights, not an
        index). The head's own weights get the plain gradient (it learns to name the kind); the
        features get it reversed and times ``scale``."""
        logits = self.head(reverse_gradient(features.float(), scale))
        known = (kinds >= 0).to(logits.dtype)
        per = F.cross_entropy(logits, kinds.clamp(min=0), reduction="none")
        return (per * known).sum() / known.sum().clamp(min=1.0)


def average_gradients(module: nn.Module) -> None:
    """Average ``module``'s gradients over the ranks of a distributed run (nothing in one
    process): the network's are averaged by DDP, a training-only head outside it is not, and
    each rank's copy would drift to its own shard's adversary."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return
    world = dist.get_world_size()
    for p in module.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad.div_(world)
