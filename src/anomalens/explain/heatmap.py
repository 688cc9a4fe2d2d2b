"""Gradient heatmaps for any differentiable detector: where a small change of the input would
change the anomaly score most (input gradient), and that sensitivity weighted by the input
(gradient x input). They give BCE/HSC/DSVDD runs a heatmap without a decomposable detector."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

METHODS = ("gradient", "gradient_x_input")


@dataclass
class Heatmaps:
    """(B, H, W) maps, non-negative, plus the detector's bounded scores of the inputs."""

    maps: Tensor
    scores: Tensor
    method: str


def gradient_heatmaps(detector, x: Tensor, method: str = "gradient", batch_size: int = 256) -> Heatmaps:
    """Heatmaps of ``detector.score`` for images ``x`` (B, C, H, W), computed in eval mode.

    ``gradient``: |d score / d x| summed over channels. ``gradient_x_input``: |x * d score / d x|
    summed over channels.
    """
    if method not in METHODS:
        raise ValueError(f"unknown heatmap method {method!r}; known: {', '.join(METHODS)}")
    was_training = detector.training
    detector.eval()
    maps, scores = [], []
    try:
        for chunk in x.split(batch_size):
            chunk = chunk.detach().clone().requires_grad_(True)
            score = detector.score(chunk)
            (grad,) = torch.autograd.grad(score.sum(), chunk)
            relevance = grad if method == "gradient" else grad * chunk
            maps.append(relevance.abs().sum(1).detach())
            scores.append(score.detach())
    finally:
        detector.train(was_training)
    return Heatmaps(torch.cat(maps), torch.cat(scores), method)


def detector_heatmaps(detector, x: Tensor, batch_size: int = 64) -> Heatmaps:
    """The detector's own anomaly map when it has one (FCDD, AE-XAD), else its input gradient."""
    was_training = detector.training
    detector.eval()
    try:
        with torch.no_grad():
            first = detector.anomaly_map(x[:1])
        if first is None:
            return gradient_heatmaps(detector, x, "gradient", batch_size)
        with torch.no_grad():
            maps = torch.cat([detector.anomaly_map(chunk) for chunk in x.split(batch_size)])
            scores = torch.cat([detector.score(chunk) for chunk in x.split(batch_size)])
    finally:
        detector.train(was_training)
    return Heatmaps(maps.float(), scores, "anomaly_map")


def explain_heatmaps(detector, x: Tensor, method: str = "heatmap") -> Heatmaps:
    """``heatmap``: the detector's own map (gradient if it has none); or a named gradient method."""
    return detector_heatmaps(detector, x) if method == "heatmap" else gradient_heatmaps(detector, x, method)
