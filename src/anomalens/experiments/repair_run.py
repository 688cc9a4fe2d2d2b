"""``anomalens explain RUN_DIR --method repair``: AR-Pro repairs of a run's test anomalies.

Writes ``RUN_DIR/explain/repair/``: ``diffusion.safetensors`` (the DDPM, trained on the run's normal
training images once, resumable from ``checkpoints/``), ``thresholds.safetensors`` (tau), ``repairs.png``
(rows: anomaly, omega, ground truth when known, unguided repair, guided repair; the detector's raw
score under each image), ``images/samples.png`` (unconditional DDPM samples, to judge the model),
``metrics.json`` (guided vs unguided, and with ``plain`` the off-the-shelf baseline: M_s, M_d, M_omega,
M_omega_bar, P1-P4 rates, improvements, TNR, seconds per image; ``omega_iou`` with ground-truth masks)
and ``report.html``.

Windows of time series (a run trained on a series dataset) take the same path; only the pictures
differ: ``repairs.png`` plots each repaired window feature by feature (original, omega shaded,
unguided, guided; the paper's Figure 6) and ``images/samples.png`` plots sampled windows. The repaired
anomalies are then spread evenly over the test set's anomalous windows (consecutive windows overlap).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

from anomalens.data.timeseries import SeriesData
from anomalens.detectors.base import Detector
from anomalens.detectors.decomposition import FeatureThresholds, decompose
from anomalens.experiments.explain_run import load_run
from anomalens.explain.base import Explanation
from anomalens.explain.diffusion import DiffusionModel
from anomalens.explain.repair import RepairConfig, RepairExplainer, schedule_note
from anomalens.explain.series_diffusion import SeriesDiffusionModel
from anomalens.metrics import properties as pm
from anomalens.report.grids import save_grid
from anomalens.report.html import Report
from anomalens.runs import Run

SHOWN = 8
log = logging.getLogger(__name__)


def compare_repairs(detector: Detector, thresholds: FeatureThresholds, repairs: dict[str, Explanation],
                    normal_scores: torch.Tensor, delta4: float, level: float = 0.95) -> dict[str, Any]:
    """Property metrics of each set of repairs, the TNR against a conformal threshold on held-out
    normal (raw) scores, and the percentage improvement of the guided repairs over each other set."""
    threshold = pm.conformal_threshold(normal_scores, level)
    metrics: dict[str, Any] = {"conformal_level": level, "conformal_threshold": threshold}
    for name, repair in repairs.items():
        x_fix = repair.outputs[:, 0]
        summary = pm.summarize(pm.property_metrics(detector, thresholds, repair.inputs, x_fix, delta4))
        summary.update(tnr=pm.true_negative_rate(detector.scores(x_fix), threshold),
                       tnr_input=pm.true_negative_rate(detector.scores(repair.inputs), threshold),
                       seconds_per_image=float(repair.extras["seconds_per_image"]))
        metrics[name] = summary
    if "guided" in repairs:
        for name in repairs:
            if name != "guided":
                metrics[f"improvement_over_{name}"] = {
                    m: pm.improvement(metrics[name][f"{m}_mean"], metrics["guided"][f"{m}_mean"])
                    for m in (*pm.METRICS, "s_omega_fix")}
    return metrics


def repair_grid(path: Path, repairs: dict[str, Explanation], masks: torch.Tensor | None, shown: int = SHOWN) -> Path:
    first = next(iter(repairs.values()))
    rows = [first.inputs[:shown], first.extras["omega"][:shown, None]]
    captions = ["anomaly", "omega (repaired region)"]
    if masks is not None:
        rows.append(masks[:shown, None].float())
        captions.append("ground truth")
    for name, repair in repairs.items():
        rows.append(repair.outputs[:shown, 0])
        captions.append(f"{name} repair (score {repair.score_after[:shown].mean():.3g})")
    return save_grid(path, rows, captions)


def omega_iou(omega: torch.Tensor, masks: torch.Tensor) -> float:
    """How well the repaired region omega covers the true defect: the mean IoU over the images."""
    omega, masks = omega.bool(), masks.bool()
    inter = (omega & masks).flatten(1).sum(1).float()
    union = (omega | masks).flatten(1).sum(1).float().clamp_min(1)
    return float((inter / union).mean())


def series_pictures(out: Path, data: SeriesData, anomalous: torch.Tensor, repairs: dict[str, Explanation],
                    samples: torch.Tensor) -> None:
    """The series' ``repairs.png`` (windows feature by feature, in sensor units) and ``images/samples.png``."""
    from anomalens.report.series_plots import plot_repairs, plot_windows

    first = next(iter(repairs.values()))
    recording = data.test_attrs["recording"][anomalous]
    faults = data.test_attrs["fault"][anomalous]
    titles = [f"{data.fault_names[int(f)]} @ {int(s)}" for f, s in zip(faults, data.test_attrs["start"][anomalous])]
    truth = data.test_masks[anomalous] if data.test_masks is not None else None
    plot_repairs(out / "repairs.png", first.inputs, first.extras["omega"],
                 {name: r.outputs[:, 0] for name, r in repairs.items()}, data.feature_names, truth,
                 lambda x, i: data.denormalise(x, recording[i]), shown=SHOWN // 2, titles=titles)
    plot_windows(out / "images" / "samples.png", samples, data.feature_names, "windows sampled by the diffusion model")


def _report(out: Path, title: str, metrics: dict[str, Any], cfg: RepairConfig, diffusion_cfg: dict[str, Any]) -> Path:
    report = Report(f"AR-Pro repairs: {title}", metrics["schedule"])
    names = [n for n in ("plain", "unguided", "guided") if n in metrics]
    rows = []
    for key, aim in (("M_s", "lower"), ("M_d", "lower"), ("M_omega", "lower (< 0 = P3)"),
                     ("M_omega_bar", "lower (<= delta4 = P4)"), ("s_omega_fix", "lower: the repaired region's score")):
        row: dict[str, Any] = {"metric": key, "aim": aim}
        row.update({n: metrics[n][f"{key}_mean"] for n in names})
        if "improvement_over_unguided" in metrics:
            row["improvement %"] = metrics["improvement_over_unguided"][key]
        rows.append(row)
    rows += [{"metric": f"{p} satisfied", **{n: metrics[n][f"{p}_rate"] for n in names}} for p in pm.PROPERTIES]
    rows.append({"metric": f"TNR at {metrics['conformal_level']:.0%} conformal", "aim": ">= 0.95",
                 **{n: metrics[n]["tnr"] for n in names}})
    rows.append({"metric": "seconds per image", **{n: metrics[n]["seconds_per_image"] for n in names}})
    report.heading("Properties").metrics_table(rows, ["metric", *names, "improvement %", "aim"],
                                               caption=f"{metrics['repaired']} test anomalies; means")
    report.heading("Repairs").image(out / "repairs.png", "raw detector score in the captions (mean of the row)")
    report.image(out / "images" / "samples.png", "unconditional samples of the diffusion model")
    report.key_values(asdict(cfg), caption="repair config").key_values(diffusion_cfg, caption="diffusion config")
    return report.write(out / "report.html")


def fitted_repairer(out: Path, detector: Detector, data, cfg: RepairConfig) -> RepairExplainer:
    """The repair explainer of folder ``out``: its diffusion model is trained once (resumable from
    ``out/checkpoints``) and kept as ``out/diffusion.safetensors``; the thresholds as ``thresholds.safetensors``."""
    path = out / "diffusion.safetensors"
    model_class = SeriesDiffusionModel if isinstance(data, SeriesData) else DiffusionModel
    diffusion = model_class.load(path) if path.is_file() else None
    if diffusion is None:
        profile = cfg.diffusion_config(data.image_shape, isinstance(data, SeriesData)).profile
        log.info(f"training the diffusion model on {len(data.train_normal)} normal samples ({profile} profile) ...")
    cfg = replace(cfg, checkpoint_dir=str(out / "checkpoints"))
    explainer = RepairExplainer(cfg, diffusion).fit(detector, data)
    if diffusion is None:
        explainer.diffusion.save(path)
    explainer.thresholds.save(out / "thresholds.safetensors")
    return explainer


def explain_repairs(run_dir: str | Path, cfg: RepairConfig | None = None, max_anomalies: int = 64,
                    baseline: bool = True, plain: bool = False, folder: str = "repair") -> dict[str, Any]:
    """Repair (at most ``max_anomalies``) test anomalies of the run, guided and, with ``baseline``,
    unguided (the same in-filling without guidance); with ``plain`` also the paper's off-the-shelf
    baseline (the whole image re-generated, no guidance); write grids, metrics and the report. The
    detector must be decomposable; ``cfg.diffusion`` holds the ``DiffusionConfig`` settings (profile,
    steps, minutes, ...) of its training."""
    cfg = cfg or RepairConfig()
    run_dir = Path(run_dir)
    job, detector, data = load_run(run_dir)
    decompose(detector.eval(), data.test_x[:1])  # a clear error for a non-decomposable detector, before training
    if "seed" not in cfg.diffusion:
        cfg = replace(cfg, diffusion={**cfg.diffusion, "seed": cfg.seed})
    series = isinstance(data, SeriesData)
    diffusion_cfg = cfg.diffusion_config(data.image_shape, series)
    out = run_dir / "explain" / folder
    config = {k: v for k, v in asdict(cfg).items() if k not in ("checkpoint_dir", "progress")}
    run = Run.create(out, config, cfg.seed, command="anomalens explain --method repair")
    with run.recording():
        started = time.perf_counter()
        explainer = fitted_repairer(out, detector, data, cfg)
        train_seconds = time.perf_counter() - started
        diffusion = explainer.diffusion
        anomalous = (data.test_y == 1).nonzero().flatten()
        if series and len(anomalous) > max_anomalies:
            anomalous = anomalous[torch.linspace(0, len(anomalous) - 1, max_anomalies).round().long()]
        anomalous = anomalous[:max_anomalies]
        x_bad = data.test_x[anomalous]
        schedule = schedule_note(cfg, len(diffusion.alphas_cumprod))
        log.info(f"repairing {len(x_bad)} anomalies: {schedule}")
        repairs = {"guided": explainer.explain(x_bad)}
        if baseline:
            repairs = {"unguided": explainer.explain(x_bad, guidance=0.0), **repairs}
        if plain:
            repairs = {"plain": explainer.explain(x_bad, guidance=0.0, infill=False), **repairs}
        normal_scores = detector.scores(data.test_x[data.test_y == 0])
        metrics = compare_repairs(detector, explainer.thresholds, repairs, normal_scores, cfg.delta4)
        metrics.update(repaired=len(x_bad), schedule=schedule, diffusion_train_seconds=train_seconds,
                       diffusion_steps=diffusion.step)
        masks = data.test_masks[anomalous] if data.test_masks is not None else None
        if masks is not None:
            metrics["omega_iou"] = omega_iou(repairs["guided"].extras["omega"], masks)
        samples = diffusion.sample(SHOWN, steps=50, generator=torch.Generator().manual_seed(cfg.seed))
        if series:
            series_pictures(out, data, anomalous, repairs, samples)
        else:
            repair_grid(out / "repairs.png", repairs, masks)
            save_grid(out / "images" / "samples.png", [samples], ["DDPM samples"])
        run.write_metrics(metrics)
        title = f"{detector.config().get('objective', detector.config()['detector'])} on {job.dataset}"
        _report(out, title, metrics, cfg, asdict(diffusion_cfg))
    if "improvement_over_unguided" in metrics:
        log.info("guided vs unguided improvement %: " + ", ".join(
            f"{k} {v:+.1f}" for k, v in metrics["improvement_over_unguided"].items()))
    log.info(f"TNR guided {metrics['guided']['tnr']:.2f}; {metrics['guided']['seconds_per_image']:.1f} s per image "
             f"-> {out / 'report.html'}")
    return metrics
