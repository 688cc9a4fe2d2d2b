"""``anomalens demo``: the whole pipeline that exists today, offline, on the built-in glyphs.

It builds the Colored-MNIST analogue of the counterfactual paper (coloured digit glyphs, normal =
"red or one", coloured letters as Outlier Exposure), writes a run folder with a sample grid,
measures a non-learned baseline (pixel-space nearest-neighbour distance) and trains a small HSC
detector with Outlier Exposure for a few epochs. Explainers join this pipeline as they land.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from anomalens.config import to_dict
from anomalens.data import scenarios
from anomalens.data.addata import ADData
from anomalens.detectors.oe import OEDetector
from anomalens.detectors.training import TrainConfig
from anomalens.metrics.detection import auroc, evaluate_detector
from anomalens.report.grids import save_grid
from anomalens.runs import Run


@dataclass
class DemoConfig:
    dataset: str = "colored_glyphs"
    normal: str = "red or one"
    oe: str = "colored_glyph_letters"
    oe_size: int = 1024
    knn_k: int = 1
    detector: str = "hsc"
    epochs: int = 3
    seed: int = 0
    shown_per_row: int = 12


def pixel_knn_scores(train: torch.Tensor, test: torch.Tensor, k: int = 1, batch: int = 1024) -> torch.Tensor:
    """Mean Euclidean distance of each test image to its ``k`` nearest training images, in pixel space.

    The simplest detector there is: it needs no training, so the demo can report an honest AuROC
    before any learned detector exists, and later detectors have a floor to beat.
    """
    if k < 1 or k > len(train):
        raise ValueError(f"k must be in 1..{len(train)}, got {k}")
    reference = train.flatten(1)
    out = []
    for chunk in test.flatten(1).split(batch):
        out.append(torch.cdist(chunk, reference).topk(k, dim=1, largest=False).values.mean(1))
    return torch.cat(out)


def _samples(data: ADData, n: int) -> tuple[list[torch.Tensor], list[str]]:
    normal, anomalous = data.test_x[data.test_y == 0][:n], data.test_x[data.test_y == 1][:n]
    rows, captions = [data.train_normal[:n], normal, anomalous], ["train normal", "test normal", "test anomaly"]
    if data.train_oe is not None:
        rows.append(data.train_oe[:n])
        captions.append("outlier exposure")
    return rows, captions


def run_demo(out: str | Path = "runs/demo", config: DemoConfig | None = None,
             log=print) -> dict[str, Any]:
    """Run the demo into ``out`` and return its metrics (also written to ``out/metrics.json``)."""
    config = config or DemoConfig()
    run = Run.create(out, to_dict(config), config.seed, command="anomalens demo")
    started = time.perf_counter()
    log(f"[1/4] building {config.dataset}: normal = {config.normal!r}, OE = {config.oe} ({config.oe_size})")
    data = scenarios.build(config.dataset, config.normal, oe=config.oe, oe_size=config.oe_size,
                           seed=config.seed)
    summary = data.summary()
    build_seconds = time.perf_counter() - started
    log(f"      {summary['train_normal']} normal training images, {summary['train_oe']} OE images, "
        f"test: {summary['test_normal']} normal / {summary['test_anomalies']} anomalous "
        f"({build_seconds:.1f} s)")

    log("[2/4] writing a sample grid")
    rows, captions = _samples(data, config.shown_per_row)
    grid = save_grid(run.path / "images" / "samples.png", rows, captions)

    log(f"[3/4] scoring the test set with the pixel {config.knn_k}-NN baseline (no training)")
    t0 = time.perf_counter()
    scores = pixel_knn_scores(data.train_normal, data.test_x, config.knn_k)
    baseline = {"ad_auroc": auroc(data.test_y, scores), "seconds": time.perf_counter() - t0}

    log(f"[4/4] training a {config.detector.upper()} detector with Outlier Exposure ({config.epochs} epochs)")
    detector = OEDetector(config.detector, data.image_shape)
    t0 = time.perf_counter()
    detector.fit(data, TrainConfig(epochs=config.epochs, lr=2e-3, seed=config.seed,
                                   checkpoint_dir=str(run.path / "checkpoints")))
    learned = {**evaluate_detector(detector, data.test_x, data.test_y), "train_seconds": time.perf_counter() - t0}
    detector.save(run.path / "detector.safetensors")
    metrics = {"data": summary, "pixel_knn": baseline, config.detector: learned, "data_seconds": build_seconds}
    run.write_metrics(metrics)
    run.finish()
    log(f"\nDemo finished in {time.perf_counter() - started:.1f} s. Run folder: {run.path}")
    log(f"  data           {data.name}")
    log(f"  baseline       pixel {config.knn_k}-NN distance, AuROC {baseline['ad_auroc']:.3f} "
        "(a floor for learned detectors)")
    log(f"  detector       {config.detector.upper()}, AuROC {learned['ad_auroc']:.3f}, score distance "
        f"{learned['score_distance']:.2f}, trained in {learned['train_seconds']:.0f} s "
        f"({run.path / 'detector.safetensors'})")
    log(f"  samples        {grid}")
    return metrics
