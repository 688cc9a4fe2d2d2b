"""One detector training run, end to end: scenario -> detector -> run folder with metrics and plots.

This is what ``anomalens train`` executes. The run folder gets ``config.yaml``, ``run.json``,
``checkpoints/`` (resumed when the same command runs again), ``detector.safetensors``,
``metrics.json`` (``ad_auroc``, ``score_distance``, ``train_seconds``; on coloured data also
``ad_auroc_by_colour``), ``calibration.json`` (the raw
scores of the normal test images, for ``anomalens predict``'s automatic threshold: see
``experiments/calibration.py``) and ``images/roc.png`` + ``images/scores.png``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from anomalens.data import catalog, frequency, scenarios
from anomalens.data.addata import ADData
from anomalens.data.series_sources import build_series, is_series_dataset
from anomalens.data.timeseries import DEFAULT_WINDOW, NORMALISATIONS
from anomalens.detectors import registry
from anomalens.detectors.base import Detector
from anomalens.detectors.objectives import RADIALS
from anomalens.detectors.training import TrainConfig
from anomalens.device import resolve_device
from anomalens.emissions import EmissionsMeter, tradeoff
from anomalens.errors import ConfigError
from anomalens.experiments.calibration import save_normal_scores
from anomalens.explain.heatmap import HeatmapConfig, HeatmapExplainer
from anomalens.loop import trained_seconds
from anomalens.maps import binarize, normalise
from anomalens.metrics.detection import auroc, evaluate_detector, roc_curve
from anomalens.metrics.pixel import pixel_auc, threshold_metrics
from anomalens.report.grids import save_grid
from anomalens.report.plots import roc_plot, score_histogram
from anomalens.runs import Run, seed_everything

log = logging.getLogger(__name__)


@dataclass
class TrainJob:
    """Everything ``anomalens train`` needs; a YAML config file holds the same keys."""

    dataset: str = "mnist"
    normal: str | int = "0"  # a class (7 or "seven"), a list "1,3", or a rule "red or one"
    detector: str = "hsc"  # bce, focal, hsc, deepsad, dsvdd, supervised, fcdd, aexad, ae, flow
    oe: str | None = None
    oe_size: int | None = None
    known_anomalies: str | None = None  # e.g. "blue" for the supervised classifier
    known_size: int | None = None
    colored: bool = False
    labelled_per_type: int = 3  # defect datasets: annotated anomalies per defect type moved to training
    anomalies_only: bool = False  # defect datasets: AE-XAD's D* scenario, no normal training images
    image_size: int | None = None  # defect datasets: resize images and masks
    architecture: str = "small"  # aexad: "small" conv autoencoder or "resnet" (paper sec. 5.1); flow: pixel
    # or "resnet" (frozen ResNet-18) features
    trunk_weights: str | None = None  # aexad/flow resnet: local torchvision-named ResNet-18 ImageNet weights;
    # clip/bce_cl: a CLIP folder or hub id [openai/clip-vit-base-patch32]; series_gpt2: GPT-2 folder or hub id
    net: str | None = None  # LeNet profile (mnist, colored_mnist, fmnist, cifar) or wrn; default by size
    focal_gamma: float = 2.0
    hsc_radial: str = "pseudo_huber"  # hsc: h(z) of l(z) = exp(-h(z)): pseudo_huber, l1, l2, l2_squared (OE app. E)
    oe_classes: int | None = None  # draw this many classes of the OE set (seeded), then oe_size (OE paper app. A)
    filter: str | None = None  # frequency analysis (OE paper app. B-C): "low" or "high" pass, data/frequency.py
    filter_cutoff: int = 0  # the paper's magnitude m: rows/columns of the centred spectrum removed
    filter_on: str = "all"  # the filtered images: all (train, OE, test), test, oe
    epochs: int = 20
    lr: float = 1e-3
    milestones: tuple[int, ...] = ()
    batch_size: int = 128
    weight_decay: float = 1e-6
    augment: str = "none"
    pretrain_epochs: int = 0  # autoencoder pretraining (Deep SVDD; Ruff et al. 2018)
    bf16: bool = False
    channels_last: bool = False
    seed: int = 0
    data_root: str | None = None
    device: str = "auto"
    # time series (skab, synthetic_series, or a CSV/Parquet file or folder); None = the default in brackets
    window: int | None = None  # steps per window [100]
    stride: int | None = None  # steps between window starts [10]
    time_column: str | None = None  # CSV/Parquet: the time column [none: rows in file order]
    feature_columns: tuple[str, ...] | None = None  # CSV/Parquet: the sensors [every other column]
    label_column: str | None = None  # CSV/Parquet: 1 = anomalous step [none]
    train_fraction: float | None = None  # share of each labelled file's normal prefix used for training [0.5]
    normalise: str | None = None  # z-scores per "recording" or "global" ["recording"]

    def __post_init__(self) -> None:
        self.milestones = tuple(self.milestones)
        if self.detector not in registry.names():
            raise ConfigError(f"unknown detector {self.detector!r}. Fix: use one of {', '.join(registry.names())}")
        if self.oe_size is not None and self.oe_size < 1:
            raise ConfigError(f"oe_size must be >= 1, got {self.oe_size}. Fix: leave it out to use every OE image")
        if self.known_size is not None and self.known_size < 1:
            raise ConfigError(f"known_size must be >= 1, got {self.known_size}. Fix: leave it out to use all")
        if self.image_size is not None and not 8 <= self.image_size <= 4096:
            raise ConfigError(f"image_size must lie in [8, 4096] pixels, got {self.image_size}. Fix: use e.g. 64")
        if self.window is not None and not 4 <= self.window <= 100_000 or self.stride is not None and self.stride < 1:
            raise ConfigError(f"window must lie in [4, 100000] steps and stride be >= 1, got {self.window} and "
                              f"{self.stride}. Fix: e.g. window 100, stride 10")
        if self.train_fraction is not None and not 0 < self.train_fraction < 1:
            raise ConfigError(f"train_fraction must lie in (0, 1), got {self.train_fraction}. Fix: e.g. 0.5")
        if self.normalise is not None and self.normalise not in NORMALISATIONS:
            raise ConfigError(f"normalise must be one of {NORMALISATIONS}, got {self.normalise!r}")
        if self.oe_classes is not None and (self.oe_classes < 1 or self.oe is None):
            raise ConfigError(f"oe_classes must be >= 1 and needs an oe set, got {self.oe_classes} with oe "
                              f"{self.oe!r}. Fix: e.g. oe: tinyimagenet, oe_classes: 4; leave it out for every class")
        if self.filter is not None:
            if self.filter not in frequency.FILTERS or self.filter_on not in frequency.SIDES or self.filter_cutoff < 1:
                raise ConfigError(f"filter {self.filter!r}, filter_on {self.filter_on!r}, filter_cutoff "
                                  f"{self.filter_cutoff}: expected filter in {frequency.FILTERS}, filter_on in "
                                  f"{frequency.SIDES} and a cut-off >= 1 (0 filters nothing: leave filter out). "
                                  "Fix: e.g. filter: low, filter_cutoff: 8")
            if self.filter_on == "oe" and self.oe is None:
                raise ConfigError("filter_on: oe needs an OE set. Fix: set oe, or filter_on: all or test")
        elif self.filter_cutoff != 0 or self.filter_on != "all":
            raise ConfigError(f"filter_cutoff {self.filter_cutoff} / filter_on {self.filter_on!r} without a filter. "
                              "Fix: add filter: low or high, or leave both out")
        if self.hsc_radial not in RADIALS:
            raise ConfigError(f"hsc_radial {self.hsc_radial!r} is unknown. Fix: one of {', '.join(RADIALS)}")
        if self.labelled_per_type < 0 or self.focal_gamma < 0:
            raise ConfigError(f"labelled_per_type and focal_gamma must be >= 0, got {self.labelled_per_type} and "
                              f"{self.focal_gamma}")

    def train_config(self, checkpoint_dir: Path | None, progress: bool = True) -> TrainConfig:
        return TrainConfig(epochs=self.epochs, lr=self.lr, milestones=tuple(self.milestones),
                           weight_decay=self.weight_decay, batch_size=self.batch_size, augment=self.augment,
                           bf16=self.bf16, channels_last=self.channels_last, seed=self.seed, progress=progress,
                           pretrain_epochs=self.pretrain_epochs, device=self.device,
                           checkpoint_dir=str(checkpoint_dir) if checkpoint_dir else None)


def _normal_rule(normal: str | int) -> str | list[str]:
    """"7" -> ["7"]; "1,3" -> ["1", "3"]; rules with words ("red or one") stay strings."""
    normal = str(normal)
    parts = [p.strip() for p in normal.split(",")]
    return parts if all(p.isdigit() for p in parts) else normal


def build_detector(job: TrainJob, image_shape: tuple[int, int, int]) -> Detector:
    """The job's detector, untrained, built by name through the registry; series detectors for series
    datasets only, and image detectors for images only."""
    series = is_series_dataset(job.dataset)
    if series != getattr(registry.detector_class(job.detector), "series", False):
        kinds = [n for n in registry.names() if getattr(registry.detector_class(n), "series", False) == series]
        raise ConfigError(f"the {job.detector!r} detector does not work on {job.dataset!r} ("
                          f"{'windows of a time series' if series else 'images'}). Fix: use one of {', '.join(kinds)}")
    extra = {"class_names": scenarios.normal_class_names(job.dataset, _normal_rule(job.normal), job.data_root)} \
        if getattr(registry.detector_class(job.detector), "reads_class_names", False) else {}  # CLIP's prompts
    return registry.create(job.detector, image_shape, **extra, net=job.net, focal_gamma=job.focal_gamma,
                           architecture=job.architecture, trunk_weights=job.trunk_weights, hsc_radial=job.hsc_radial)


def build_data(job: TrainJob) -> ADData:
    """The job's task: a defect dataset becomes a semi-supervised inspection task with masks,
    a labelled dataset a class / rule scenario, a time series windows (``data.timeseries``)."""
    if is_series_dataset(job.dataset):
        return build_series(job.dataset, job.window or DEFAULT_WINDOW, job.stride or 10, job.train_fraction or 0.5,
                            job.data_root, job.seed, job.time_column, job.feature_columns or (), job.label_column,
                            job.normalise or "recording")
    if catalog.get_spec(job.dataset).kind == "defects":
        defects = catalog.load_defects(job.dataset, job.data_root)
        data = scenarios.defect_scenario(defects, job.labelled_per_type, job.seed, job.anomalies_only, job.image_size)
        if job.oe is not None:
            data = scenarios.with_generated_oe(data, job.oe, job.oe_size, job.seed)
        return data
    data = scenarios.build(job.dataset, _normal_rule(job.normal), colored=job.colored, oe=job.oe,
                           oe_size=job.oe_size, known_anomalies=job.known_anomalies, known_size=job.known_size,
                           seed=job.seed, data_root=job.data_root, oe_classes=job.oe_classes)
    return frequency.filter_task(data, job.filter, job.filter_cutoff, job.filter_on) if job.filter else data


def auroc_by_colour(data: ADData, raw_scores) -> dict[str, float]:
    """On coloured data: the AuROC of the normal test images against the anomalies of each colour, which
    shows where a detector trained on a biased subset of anomalies fails (CE paper, section 4.4)."""
    if "colour" not in data.test_attrs:
        return {}
    y, colour = data.test_y.numpy() == 1, data.test_attrs["colour"].numpy()
    out = {}
    for i, name in enumerate(scenarios.COLOUR_NAMES):
        kept = ~y | (y & (colour == i))  # every normal image and the anomalies of this colour
        if (y & kept).any():
            out[name] = auroc(y[kept], raw_scores[kept])
    return out


def evaluate_heatmaps(detector: Detector, data: ADData, grid: Path, shown: int = 8,
                      method: str = "heatmap") -> dict[str, Any]:
    """An overlay grid of the first ``shown`` test anomalies (image, ground truth when known, heatmap,
    binary map) and, with ground-truth masks, the pixel metrics of the heatmaps on the whole test set."""
    anomalous = (data.test_y == 1).nonzero().flatten()[:shown]
    masks = data.test_masks
    explainer = HeatmapExplainer(HeatmapConfig(method)).fit(detector, data)
    heat = explainer.explain(data.test_x if masks is not None else data.test_x[anomalous])
    maps = heat.maps[anomalous] if masks is not None else heat.maps
    metrics: dict[str, Any] = {"heatmap": heat.method, "explained": len(anomalous)}
    rows, captions = [data.test_x[anomalous]], ["anomaly"]
    if masks is not None:
        table = threshold_metrics(masks, heat.maps)
        metrics.update(pixel_auc=pixel_auc(masks, heat.maps), pixel_f1=table["a=1"]["pixel_f1"],
                       pixel_iou=table["a=1"]["pixel_iou"], thresholds=table)
        rows.append(masks[anomalous][:, None])
        captions.append("ground truth")
    rows += [normalise(maps)[:, None], binarize(maps)[:, None]]
    save_grid(grid, rows, [*captions, "heatmap", "binary map"])
    return metrics


def run_training(job: TrainJob, out: str | Path, progress: bool = True) -> dict[str, Any]:
    """Train and evaluate one detector into run folder ``out``; returns the metrics.

    Everything that can be checked (the job, the data, the detector) is checked before the folder
    is created, so a typo leaves nothing behind; a failure after that is recorded in run.json."""
    resolve_device(job.device)
    seed_everything(job.seed)  # the same initial weights for the same seed, before the folder exists
    data = build_data(job)
    detector = build_detector(job, data.image_shape)
    train_config = job.train_config(None, progress)
    run = Run.create(out, asdict(job), job.seed, command="anomalens train")
    train_config.checkpoint_dir = str(run.path / "checkpoints")
    summary = data.summary()
    log.info(f"{data.name}: {summary['train_normal']} normal, {summary['train_oe']} OE, "
             f"{summary['train_anomalies']} known anomalies; test {summary['test_normal']} normal / "
             f"{summary['test_anomalies']} anomalous")
    with run.recording():
        started = time.perf_counter()
        meter = EmissionsMeter()
        with meter:
            detector.fit(data, train_config)
            train_seconds = trained_seconds(getattr(detector, "history", None), time.perf_counter() - started)
            metrics = evaluate_detector(detector, data.test_x, data.test_y)
            if data.test_masks is not None:
                metrics.update(evaluate_heatmaps(detector, data, run.path / "images" / "heatmaps.png"))
        detector.save(run.path / "detector.safetensors")
        emissions = meter.result()
        metrics.update(co2_g=emissions["co2_g"], energy_kwh=emissions["energy_kwh"],
                       energy_source=emissions["energy_source"])
        metrics.update({f"tradeoff_{m}": tradeoff(emissions["co2_g"], metrics[m])
                        for m in ("ad_auroc", "pixel_auc", "pixel_f1", "pixel_iou") if m in metrics})
        run.info["emissions"] = emissions
        metrics.update(train_seconds=train_seconds, detector=job.detector, data=summary,
                       history=detector.history)
        raw = detector.scores(data.test_x).numpy()
        if by_colour := auroc_by_colour(data, raw):
            metrics["ad_auroc_by_colour"] = by_colour
        save_normal_scores(run.path, raw[data.test_y.numpy() == 0])  # the automatic threshold's calibration set
        fpr, tpr = roc_curve(data.test_y, raw)
        roc_plot(run.path / "images" / "roc.png", fpr, tpr, metrics["ad_auroc"], f"{job.detector}: {data.name}")
        score_histogram(run.path / "images" / "scores.png", detector.scores(data.test_x, raw=False).numpy(),
                        data.test_y.numpy(), f"{job.detector}: bounded test scores", "score in [0, 1]")
        if data.test_masks is not None:
            log.info(f"pixel AUC {metrics['pixel_auc']:.3f}, F1 {metrics['pixel_f1']:.3f}, IoU "
                     f"{metrics['pixel_iou']:.3f} ({metrics['heatmap']}) -> {run.path / 'images' / 'heatmaps.png'}")
        run.write_metrics(metrics)
    log.info(f"AuROC {metrics['ad_auroc']:.4f}, score distance {metrics['score_distance']:.3f}, "
             f"trained in {train_seconds:.1f} s -> {run.path}")
    log.info(f"CO2 {emissions['co2_g']:.3f} g, energy {emissions['energy_kwh'] * 1000:.3f} Wh "
             f"({emissions['energy_source']})")
    return metrics
