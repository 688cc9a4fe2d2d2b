"""Plots of repaired windows of multivariate series, feature by feature (AR-Pro, Figure 6).

An image repair is judged at a glance in a grid; a window of eight sensors is not: a repair is read
one sensor at a time, as a line over the window's steps. Each panel shows one feature of one window:
the original (blue), the repaired region omega of that feature (shaded red), the true anomalous steps
when known (grey band at the bottom), and one line per repair (unguided red dashed, guided green,
as in the paper). Panels show the truly anomalous features (when known), then those with the most
repaired steps, so an 8- or 50-sensor window shows where the repair acted.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from anomalens.report.plots import plt, save_figure

STYLE = {"unguided": {"color": "tab:red", "ls": "--"}, "guided": {"color": "tab:green", "ls": "-"},
         "plain": {"color": "tab:orange", "ls": ":"}}


def _runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) of every run of True in a 1-D boolean array."""
    edges = np.diff(np.r_[0, flags.astype(np.int8), 0])
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)))


def chosen_features(omega: torch.Tensor, change: torch.Tensor, k: int, truth: torch.Tensor | None = None) -> list[int]:
    """The ``k`` features of a window (F, T) to show: the truly anomalous ones first (when known), then
    those with the most repaired steps, ties broken by how much the repair changed them."""
    true = truth.sum(-1).float() if truth is not None else torch.zeros(len(omega))
    count, moved = omega.sum(-1).float(), change.abs().sum(-1).float()
    order = sorted(range(len(count)), key=lambda f: (-float(true[f]), -float(count[f]), -float(moved[f])))
    return order[:k]


def plot_repairs(path: str | Path, inputs: torch.Tensor, omega: torch.Tensor, repairs: Mapping[str, torch.Tensor],
                 feature_names: Sequence[str], truth: torch.Tensor | None = None,
                 to_units: Callable[[torch.Tensor, int], torch.Tensor] | None = None, shown: int = 4,
                 features: int = 3, titles: Sequence[str] | None = None) -> Path:
    """One column per window (the first ``shown``), one row per chosen feature. ``inputs`` and every
    repair are windows (N, 1, F, T), ``omega`` and ``truth`` (N, F, T); ``to_units(x (F, T), i)`` maps
    window i to sensor units for the y axes (default: the normalised values)."""
    n = min(shown, len(inputs))
    rows = min(features, inputs.shape[2])
    fig, axes = plt.subplots(rows, n, figsize=(3.6 * n, 1.9 * rows), squeeze=False, sharex=True)
    steps = np.arange(inputs.shape[-1])
    last = "guided" if "guided" in repairs else next(iter(repairs), None)
    for i in range(n):
        convert = (lambda x, i=i: to_units(x, i)) if to_units is not None else (lambda x: x)
        original = convert(inputs[i, 0]).numpy()
        lines = {name: convert(r[i, 0]).numpy() for name, r in repairs.items()}
        change = (repairs[last][i, 0] - inputs[i, 0]) if last else torch.zeros_like(inputs[i, 0])
        for row, f in enumerate(chosen_features(omega[i], change, rows, truth[i] if truth is not None else None)):
            ax = axes[row, i]
            for a, b in _runs(omega[i, f].numpy() > 0):
                ax.axvspan(a - 0.5, b - 0.5, color="tab:red", alpha=0.15, lw=0)
            if truth is not None:
                for a, b in _runs(truth[i, f].numpy() > 0):
                    ax.axvspan(a - 0.5, b - 0.5, ymax=0.06, color="0.3", alpha=0.8, lw=0)
            ax.plot(steps, original[f], color="tab:blue", lw=1.6, label="original")
            for name, values in lines.items():
                ax.plot(steps, values[f], lw=1.1, label=name, **STYLE.get(name, {}))
            title = feature_names[f] if f < len(feature_names) else f"feature {f}"
            ax.set_title(f"{titles[i] + ': ' if titles else ''}{title}", fontsize=8)
            ax.tick_params(labelsize=7)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    handles.append(plt.Rectangle((0, 0), 1, 1, color="tab:red", alpha=0.15))
    labels.append("omega (repaired)")
    if truth is not None:
        handles.append(plt.Rectangle((0, 0), 1, 1, color="0.3"))
        labels.append("true anomaly")
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, frameon=False,
               bbox_to_anchor=(0.5, -0.02))
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return save_figure(fig, path)


def plot_windows(path: str | Path, windows: torch.Tensor, feature_names: Sequence[str], title: str = "",
                 features: int = 4) -> Path:
    """The first ``features`` features of a few windows (N, 1, F, T) overlaid per feature: how samples of
    the diffusion model (or any windows) look."""
    rows = min(features, windows.shape[2])
    fig, axes = plt.subplots(rows, 1, figsize=(7, 1.5 * rows), squeeze=False, sharex=True)
    for f in range(rows):
        ax = axes[f, 0]
        for w in windows[:, 0, f]:
            ax.plot(w.numpy(), lw=0.9, alpha=0.8)
        ax.set_ylabel(feature_names[f] if f < len(feature_names) else f"feature {f}", fontsize=7)
        ax.tick_params(labelsize=7)
    axes[0, 0].set_title(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)
