"""Plots written by runs and benchmarks (matplotlib, headless Agg backend, atomic PNG writes)."""

from __future__ import annotations

import io
import math
import numbers
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from anomalens.atomic import atomic_write_bytes  # noqa: E402


def save_figure(fig, path: str | Path) -> Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return atomic_write_bytes(path, buffer.getvalue())


def roc_plot(path: str | Path, fpr: np.ndarray, tpr: np.ndarray, auc: float, title: str = "") -> Path:
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.plot(fpr, tpr, lw=2, label=f"AuROC {auc:.3f}")
    ax.plot([0, 1], [0, 1], "--", color="gray", lw=1, label="chance")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=title, xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right")
    return save_figure(fig, path)


def score_histogram(path: str | Path, scores: np.ndarray, labels: np.ndarray, title: str = "",
                    xlabel: str = "anomaly score") -> Path:
    """Overlaid histograms of normal and anomalous test scores: shows calibration, not only ranking."""
    scores, labels = np.asarray(scores, np.float64), np.asarray(labels).astype(bool)
    fig, ax = plt.subplots(figsize=(5, 3.2))
    bins = np.linspace(scores.min(), scores.max() + 1e-12, 50)
    ax.hist(scores[~labels], bins=bins, alpha=0.6, density=True, label=f"normal ({(~labels).sum()})")
    ax.hist(scores[labels], bins=bins, alpha=0.6, density=True, label=f"anomalous ({labels.sum()})")
    ax.set(xlabel=xlabel, ylabel="density", title=title)
    ax.legend()
    return save_figure(fig, path)


def line_plot(path: str | Path, x: Sequence[float], series: dict[str, Sequence[float]], xlabel: str,
              ylabel: str, title: str = "", log_x: bool = False, errors: dict[str, Sequence[float]] | None = None,
              ticks: Sequence[str] | None = None) -> Path:
    """One line per series against ``x``; ``ticks`` names the x positions (a categorical axis)."""
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for name, ys in series.items():
        err = (errors or {}).get(name)
        ax.errorbar(x, ys, yerr=err, marker="o", ms=4, capsize=2, label=name)
    if log_x:
        ax.set_xscale("log", base=2)
    if ticks is not None:
        ax.set_xticks(list(x), list(ticks))
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    return save_figure(fig, path)


def loss_curves(path: str | Path, history: Sequence[Mapping[str, float]], x_key: str = "step",
                title: str = "", skip: Sequence[str] = ("epoch", "seconds", "lr")) -> Path:
    """One line per logged number against ``x_key``, to see at a glance whether training converged or diverged.

    Losses are often logged at different intervals, so each line is drawn from the entries that have it;
    non-numeric and non-finite values are skipped. The y axis is logarithmic when every value is positive,
    because GAN and reconstruction losses span decades. Entries without ``x_key`` use their index.
    """
    series: dict[str, tuple[list[float], list[float]]] = {}
    for index, entry in enumerate(history):
        x = entry.get(x_key, index)
        x = float(x) if _is_finite_number(x) else float(index)
        for key, value in entry.items():
            if key != x_key and key not in skip and _is_finite_number(value):
                xs, ys = series.setdefault(key, ([], []))
                xs.append(x)
                ys.append(float(value))
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for key, (xs, ys) in series.items():
        ax.plot(xs, ys, lw=1.5, marker="o" if len(xs) == 1 else None, ms=3, label=key)
    if series:
        if all(y > 0 for _, ys in series.values() for y in ys):
            ax.set_yscale("log")
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no numeric values logged", ha="center", va="center", transform=ax.transAxes)
    ax.set(xlabel=x_key, ylabel="value", title=title)
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def _is_finite_number(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
