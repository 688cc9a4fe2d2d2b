"""Anomaly-map operations, pixel metrics against hand-computed values, gradient heatmaps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from anomalens import maps
from anomalens.detectors.oe import OEDetector
from anomalens.explain.heatmap import HeatmapConfig, HeatmapExplainer
from anomalens.metrics.pixel import binary_scores, pixel_auc, threshold_metrics, win_rate


def test_gaussian_filter_preserves_mass_and_smooths() -> None:
    x = torch.zeros(2, 20, 20)
    x[0, 10, 10] = 1.0
    y = maps.gaussian_filter(x, 3)
    assert y.shape == x.shape and y[0].sum() == pytest.approx(1.0, abs=1e-5)
    assert y[0, 10, 10] < 1.0 and y[0, 10, 12] > 0 and y[1].abs().sum() == 0
    assert torch.equal(maps.gaussian_filter(x, 0), x)


@pytest.mark.parametrize("height, width", [(6, 4), (10, 10), (3, 12)])
def test_auto_kernel_size_from_blob(height: int, width: int) -> None:
    e = torch.zeros(48, 48)
    e[5:5 + height, 20:20 + width] = 1.0
    assert maps.auto_kernel_size(e) == max(1, round(max(height, width) / 2))


def test_binarize_mean_plus_std() -> None:
    m = torch.tensor([[0.0, 0.0, 0.0, 4.0]])  # mean 1, std sqrt(3)
    assert maps.binarize(m, 1.0).tolist() == [[0.0, 0.0, 0.0, 1.0]]
    assert maps.binarize(m, 2.0).sum() == 0  # 4 < 1 + 2 * 1.732


def test_normalise_and_receptive_upsample() -> None:
    m = torch.tensor([[[1.0, 3.0], [2.0, 5.0]]])
    assert maps.normalise(m).tolist() == [[[0.0, 0.5], [0.25, 1.0]]]
    low = torch.zeros(1, 4, 4)
    low[0, 1, 2] = 1.0
    up = maps.receptive_upsample(low, (28, 28), receptive_field=9)
    assert up.shape == (1, 28, 28)
    row, col = divmod(int(up[0].argmax()), 28)
    assert (row, col) == (10, 17)  # the centre of the 7x7 patch the feature covers


def test_pixel_metrics_by_hand() -> None:
    masks = torch.zeros(2, 2, 2)
    masks[0, 0, 0] = 1
    heat = torch.tensor([[[0.9, 0.1], [0.8, 0.2]], [[0.3, 0.3], [0.3, 0.3]]])
    # positives: 0.9; negatives: 0.1 0.8 0.2 0.3 0.3 0.3 0.3 -> the positive beats all 7
    assert pixel_auc(masks, heat) == pytest.approx(1.0)
    binary = torch.zeros(2, 2, 2)
    binary[0, 0, 0] = binary[0, 1, 0] = 1  # one TP, one FP
    scores = binary_scores(masks, binary)
    assert scores["f1"].tolist() == pytest.approx([2 / 3]) and scores["iou"].tolist() == pytest.approx([0.5])
    table = threshold_metrics(masks, heat, factors=(1.0,))
    assert set(table["a=1"]) == {"pixel_f1", "pixel_iou"}
    assert win_rate(np.array([0.5, 0.2, 0.3]), np.array([0.4, 0.2, 0.9])) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="must both be"):
        pixel_auc(masks, heat[:1])


@pytest.mark.parametrize("method", ["gradient", "gradient_x_input"])
def test_gradient_heatmaps_shapes(method: str) -> None:
    torch.manual_seed(0)
    detector = OEDetector("hsc", (3, 28, 28)).train()
    x = torch.rand(5, 3, 28, 28)
    explainer = HeatmapExplainer(HeatmapConfig(method, batch_size=2)).fit(detector)
    result = explainer.explain(x)
    assert result.maps.shape == (5, 28, 28) and bool((result.maps >= 0).all()) and result.maps.sum() > 0
    assert result.method == method and result.outputs is None
    assert torch.allclose(result.score_before, detector.eval().score(x), atol=1e-6)
    detector.train()
    explainer.explain(x[:1])
    assert detector.training
    with pytest.raises(ValueError, match="unknown heatmap method"):
        HeatmapConfig("lime")
