"""Evaluation and training plots (matplotlib).

Each ``plot_*`` function draws on an ``Axes`` it is given, so a notebook can lay
figures out with pyplot while the command line renders files through
``matplotlib.figure.Figure`` alone: no pyplot global state, no GUI backend, safe in
threads and on headless machines.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

REAL_COLOR, FAKE_COLOR = "#1f77b4", "#d62728"


def new_figure(ncols: int = 1, nrows: int = 1, size: tuple[float, float] = (4.5, 4.0)):
    """A pyplot-free Figure and its axes (a flat list), for rendering to files."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(size[0] * ncols, size[1] * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel().tolist()
    return fig, axes


def plot_roc(ax, labels, probs, label: str | None = None):
    """ROC curve with its AUC in the legend (nothing drawn for a single-class set)."""
    from sklearn.metrics import roc_auc_score, roc_curve

    y, p = np.asarray(labels), np.asarray(probs)
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8)
    if len(np.unique(y)) == 2:
        fpr, tpr, _ = roc_curve(y, p)
        auc = roc_auc_score(y, p)
        ax.plot(fpr, tpr, lw=1.8, label=f"{label + ' ' if label else ''}AUC {auc:.3f}")
        ax.legend(loc="lower right")
    else:
        ax.text(0.5, 0.5, "ROC needs both classes", ha="center", va="center")
    ax.set(xlabel="false positive rate (real called fake)", ylabel="true positive rate (fake caught)",
           xlim=(0, 1), ylim=(0, 1.01), title="ROC")
    return ax


def plot_score_histograms(ax, labels, probs, bins: int = 30, threshold: float = 0.5):
    """Histogram of the fake-probability per true class, with the decision threshold."""
    y, p = np.asarray(labels), np.asarray(probs)
    edges = np.linspace(0, 1, bins + 1)
    for cls, name, color in ((0, "real", REAL_COLOR), (1, "fake", FAKE_COLOR)):
        sel = p[y == cls]
        if sel.size:
            ax.hist(sel, bins=edges, alpha=0.6, color=color, label=f"{name} (n={sel.size})")
    ax.axvline(threshold, color="black", ls="--", lw=0.8)
    ax.set(xlabel="P(fake)", ylabel="images", xlim=(0, 1), title="Scores by true class")
    ax.legend(loc="upper center")
    return ax


def plot_confusion(ax, labels, probs, threshold: float = 0.5):
    """2x2 confusion matrix (rows: truth, columns: prediction) with counts and row shares."""
    y, p = np.asarray(labels).astype(int), (np.asarray(probs) > threshold).astype(int)
    cm = np.zeros((2, 2), dtype=int)
    for t, q in zip(y, p):
        cm[t, q] += 1
    share = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for t in range(2):
        for q in range(2):
            ax.text(q, t, f"{cm[t, q]}\n{share[t, q]:.1%}", ha="center", va="center",
                    color="white" if share[t, q] > 0.6 else "black")
    ax.set_xticks([0, 1], ["real", "fake"])
    ax.set_yticks([0, 1], ["real", "fake"])
    ax.set(xlabel="predicted", ylabel="true", title=f"Confusion (threshold {threshold})")
    return ax


def plot_training_curves(history: Sequence[dict], axes=None):
    """Loss and validation metrics per epoch from the trainer's ``history`` list.

    Draws on three axes (loss; accuracy and AP; real/fake accuracy); creates a
    pyplot-free figure when ``axes`` is None. Returns the figure.
    """
    if axes is None:
        fig, axes = new_figure(3, 1, size=(4.2, 3.4))
    else:
        fig = axes[0].figure
    ep = [h.get("epoch") for h in history]

    def series(key):
        return [h.get(key) if h.get(key) is not None else np.nan for h in history]

    axes[0].plot(ep, series("train_loss"), marker="o", label="train loss")
    if any(h.get("val_loss") is not None for h in history):
        axes[0].plot(ep, series("val_loss"), marker="o", label="val loss")
    axes[0].set(xlabel="epoch", ylabel="loss", title="Loss")
    axes[0].legend()
    axes[1].plot(ep, series("val_acc"), marker="o", label="val accuracy")
    if any(r.get("val_balanced_acc") is not None for r in history):  # what picks the best epoch
        axes[1].plot(ep, series("val_balanced_acc"), marker="o", label="val balanced accuracy (selects the best)")
    axes[1].plot(ep, series("val_ap"), marker="o", label="val AP")
    axes[1].set(xlabel="epoch", ylim=(0, 1.02), title="Validation")
    axes[1].legend(loc="lower right")
    axes[2].plot(ep, series("val_real_acc"), marker="o", color=REAL_COLOR, label="real accuracy")
    axes[2].plot(ep, series("val_fake_acc"), marker="o", color=FAKE_COLOR, label="fake accuracy")
    axes[2].set(xlabel="epoch", ylim=(0, 1.02), title="Per class")
    axes[2].legend(loc="lower right")
    return fig


def show_images(axes, images: Sequence, titles: Sequence[str] = ()):
    """Images (PIL, HxWxC arrays or CxHxW tensors in [0, 1]) on the given axes."""
    for k, ax in enumerate(axes):
        ax.axis("off")
        if k >= len(images):
            continue
        img = images[k]
        if hasattr(img, "detach"):
            img = img.detach().cpu().numpy()
        arr = np.asarray(img)
        if arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3):
            arr = arr.transpose(1, 2, 0)
        ax.imshow(arr.clip(0, 1) if arr.dtype.kind == "f" else arr)
        if k < len(titles):
            ax.set_title(titles[k], fontsize=8)
    return axes


def save_eval_plots(labels, probs, out_dir: str | os.PathLike, title: str = "", threshold: float = 0.5) -> dict[str, str]:
    """Write roc.png, scores.png and confusion.png to ``out_dir``; return their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, draw in (("roc", lambda ax: plot_roc(ax, labels, probs)),
                       ("scores", lambda ax: plot_score_histograms(ax, labels, probs, threshold=threshold)),
                       ("confusion", lambda ax: plot_confusion(ax, labels, probs, threshold))):
        fig, (ax,) = new_figure()
        draw(ax)
        if title:
            fig.suptitle(title, fontsize=9)
        path = out / f"{name}.png"
        fig.savefig(path, dpi=110)
        paths[name] = str(path)
    return paths
