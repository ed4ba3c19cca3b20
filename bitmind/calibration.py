"""Output calibration: map raw logits to probabilities whose 0.5 threshold is right.

SN34 rewards are binary at 0.5, so a detector whose logits are shifted (e.g. too eager
to call real photos fake) loses rewards even with a perfect ranking. ``fit_platt``
fits ``p = sigmoid(logit / T + b)`` on held-out validation logits by minimising the
log loss (Platt scaling; with ``fit_bias=False`` it is plain temperature scaling).
The result is stored in the checkpoint metadata (``temperature``, ``logit_bias``) and
applied by ``LoadedModel.probabilities`` everywhere a model is served or evaluated.
"""
from __future__ import annotations

import numpy as np
import torch


def fit_platt(logits, labels, fit_bias: bool = True, steps: int = 200) -> tuple[float, float]:
    """Return ``(temperature, bias)`` minimising binary NLL of ``sigmoid(logit / T + b)``."""
    z = torch.as_tensor(np.asarray(logits, dtype=np.float64)).reshape(-1)
    y = torch.as_tensor(np.asarray(labels, dtype=np.float64)).reshape(-1)
    if len(z) == 0 or y.min() == y.max():
        return 1.0, 0.0  # nothing to calibrate against
    log_inv_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)  # 1/T = exp(.)
    b = torch.zeros(1, dtype=torch.float64, requires_grad=fit_bias)
    params = [log_inv_t] + ([b] if fit_bias else [])
    opt = torch.optim.LBFGS(params, lr=0.5, max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(z * log_inv_t.exp() + b, y)
        loss.backward()
        return loss

    opt.step(closure)
    t = float(1.0 / log_inv_t.exp().item())
    if not np.isfinite(t) or not np.isfinite(b.item()):
        return 1.0, 0.0
    # Separable data drives the optimum to infinity; keep the map sane.
    return min(max(t, 0.05), 20.0), min(max(float(b.item()), -10.0), 10.0)


def apply_calibration(logits, temperature: float = 1.0, bias: float = 0.0):
    """Logits (numpy or torch) -> calibrated probabilities, same type."""
    if isinstance(logits, torch.Tensor):
        return torch.sigmoid(logits / temperature + bias)
    z = np.asarray(logits, dtype=np.float64) / temperature + bias
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # the logistic function, without overflow for large |z|
