"""Heatmap benchmark: AE-XAD vs its ablations (AE-XAD paper, Table 1) and FCDD, on defect datasets.

Usage: python benchmarks/bench_heatmaps.py [--datasets synthetic_defects/stripes,magnetic_tile]
                                           [--size 64] [--epochs 30] [--seeds 0]

Methods: ``ae`` (plain autoencoder), ``ae_filter`` (plus the automatic gaussian filter),
``aexad_nofilter``, ``aexad``, and ``fcdd`` (fully convolutional, trained with the same labelled
anomalies plus confetti noise). Three annotated anomalies per defect type go into training, as in
the paper (sec. 5.1). Reports pixel AUC, F1 and IoU of the maps binarised at mean + std, image AuROC,
training time, and the per-image F1 win rate of AE-XAD over each other method. Writes
benchmarks/results/heatmaps.json (resumable) and heatmaps.md.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from common import RESULTS, machine

from anomalens.data import catalog
from anomalens.data.scenarios import defect_scenario, with_generated_oe
from anomalens.detectors.aexad import AEXAD
from anomalens.detectors.oe import OEDetector
from anomalens.detectors.training import TrainConfig
from anomalens.emissions import EmissionsMeter, tradeoff
from anomalens.explain.heatmap import HeatmapConfig, HeatmapExplainer
from anomalens.maps import binarize
from anomalens.metrics.detection import auroc
from anomalens.metrics.pixel import binary_scores, pixel_auc, win_rate

METHODS = ("ae", "ae_filter", "aexad_nofilter", "aexad", "fcdd")


def make(method: str, shape: tuple[int, int, int]):
    if method == "fcdd":
        return OEDetector("fcdd", shape, "fcn")
    return AEXAD(shape, plain=method.startswith("ae_") or method == "ae", smooth=method in ("ae_filter", "aexad"))


def run(dataset: str, method: str, size: int, epochs: int, seed: int) -> dict:
    data = defect_scenario(catalog.load_defects(dataset), per_type=3, seed=seed, size=size)
    torch.manual_seed(seed)
    detector = make(method, data.image_shape)
    cfg = TrainConfig(epochs=epochs, lr=1e-3, weight_decay=1e-4, batch_size=32, seed=seed, progress=False)
    if method == "fcdd":
        data = with_generated_oe(data, "confetti", len(data.train_normal), seed)
    started = time.perf_counter()
    with EmissionsMeter() as meter:  # training and evaluation, as in the paper's sec. 5.4
        detector.fit(data, cfg)
        seconds = time.perf_counter() - started
        heat = HeatmapExplainer(HeatmapConfig("heatmap")).fit(detector).explain(data.test_x)
    per_image = binary_scores(data.test_masks, binarize(heat.maps))
    result = {"pixel_auc": pixel_auc(data.test_masks, heat.maps), "pixel_f1": float(per_image["f1"].mean()),
              "pixel_iou": float(per_image["iou"].mean()), "image_auroc": auroc(data.test_y, heat.score_before),
              "train_seconds": seconds, "f1_per_image": per_image["f1"].tolist(), **meter.result()}
    for m in ("pixel_auc", "pixel_f1", "pixel_iou"):
        result[f"tradeoff_{m}"] = tradeoff(result["co2_g"], result[m])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="synthetic_defects/stripes,synthetic_defects/grid,"
                                              "synthetic_defects/noise,magnetic_tile")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seeds", default="0")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "heatmaps.json"
    results = json.loads(path.read_text()) if path.exists() else []
    done = {(r["dataset"], r["method"], r["seed"]) for r in results}
    todo = [(d, m, int(s)) for d in args.datasets.split(",") for m in args.methods.split(",")
            for s in args.seeds.split(",") if (d, m, int(s)) not in done]
    print(f"heatmaps: {len(todo)} runs on {machine()}", flush=True)
    for dataset, method, seed in todo:
        result = run(dataset, method, args.size, args.epochs, seed)
        results.append({"dataset": dataset, "method": method, "seed": seed, **result})
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(results))
        tmp.replace(path)
        print(f"{dataset} {method}: pixel AUC {result['pixel_auc']:.3f} F1 {result['pixel_f1']:.3f} "
              f"IoU {result['pixel_iou']:.3f} image AuROC {result['image_auroc']:.3f} "
              f"({result['train_seconds']:.0f}s)", flush=True)
    source = results[-1]["energy_source"] if results else ""
    lines = ["# Heatmaps: AE-XAD, ablations and FCDD\n", f"Machine: {machine()}. Images {args.size}px, "
             f"{args.epochs} epochs, 3 labelled anomalies per defect type. F1/IoU at mean + std. "
             f"CO2 of training + evaluation, {source}.\n",
             "| dataset | method | pixel AUC | F1 | IoU | image AuROC | AE-XAD F1 win rate | train s | CO2 g | "
             "T(F1) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for dataset in args.datasets.split(","):
        rows = {r["method"]: r for r in results if r["dataset"] == dataset and r["seed"] == 0}
        for method, r in rows.items():
            wins = (f"{win_rate(np.array(rows['aexad']['f1_per_image']), np.array(r['f1_per_image'])):.2f}"
                    if "aexad" in rows and method != "aexad" else "")
            lines.append(f"| {dataset} | {method} | {r['pixel_auc']:.3f} | {r['pixel_f1']:.3f} | {r['pixel_iou']:.3f} "
                         f"| {r['image_auroc']:.3f} | {wins} | {r['train_seconds']:.0f} | {r['co2_g']:.3f} | "
                         f"{r['tradeoff_pixel_f1']:.3f} |")
    (RESULTS / "heatmaps.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
