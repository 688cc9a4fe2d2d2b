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


def roc_curve(labels: np.ndarray | torch.Tensor, scores: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """False- and true-positive rates at every distinct threshold, from (0, 0) to (1, 1)."""
    y, s = _numpy(labels).astype(bool).ravel(), _numpy(scores).astype(np.float64).ravel()
    order = np.argsort(-s, kind="mergesort")
    y, s = y[order], s[order]
    last_of_run = np.r_[s[1:] != s[:-1], True]
    tp = np.cumsum(y)[last_of_run]
    fp = np.cumsum(~y)[last_of_run]
    return np.r_[0.0, fp / max(1, fp[-1])], np.r_[0.0, tp / max(1, tp[-1])]


def evaluate_detector(detector, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """``ad_auroc`` from the raw score and ``score_distance`` from the bounded score, in eval mode."""
    raw, bounded = detector.scores(x, raw=True), detector.scores(x, raw=False)
    return {"ad_auroc": auroc(y, raw), "score_distance": score_distance(y, bounded)}
