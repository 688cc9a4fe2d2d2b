"""Image-level detection metrics: AuROC (rank statistic, ties counted half) and score distance."""

from __future__ import annotations

import numpy as np
import torch


def _numpy(x: np.ndarray | torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def auroc(labels: np.ndarray | torch.Tensor, scores: np.ndarray | torch.Tensor) -> float:
    """Area under the ROC curve, labels 1 = anomaly; equals P(score(anomaly) > score(normal)).

    Computed from average ranks (Mann-Whitney U), so ties count one half, as in scikit-learn.
    """
    y, s = _numpy(labels).astype(bool).ravel(), _numpy(scores).astype(np.float64).ravel()
    if len(y) != len(s):
        raise ValueError(f"{len(y)} labels but {len(s)} scores")
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AuROC needs both normal (0) and anomalous (1) samples")
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or inf")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), np.float64)
    sorted_s = s[order]
    # average rank of each run of equal scores
    starts = np.flatnonzero(np.r_[True, sorted_s[1:] != sorted_s[:-1]])
    ends = np.r_[starts[1:], len(s)]
    avg = (starts + ends + 1) / 2.0
    ranks[order] = np.repeat(avg, ends - starts)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def score_distance(labels: np.ndarray | torch.Tensor, scores: np.ndarray | torch.Tensor) -> float:
    """|mean score of anomalies - mean score of normals| (the papers' column for bounded scores)."""
    y, s = _numpy(labels).astype(bool).ravel(), _numpy(scores).astype(np.float64).ravel()
    return float(abs(s[y].mean() - s[~y].mean()))
