"""Pixel-level metrics of heatmaps against ground-truth masks (AE-XAD paper, sec. 5).

``pixel_auc`` ranks all pixels of all images at once; F1 and IoU binarise each map at its own
mean + a * std (a = 1, 1.5, ..., 3.5) and average over the images that have a defect; the win
rate compares two methods image by image (the paper's Table 3).
"""

from __future__ import annotations

import numpy as np
from torch import Tensor

from anomalens.maps import binarize
from anomalens.metrics.detection import auroc

THRESHOLD_FACTORS = (1.0, 1.5, 2.0, 2.5, 3.0, 3.5)


def _check(masks: Tensor, maps: Tensor) -> tuple[Tensor, Tensor]:
    if masks.shape != maps.shape or masks.dim() != 3:
        raise ValueError(f"masks {tuple(masks.shape)} and maps {tuple(maps.shape)} must both be (B, H, W)")
    return masks.float(), maps.float()


def pixel_auc(masks: Tensor, maps: Tensor) -> float:
    """AuROC of every pixel's map value against its mask label, over all images together."""
    masks, maps = _check(masks, maps)
    return auroc(masks.flatten().numpy() > 0.5, maps.flatten().numpy())


def binary_scores(masks: Tensor, binary: Tensor) -> dict[str, np.ndarray]:
    """Per-image F1 and IoU of binary maps (images without a defect are left out: both are undefined)."""
    masks, binary = _check(masks, binary)
    keep = masks.flatten(1).sum(1) > 0
    m, b = masks[keep].flatten(1) > 0.5, binary[keep].flatten(1) > 0.5
    tp = (m & b).sum(1).float()
    fp = (~m & b).sum(1).float()
    fn = (m & ~b).sum(1).float()
    f1 = 2 * tp / (2 * tp + fp + fn).clamp_min(1)
    iou = tp / (tp + fp + fn).clamp_min(1)
    return {"f1": f1.numpy(), "iou": iou.numpy()}


def threshold_metrics(masks: Tensor, maps: Tensor, factors=THRESHOLD_FACTORS) -> dict[str, dict[str, float]]:
    """Mean F1 and IoU over the defective images for each threshold mean + a * std."""
    out = {}
    for a in factors:
        scores = binary_scores(masks, binarize(maps.float(), a))
        out[f"a={a:g}"] = {"pixel_f1": float(scores["f1"].mean()), "pixel_iou": float(scores["iou"].mean())}
    return out


def win_rate(first: np.ndarray, second: np.ndarray) -> float:
    """Share of images on which the first method's per-image metric beats the second's (ties: half)."""
    first, second = np.asarray(first, np.float64), np.asarray(second, np.float64)
    if first.shape != second.shape or first.size == 0:
        raise ValueError(f"need two equally long, non-empty per-image metrics, got {first.shape} and {second.shape}")
    return float(((first > second) + 0.5 * (first == second)).mean())
