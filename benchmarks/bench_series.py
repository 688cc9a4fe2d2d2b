"""AR-Pro on multivariate time series: detection, guided vs unguided repairs (paper, Tables 2 and 3).

Usage: python benchmarks/bench_series.py [--datasets synthetic_series,skab/valve1,skab/valve2,skab/other]
           [--detectors series_ae,series_gpt2] [--epochs 20] [--diffusion-steps 1500] [--anomalies 48]
           [--strength 0.5] [--guidance 3] [--sample-steps 50] [--tag NAME]

Per dataset (windows of 100 steps, stride 10, z-scores per recording; SKAB: the anomaly-free recording
plus the first half of each labelled file's normal prefix train, the rest tests): one diffusion model
of the normal training windows (``cpu`` series profile) and each detector are trained and cached in
runs/bench_series/ (resumable). ``--anomalies`` anomalous test windows, spread evenly over the test
set, are repaired three ways with the same seed and schedule: ``guided`` (AR-Pro), ``unguided`` (the
same in-filling without guidance) and ``plain`` (the whole window re-generated without guidance: the
paper's off-the-shelf baseline). Reports, per dataset and per fault type: the detector's AuROC, mean
and std of M_s, M_d, M_omega, M_omega_bar, P1-P4 rates, TNR against a 95% split-conformal threshold
on the normal test windows, seconds per repaired window, and (synthetic series) the IoU of omega with
the true anomalous features and steps. Writes benchmarks/results/series.json (rerun skips finished
dataset/detector pairs), series.md and series_<detector>_<dataset>.png (Figure 6 style: 4 windows).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from common import RESULTS, machine

from anomalens.data.series_sources import build_series
from anomalens.data.timeseries import SeriesData
from anomalens.detectors.base import Detector
from anomalens.detectors.decomposition import FeatureThresholds
from anomalens.detectors.registry import create
from anomalens.detectors.training import TrainConfig
from anomalens.explain.diffusion import train_diffusion
from anomalens.explain.repair import RepairConfig, RepairExplainer, schedule_note
from anomalens.explain.series_diffusion import SeriesDiffusionConfig, SeriesDiffusionModel
from anomalens.metrics import properties as pm
from anomalens.metrics.detection import auroc
from anomalens.report.series_plots import plot_repairs

CACHE = Path("runs/bench_series")
DATASETS = "synthetic_series,skab/valve1,skab/valve2,skab/other"
MODES = ("plain", "unguided", "guided")


def trained_diffusion(folder: Path, data: SeriesData, steps: int, seed: int) -> tuple[SeriesDiffusionModel, float]:
    path = folder / "diffusion.safetensors"
    if path.is_file():
        model = SeriesDiffusionModel.load(path)
        if model.step >= steps:
            return model, float(json.loads((folder / "diffusion.json").read_text())["seconds"])
    cfg = SeriesDiffusionConfig(image_shape=data.image_shape, steps=steps, batch_size=32, seed=seed, log_every=100)
    model = SeriesDiffusionModel(cfg)
    started = time.perf_counter()
    train_diffusion(model, data.train_normal, cfg, folder / "diffusion_checkpoints")
    seconds = time.perf_counter() - started
    model.save(path)
    (folder / "diffusion.json").write_text(json.dumps({"seconds": seconds, "history": model.history}))
    return model, seconds


def trained_detector(name: str, data: SeriesData, folder: Path, epochs: int, seed: int) -> tuple[Detector, float]:
    path = folder / f"{name}.safetensors"
    if path.is_file():
        return Detector.load(path).eval(), float(json.loads((folder / f"{name}.json").read_text())["seconds"])
    torch.manual_seed(seed)
    detector = create(name, data.image_shape)
    started = time.perf_counter()
    detector.fit(data, TrainConfig(epochs=epochs, lr=1e-3, weight_decay=1e-4, batch_size=32, seed=seed,
                                   checkpoint_dir=str(folder / f"{name}_checkpoints")))
    seconds = time.perf_counter() - started
    detector.save(path)
    (folder / f"{name}.json").write_text(json.dumps({"seconds": seconds}))
    return detector.eval(), seconds


def _summaries(detector, thresholds, x_bad, outputs, threshold, select=None) -> dict:
    out = {}
    for mode, x_fix in outputs.items():
        keep = slice(None) if select is None else select
        m = pm.property_metrics(detector, thresholds, x_bad[keep], x_fix[keep])
        out[mode] = {**pm.summarize(m), "tnr": pm.true_negative_rate(detector.scores(x_fix[keep]), threshold),
                     "n": int(len(m["M_s"]))}
    return out


def omega_iou(omega: torch.Tensor, truth: torch.Tensor) -> float:
    omega, truth = omega.bool(), truth.bool()
    inter = (omega & truth).flatten(1).sum(1).float()
    return float((inter / (omega | truth).flatten(1).sum(1).float().clamp_min(1)).mean())


def run(dataset: str, name: str, args: argparse.Namespace, data: SeriesData, diffusion, diffusion_seconds) -> dict:
    folder = CACHE / dataset.replace("/", "_")
    detector, train_seconds = trained_detector(name, data, folder, args.epochs, args.seed)
    raw = detector.scores(data.test_x)
    faults = data.test_attrs["fault"]
    auc = {"all": auroc(data.test_y, raw)}
    for i, fault in enumerate(data.fault_names):
        kept = (faults == i) | (faults == -1)
        auc[fault] = auroc(data.test_y[kept], raw[kept])
    cfg = RepairConfig(strength=args.strength, steps=args.sample_steps, guidance=args.guidance, seed=args.seed,
                       batch_size=16)
    thresholds = FeatureThresholds.fit(detector, data.train_normal, cfg.quantile)
    explainer = RepairExplainer(cfg, diffusion, thresholds).fit(detector, data)
    anomalous = (data.test_y == 1).nonzero().flatten()
    anomalous = anomalous[torch.linspace(0, len(anomalous) - 1, min(args.anomalies, len(anomalous))).round().long()]
    x_bad = data.test_x[anomalous]
    repairs = {"plain": explainer.explain(x_bad, guidance=0.0, infill=False),
               "unguided": explainer.explain(x_bad, guidance=0.0), "guided": explainer.explain(x_bad)}
    threshold = pm.conformal_threshold(raw[data.test_y == 0])
    outputs = {mode: r.outputs[:, 0] for mode, r in repairs.items()}
    result = {"dataset": dataset, "detector": name, "tag": args.tag, "auroc": auc, "repaired": len(x_bad),
              "conformal_threshold": threshold, "tnr_input": pm.true_negative_rate(raw[anomalous], threshold),
              "schedule": schedule_note(cfg, len(diffusion.alphas_cumprod)), "repair": asdict(cfg),
              "detector_seconds": train_seconds, "diffusion_seconds": diffusion_seconds,
              "diffusion_steps": diffusion.step, "diffusion_loss": diffusion.history[-1]["loss"],
              "overall": _summaries(detector, thresholds, x_bad, outputs, threshold),
              "seconds_per_window": {m: float(r.extras["seconds_per_image"]) for m, r in repairs.items()},
              "per_fault": {}}
    window_faults = faults[anomalous]
    for i, fault in enumerate(data.fault_names):
        select = (window_faults == i).nonzero().flatten()
        if len(select):
            result["per_fault"][fault] = _summaries(detector, thresholds, x_bad, outputs, threshold, select)
    if data.test_masks is not None:
        result["omega_iou"] = omega_iou(repairs["guided"].extras["omega"], data.test_masks[anomalous])
    picked = torch.linspace(0, len(x_bad) - 1, 4).round().long()
    chosen = anomalous[picked]
    recording = data.test_attrs["recording"][chosen]
    titles = [f"{data.fault_names[int(data.test_attrs['fault'][i])]} @ {int(data.test_attrs['start'][i])}"
              for i in chosen]
    stem = f"series_{name}_{dataset.replace('/', '_')}{f'_{args.tag}' if args.tag else ''}"
    plot_repairs(RESULTS / f"{stem}.png", x_bad[picked], repairs["guided"].extras["omega"][picked],
                 {m: outputs[m][picked] for m in ("unguided", "guided")}, data.feature_names,
                 data.test_masks[chosen] if data.test_masks is not None else None,
                 lambda x, i: data.denormalise(x, recording[i]), titles=titles)
    return result


def _cell(summary: dict, metric: str) -> str:
    return f"{summary[f'{metric}_mean']:.3g} ± {summary[f'{metric}_std']:.2g}"


def write_table(results: list[dict]) -> str:
    lines = [f"# AR-Pro on time series ({machine()})", "",
             "Table 2 layout: unguided (in-filling, no guidance) / guided means ± std over the repaired windows.", "",
             "| detector | dataset | AuROC | M_s | M_d | M_omega | M_omega_bar | P1-P4 guided | TNR plain / unguided / "
             "guided | s/window unguided / guided |", "|---" * 10 + "|"]
    for r in results:
        o = r["overall"]
        cells = [f"{_cell(o['unguided'], m)} / {_cell(o['guided'], m)}" for m in pm.METRICS]
        rates = "/".join(f"{o['guided'][f'{p}_rate']:.2f}" for p in pm.PROPERTIES)
        tnr = " / ".join(f"{o[m]['tnr']:.2f}" for m in MODES)
        sec = f"{r['seconds_per_window']['unguided']:.3f} / {r['seconds_per_window']['guided']:.3f}"
        lines.append(f"| {r['detector']} | {r['dataset']} | {r['auroc']['all']:.3f} | " + " | ".join(cells)
                     + f" | {rates} | {tnr} | {sec} |")
    lines += ["", "Delta: median over datasets of the guided improvement (%), per detector and baseline:", ""]
    for detector in sorted({r["detector"] for r in results}):
        rs = [r for r in results if r["detector"] == detector]
        for baseline in ("unguided", "plain"):
            deltas = {m: pm.median_improvement([r["overall"][baseline][f"{m}_mean"] for r in rs],
                                               [r["overall"]["guided"][f"{m}_mean"] for r in rs])
                      for m in (*pm.METRICS, "s_omega_fix")}
            lines.append(f"- {detector} over {baseline} ({len(rs)} datasets): "
                         + ", ".join(f"{m} {v:+.1f}%" for m, v in deltas.items()))
    lines += ["", "Per fault type (guided; unguided in brackets):", "",
              "| detector | dataset | fault | windows | AuROC | M_s | M_omega | M_omega_bar | TNR |", "|---" * 9 + "|"]
    for r in results:
        for fault, s in r["per_fault"].items():
            u, g = s["unguided"], s["guided"]
            lines.append(f"| {r['detector']} | {r['dataset']} | {fault} | {g['n']} | {r['auroc'][fault]:.3f} | "
                         + " | ".join(f"{g[f'{m}_mean']:.3g} ({u[f'{m}_mean']:.3g})"
                                      for m in ("M_s", "M_omega", "M_omega_bar"))
                         + f" | {g['tnr']:.2f} ({u['tnr']:.2f}) |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default=DATASETS)
    parser.add_argument("--detectors", default="series_ae,series_gpt2")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--diffusion-steps", type=int, default=1500)
    parser.add_argument("--anomalies", type=int, default=48)
    parser.add_argument("--strength", type=float, default=0.5)
    parser.add_argument("--guidance", type=float, default=RepairConfig.guidance)
    parser.add_argument("--sample-steps", type=int)
    parser.add_argument("--tag", default="")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "series.json"
    results = json.loads(path.read_text()) if path.exists() else []
    for dataset in args.datasets.split(","):
        todo = [d for d in args.detectors.split(",")
                if not any((r["dataset"], r["detector"], r["tag"]) == (dataset, d, args.tag) for r in results)]
        if not todo:
            print(f"{dataset}: done, skipped")
            continue
        data = build_series(dataset, seed=args.seed)
        print(f"== {dataset}: {data.summary()}", flush=True)
        diffusion, seconds = trained_diffusion(CACHE / dataset.replace("/", "_"), data, args.diffusion_steps, args.seed)
        for name in todo:
            result = run(dataset, name, args, data, diffusion, seconds)
            results.append(result)
            path.write_text(json.dumps(results, indent=1))
            o = result["overall"]
            print(f"{dataset} {name}: AuROC {result['auroc']['all']:.3f}; "
                  + ", ".join(f"{m} {o['unguided'][f'{m}_mean']:.3g} -> {o['guided'][f'{m}_mean']:.3g}"
                              for m in pm.METRICS)
                  + f"; TNR {o['unguided']['tnr']:.2f} -> {o['guided']['tnr']:.2f}", flush=True)
    (RESULTS / "series.md").write_text(write_table(results))
    print(write_table(results))


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
