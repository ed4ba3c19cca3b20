"""Output calibration: map raw logits to probabilities whose 0.5 threshold is right.

SN34 rewards are binary at 0.5, so a detector whose logits are shifted (e.g. too eager
to call real photos fake) loses rewards even with a perfect ranking. ``fit_platt``
fits ``p = sigmoid(logit / T + b)`` on held-out validation logits by minimising the
log loss (Platt scaling; with ``fit_bias=False`` it is plain temperature scaling).
The result is stored in the checkpoint metadata (``temperature``, ``logit_bias``) and
applied by ``LoadedModel.probabilities`` everywhere a model is served or evaluated.

``real_target`` moves the boundary after the fit so that that share of the validation
real photos is called real. Why: the validation split holds only known cameras and
generators, and the miner is paid on unknown ones too. By the leave-one-out folds
(docs/Generalisation_record.md, "Where the decision boundary should be"), a real photo from a
kind of camera the model never saw is called real far less often than a known one (0.64
against 0.80), so the balanced accuracy on unseen generators and unseen cameras together
peaks with the boundary where about 0.85 of the KNOWN real photos pass, not at the
class-balanced Platt point.
"""
from __future__ import annotations

import numpy as np
import torch


def fit_platt(logits, labels, fit_bias: bool = True, steps: int = 200, class_balanced: bool = True) -> tuple[float, float]:
    """Return ``(temperature, bias)`` minimising binary NLL of ``sigmoid(logit / T + b)``.

    ``class_balanced`` (default) weighs both classes equally, whatever their counts: SN34
    validators send real and generated pictures about equally often, so the prior the
    0.5 threshold must assume is 50/50, not the validation pool's (sn34-wide's has 2.7
    fakes per real photo; an unweighted fit would learn "say fake" from that alone)."""
    z = torch.as_tensor(np.asarray(logits, dtype=np.float64)).reshape(-1)
    y = torch.as_tensor(np.asarray(labels, dtype=np.float64)).reshape(-1)
    if len(z) == 0 or y.min() == y.max():
        return 1.0, 0.0  # nothing to calibrate against
    w = torch.where(y > 0.5, 0.5 / y.mean(), 0.5 / (1.0 - y.mean())) if class_balanced else torch.ones_like(y)
    log_inv_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)  # 1/T = exp(.)
    b = torch.zeros(1, dtype=torch.float64, requires_grad=fit_bias)
    params = [log_inv_t] + ([b] if fit_bias else [])
    opt = torch.optim.LBFGS(params, lr=0.5, max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(z * log_inv_t.exp() + b, y, weight=w)
        loss.backward()
        return loss

    opt.step(closure)
    t = float(1.0 / log_inv_t.exp().item())
    if not np.isfinite(t) or not np.isfinite(b.item()):
        return 1.0, 0.0
    # Separable data drives the optimum to infinity; keep the map sane. The bias bound is
    # wide: logits on another scale (a top-k pooled arm sits several logits higher) need a
    # bias of -offset / T, beyond 10 at a sharp temperature.
    return min(max(t, 0.05), 20.0), min(max(float(b.item()), -100.0), 100.0)


def apply_calibration(logits, temperature: float = 1.0, bias: float = 0.0):
    """Logits (numpy or torch) -> calibrated probabilities, same type."""
    if isinstance(logits, torch.Tensor):
        return torch.sigmoid(logits / temperature + bias)
    z = np.asarray(logits, dtype=np.float64) / temperature + bias
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # the logistic function, without overflow for large |z|


def balanced_brier(labels, probs) -> float:
    """The Brier score with both classes weighed equally (the mean of the per-class
    scores): what ``fit_platt``'s class-balanced fit improves, and so what decides
    whether a fitted calibration is kept."""
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    p = np.asarray(probs, dtype=np.float64).reshape(-1)
    per = [np.mean((p[y == c] - c) ** 2) for c in (0.0, 1.0) if np.any(y == c)]
    return float(np.mean(per)) if per else float("nan")


def real_target_bias(logits, labels, temperature: float, real_target: float) -> float:
    """The bias that calls ``real_target`` of the real pictures among ``logits`` real
    (answer AI when ``logit / T + b > 0``)."""
    if not 0.0 < real_target < 1.0:
        raise ValueError(f"real_target must lie in (0, 1), got {real_target}")
    z = np.asarray(logits, dtype=np.float64).reshape(-1)[np.asarray(labels).reshape(-1) < 0.5] / temperature
    if len(z) == 0:
        raise ValueError("real_target needs real pictures among the validation logits")
    return float(-np.quantile(z, real_target))


#: Metrics recorded before and after a fit, as ``val_<key>_before`` / ``val_<key>_after``.
RECORD_METRICS = ("brier", "balanced_brier", "ece", "accuracy", "real_accuracy", "fake_accuracy")
METHOD = "class-balanced Platt scaling"


#: Fewest pictures of each class a calibration is fitted on (``calibrate_logits``). Why: a
#: Platt fit (and a ``real_target`` boundary) on a handful of pictures follows those pictures:
#: a fine-tune whose validation split held 1 real photo and 2 fakes stored T=0.05, b=+50, which
#: called 81% of the test split's real photos fake, and its keep-if-better check, made on the same
#: three pictures, said it was better (operator audit). Below this, nothing is fitted: the file
#: keeps the calibration in place (``bitmind.calibrate`` writes nothing; the trainer leaves the
#: raw logits) and says to fit on more data; ``min_per_class`` lowers it knowingly.
MIN_PER_CLASS = 20


class CalibrationDataError(ValueError):
    """The held-out data cannot calibrate anything: no logits, or only one class (a fit
    needs real photos and fakes; with one class it would return the identity map and wipe
    whatever calibration the file had). Callers that can go on without a calibration (the
    trainer) catch this; ``bitmind.calibrate`` reports it and writes nothing."""


def too_few_to_calibrate(labels, min_per_class: int = MIN_PER_CLASS, per_picture: int = 1) -> str:
    """Why ``labels`` (``per_picture`` of them for each picture: one per challenge seed) are too
    few pictures of a class to fit a calibration on ("" if they are not)."""
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    real, fake = int((y < 0.5).sum()) // max(1, per_picture), int((y >= 0.5).sum()) // max(1, per_picture)
    if len(y) and y.min() == y.max():  # one class: no fit at all, whatever the minimum
        return f"calibration needs both real and fake pictures; all {len(y)} are {'fake' if y[0] > 0.5 else 'real'}"
    if min(real, fake) >= min_per_class or not len(y):
        return ""
    return (f"only {real} real and {fake} fake pictures to fit on, fewer than {min_per_class} of a class: a calibration "
            "fitted on so few follows those pictures and can call most real photos fake elsewhere; fit it on more "
            "held-out pictures (python -m bitmind.calibrate --model FILE --data MORE_DATA [--split all]), or lower "
            "the minimum knowingly (--min_per_class / --calibration_min_per_class)")


def calibrate_logits(logits, labels, keep_if_better: bool = True, real_target: float | None = None,
                     current: tuple[float, float] = (1.0, 0.0), min_per_class: int = MIN_PER_CLASS,
                     per_picture: int = 1, **context) -> dict:
    """Fit class-balanced Platt scaling on held-out ``logits``; the calibration record that
    the trainer, the sweep, ``bitmind.calibrate`` and the leave-one-out ship all store
    (one schema): ``temperature``, ``logit_bias``, ``method``, ``kept``, ``n``, the
    ``context`` given (split, seeds, regimes ...), ``previous_temperature`` /
    ``previous_logit_bias`` (``current``) and ``val_<metric>_before/after``.

    ``current`` is the ``(temperature, bias)`` in place before this fit (the identity map
    for a freshly trained checkpoint; the stored calibration when ``bitmind.calibrate``
    fits a file anew), and ``val_<metric>_before`` is measured with it. With
    ``keep_if_better`` the fit is kept only if it lowers the class-balanced Brier score
    below ``current``'s (tiny or separable validation sets, or a stored calibration that
    does better on these data: ``current`` is kept instead, never replaced by something
    worse). With ``real_target`` the temperature kept stays and the bias is replaced by
    the one that calls that share of the validation real photos real
    (``real_target_bias``; the bias it replaces is kept in the record as ``platt_bias``, and
    the class-balanced Brier score with it as ``val_balanced_brier_platt``: ``val_*_after``
    are then the moved boundary's, which can be worse than ``val_*_before`` even when the
    Platt fit was kept); 0 or None keeps the Platt boundary. Raises ``CalibrationDataError`` when ``labels``
    are empty or of one class, or hold fewer than ``min_per_class`` pictures of a class
    (``per_picture`` labels to a picture: ``too_few_to_calibrate``)."""
    from bitmind.metrics import compute_metrics

    z = np.asarray(logits, dtype=np.float64).reshape(-1)
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    if len(y) == 0:
        raise CalibrationDataError("no logits to calibrate on (no readable images?)")
    if (why := too_few_to_calibrate(y, min_per_class, per_picture)):  # one class, or too few of one
        raise CalibrationDataError(why)
    if real_target and not 0.0 < real_target < 1.0:  # before the fit, not after it
        raise ValueError(f"real_target must lie in (0, 1), got {real_target}")
    t0, b0 = float(current[0]), float(current[1])
    t, b = fit_platt(z, y, class_balanced=True)

    def scores(temperature, bias):
        p = apply_calibration(z, temperature, bias)
        return {**compute_metrics(y, p), "balanced_brier": balanced_brier(y, p)}

    before, after = scores(t0, b0), scores(t, b)
    kept = not keep_if_better or after["balanced_brier"] <= before["balanced_brier"]
    if not kept:
        t, b, after = t0, b0, before
    if kept:
        method = METHOD
    elif (t0, b0) == (1.0, 0.0):  # the raw logits stay: no Platt scaling is in force
        method = "none (a Platt fit was not better than the raw logits)"
    else:
        method = "the calibration in place (a new Platt fit was not better)"
    boundary = {}
    if real_target:
        boundary = {"real_target": float(real_target), "platt_bias": b, "val_balanced_brier_platt": after["balanced_brier"]}
        b = real_target_bias(z, y, t, real_target)
        method, after = f"{method}, boundary at {real_target:g} of validation real photos", scores(t, b)
    check_boundary_servable(t, b, z, y)
    return {"temperature": t, "logit_bias": b, "method": method, "class_balanced": True, "kept": kept, "n": int(len(y)),
            "previous_temperature": t0, "previous_logit_bias": b0,
            **boundary, **context, **{f"val_{k}_{when}": m[k] for when, m in (("before", before), ("after", after)) for k in RECORD_METRICS}}


def check_boundary_servable(temperature: float, bias: float, logits=None, labels=None) -> None:
    """A ``CalibrationDataError`` if a fitted calibration puts its decision boundary (raw logit
    ``-bias * temperature``) beyond ``bitmind.checkpoint.MAX_BOUNDARY_LOGIT``, which the miner
    refuses to serve (``check_calibration``). Why: the fit itself has no such limit (the
    real-target rule puts the boundary at a quantile of the real photos' raw logits), so a
    network whose validation logits lie far from 0 got a calibration stored that the miner and
    ``model_info`` then refused; refused here, the trainer keeps what it had (the starting
    file's, or raw logits) and ``bitmind.calibrate`` says why in one line."""
    from bitmind.checkpoint import MAX_BOUNDARY_LOGIT

    if abs(bias) * temperature <= MAX_BOUNDARY_LOGIT:
        return
    seen = ""
    if logits is not None and labels is not None and len(logits):
        z, y = np.asarray(logits, dtype=np.float64), np.asarray(labels)
        seen = (f"; the validation pictures' raw logits: real median {np.median(z[y == 0]):.1f}, "
                f"fake median {np.median(z[y == 1]):.1f}")
    raise CalibrationDataError(
        f"the fitted decision boundary lies at raw logit {-bias * temperature:.1f}, beyond the +-{MAX_BOUNDARY_LOGIT:g} "
        f"the miner serves (docs/Mining.md, \"The model and hot reload\"){seen}: this network's logits are too far "
        "from 0 to calibrate safely")


def store_calibration(checkpoint, record: dict, out=None, transform=None, **meta_updates) -> dict:
    """Write ``record``'s temperature and bias (and the record, under ``metrics.calibration``)
    into the metadata of ``checkpoint``, saved to ``out`` (default: over ``checkpoint``);
    ``transform(state, meta) -> (state, meta)`` is applied first (e.g. dropping a head)."""
    from bitmind.checkpoint import read_checkpoint, save_checkpoint

    state, meta = read_checkpoint(checkpoint)
    if transform is not None:
        state, meta = transform(state, meta)
    meta["temperature"], meta["logit_bias"] = record["temperature"], record["logit_bias"]
    meta.setdefault("metrics", {})["calibration"] = record
    meta.update(meta_updates)
    save_checkpoint(state, out or checkpoint, meta)
    return record
