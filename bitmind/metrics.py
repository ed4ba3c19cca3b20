"""Detection metrics, shared by the trainer, ``bitmind.eval`` and
``base_miner/NPR/validate.py`` so that every number the project reports is computed
by the same code.

Convention: label 1 = AI-generated (fake), 0 = real; a probability above the
threshold (0.5, what SN34 validators use) is a "fake" prediction.

``compute_metrics`` never raises on degenerate input: a single-class set (e.g. one
source folder that holds only real images) has no ranking metric, so AP and ROC AUC
are ``None`` there, and so is MCC, whose denominator is then zero by construction.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

DEFAULT_THRESHOLD = 0.5
#: Keys of every metrics dict (overall and per source), in display order.
METRIC_KEYS = ("n", "n_real", "n_fake", "accuracy", "balanced_accuracy", "ap", "roc_auc",
               "real_accuracy", "fake_accuracy", "brier", "mcc", "ece")


def _as_array(x, dtype=np.float64) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype).reshape(-1)


def _ratio(num: int, den: int) -> float | None:
    return float(num) / den if den else None


def expected_calibration_error(labels, probs, bins: int = 15) -> float | None:
    """ECE of the fake-probability: mean |observed fake rate - mean prob| over equal-width
    bins, weighted by bin size. 0 is perfectly calibrated."""
    y, p = _as_array(labels), _as_array(probs)
    if y.size == 0:
        return None
    idx = np.minimum((p * bins).astype(int), bins - 1)
    # a bin's size x |mean label - mean prob| is |sum of labels - sum of probs| in that bin
    return float(np.abs(np.bincount(idx, y, bins) - np.bincount(idx, p, bins)).sum() / y.size)


def _core_metrics(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, Any]:
    n = int(y.size)
    n_fake = int((y == 1).sum())
    n_real = n - n_fake
    out: dict[str, Any] = {k: None for k in METRIC_KEYS}
    out.update(n=n, n_real=n_real, n_fake=n_fake)
    if n == 0:
        return out
    pred = p > threshold
    truth = y == 1
    tp = int((pred & truth).sum())
    tn = int((~pred & ~truth).sum())
    fp = int((pred & ~truth).sum())
    fn = int((~pred & truth).sum())
    real_acc = _ratio(tn, n_real)
    fake_acc = _ratio(tp, n_fake)
    class_accs = [a for a in (real_acc, fake_acc) if a is not None]
    out.update(
        accuracy=(tp + tn) / n,
        balanced_accuracy=float(np.mean(class_accs)),
        real_accuracy=real_acc,
        fake_accuracy=fake_acc,
        brier=float(np.mean((p - y) ** 2)),
        ece=expected_calibration_error(y, p),
        confusion={"tn": tn, "fp": fp, "fn": fn, "tp": tp},
    )
    if n_real and n_fake:
        from sklearn.metrics import average_precision_score, roc_auc_score

        out["ap"] = float(average_precision_score(y, p))
        out["roc_auc"] = float(roc_auc_score(y, p))
        den = math.sqrt(float(tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
        out["mcc"] = float((tp * tn - fp * fn) / den) if den else 0.0
    return out


def compute_metrics(labels, probs, sources: Sequence[str] | None = None, threshold: float = DEFAULT_THRESHOLD) -> dict[str, Any]:
    """Metrics of fake-probabilities ``probs`` against 0/1 ``labels``.

    Returns a dict with ``n, n_real, n_fake, accuracy, balanced_accuracy, ap, roc_auc,
    real_accuracy, fake_accuracy, brier, mcc, ece, confusion, threshold`` and, when
    ``sources`` (one name per item) is given, ``per_source``: the same dict (without
    nesting) for each source name, sorted by name. Values that are undefined for the
    input (e.g. AP of a single-class set, the fake accuracy of a set without fakes)
    are ``None``.
    """
    y, p = _as_array(labels), _as_array(probs)
    if y.shape != p.shape:
        raise ValueError(f"labels ({y.size}) and probs ({p.size}) differ in length")
    if y.size and not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 (real) or 1 (fake)")
    if y.size and not np.isfinite(p).all():
        raise ValueError("probs contain NaN or inf")
    out = _core_metrics(y, p, threshold)
    out["threshold"] = threshold
    if sources is not None:
        src = np.asarray(list(sources), dtype=object)
        if src.size != y.size:
            raise ValueError(f"sources ({src.size}) and labels ({y.size}) differ in length")
        out["per_source"] = {str(name): _core_metrics(y[src == name], p[src == name], threshold) for name in sorted(set(src.tolist()))}
    return out


def bootstrap_strata(*columns) -> list[np.ndarray]:
    """Indices of the rows grouped by their values in ``columns`` (e.g. source and label),
    groups in sorted order of the joined values: a paired bootstrap resamples within each
    group (``bootstrap_resample``), so every source keeps its size and both classes stay
    present (AUC stays defined)."""
    keys = np.asarray(columns[0]).astype(str)
    for col in columns[1:]:
        keys = np.char.add(np.char.add(keys, "|"), np.asarray(col).astype(str))
    return [np.flatnonzero(keys == k) for k in np.unique(keys)]


def bootstrap_resample(groups: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """One bootstrap draw of row indices, with replacement inside each group of ``bootstrap_strata``."""
    return np.concatenate([g[rng.integers(0, len(g), len(g))] for g in groups])


def format_metrics_table(metrics: dict[str, Any], title: str | None = None) -> str:
    """A short fixed-width table: the overall line, then one per source."""
    cols = [("n", "n", "{:d}"), ("acc", "accuracy", "{:.4f}"), ("bal_acc", "balanced_accuracy", "{:.4f}"),
            ("AP", "ap", "{:.4f}"), ("AUC", "roc_auc", "{:.4f}"), ("real_acc", "real_accuracy", "{:.4f}"),
            ("fake_acc", "fake_accuracy", "{:.4f}"), ("brier", "brier", "{:.4f}"), ("MCC", "mcc", "{:.4f}")]
    rows = [("overall", metrics)] + list((metrics.get("per_source") or {}).items())
    width = max(12, *(len(name) for name, _ in rows))
    head = f"{'source':<{width}} " + " ".join(f"{c:>9}" for c, _, _ in cols)
    lines = ([title] if title else []) + [head, "-" * len(head)]
    for name, m in rows:
        cells = [f"{'-' if m.get(key) is None else fmt.format(m[key]):>9}" for _, key, fmt in cols]
        lines.append(f"{name:<{width}} " + " ".join(cells))
    return "\n".join(lines)
