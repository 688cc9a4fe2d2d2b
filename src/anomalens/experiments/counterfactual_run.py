"""``anomalens explain RUN_DIR --method counterfactual``: train the counterfactual explainer for a
trained detector run, evaluate it, and write ``RUN_DIR/explain/counterfactual/``:

``explainer.safetensors``, ``metrics.json``, ``counterfactuals.png`` (first row anomalies, one row
per concept, the detector's score under each image), ``images/losses.png``, ``images/scores.png``,
``samples/`` (grids during training), ``oracle.safetensors`` and ``report.html``.

The oracle is a label classifier trained on the dataset's own training labels (digit; digit and
colour for coloured data), once per dataset and seed in ``~/.cache/anomalens/oracles`` (every scenario
of a grid shares it; the run folder keeps a copy); the explainer never sees it. FID uses Inception-v3 when a local
weights file is given, else the oracle's features (the metrics say which).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

from anomalens.atomic import atomic_write_bytes, atomic_write_json, exclusive
from anomalens.data import catalog
from anomalens.data.addata import ADData
from anomalens.data.download import sha256_of
from anomalens.data.formats import read_flat_or_class_folder
from anomalens.data.images import to_tensor
from anomalens.detectors.base import Detector
from anomalens.errors import ConfigError
from anomalens.experiments.explain_run import load_run
from anomalens.experiments.latent_cache import cached_autoencoder, dataset_cache_name, labelled_split
from anomalens.experiments.paper_figures import paper_figures
from anomalens.experiments.training_run import TrainJob, _normal_rule, build_data, build_detector
from anomalens.explain.autoencoders import AutoencoderTraining
from anomalens.explain.counterfactual import CEConfig, CounterfactualExplainer
from anomalens.explain.counterfactual_losses import anomaly_pool
from anomalens.loop import trained_seconds
from anomalens.metrics import counterfactual as cfm
from anomalens.metrics.detection import evaluate_detector
from anomalens.metrics.features import feature_extractor, fid_n
from anomalens.metrics.oracle import LabelClassifier, train_oracle
from anomalens.metrics.properties import check_explanations, property_rows
from anomalens.report.grids import explanation_grid
from anomalens.report.html import Report
from anomalens.report.plots import loss_curves, score_histogram
from anomalens.runs import Run, RunExistsError

SHOWN = 12
log = logging.getLogger(__name__)
ORACLE_TEST_IMAGES = 5000  # test images that measure the oracle's accuracy


def label_oracle(job: TrainJob, path: Path, epochs: int = 3, limit: int | None = None) -> LabelClassifier | None:
    """The oracle for the run's dataset, trained once (on at most ``limit`` images) and cached at
    ``path``; None when the dataset has no class labels (defect datasets). Its accuracy per head on
    the dataset's test split (``oracle.test_accuracy``, cached beside it in ``.json``) is reported
    next to the validity it judges: a validity means little from an oracle that is often wrong."""
    record = path.with_suffix(".json")
    if path.is_file():
        oracle = LabelClassifier.load(path)
        oracle.test_accuracy = _recorded_accuracy(record)
        return oracle
    if catalog.get_spec(job.dataset).kind == "defects":
        return None
    train = labelled_split(job, "train", limit, subsample_seed=job.seed)
    targets, heads = _oracle_targets(train)
    log.info(f"training the oracle ({', '.join(heads)}) on {len(train)} labelled {job.dataset} images")
    oracle = train_oracle(to_tensor(train.images), targets, tuple(to_tensor(train.images[:1]).shape[1:]),
                          epochs=epochs, seed=job.seed + 11, heads=heads)
    test = labelled_split(job, "test", ORACLE_TEST_IMAGES, subsample_seed=job.seed)
    oracle.test_accuracy = oracle.accuracy(to_tensor(test.images), _oracle_targets(test)[0])
    log.info("oracle accuracy on the test split: " + ", ".join(f"{k} {v:.3f}" for k, v in oracle.test_accuracy.items()))
    oracle.save(path)
    atomic_write_json(record, {"test_accuracy": oracle.test_accuracy, "test_images": len(test)})
    return oracle


def shared_oracle(job: TrainJob, copy_to: Path, epochs: int = 3, limit: int | None = None) -> LabelClassifier | None:
    """The dataset's oracle, trained once per dataset, colouring, seed and budget and cached for every
    scenario and detector of a grid (it never depends on the normal classes), with a copy at ``copy_to``
    so that a run folder stays complete on its own."""
    key = {"dataset": job.dataset, "colored": job.colored, "data_root": str(job.data_root or ""), "seed": job.seed,
           "epochs": epochs, "limit": limit}
    cached = Path(catalog.CACHE_DIR) / "oracles" / f"{dataset_cache_name(job, key)}.safetensors"
    with exclusive(cached.with_suffix(".lock")):  # parallel grid workers train it once
        oracle = label_oracle(job, cached, epochs, limit)
    if oracle is not None:
        for source, target in ((cached, copy_to), (cached.with_suffix(".json"), copy_to.with_suffix(".json"))):
            if source.is_file():
                atomic_write_bytes(target, source.read_bytes())
    return oracle


def _recorded_accuracy(record: Path) -> dict[str, float] | None:
    """The cached oracle's test accuracy; None when the record is absent or unreadable (it is only reported)."""
    try:
        accuracy = json.loads(record.read_text()).get("test_accuracy")
    except (OSError, ValueError, AttributeError):
        return None
    return accuracy if isinstance(accuracy, dict) else None


def _oracle_targets(images) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """The oracle's heads: the class label, plus the colour on coloured data."""
    targets = {"label": torch.from_numpy(images.labels.astype("int64"))}
    heads = {"label": len(images.class_names)}
    if "colour" in images.attrs:
        targets["colour"] = torch.from_numpy(images.attrs["colour"].astype("int64"))
        heads["colour"] = int(targets["colour"].max()) + 1
    return targets, heads


def evaluate_counterfactuals(explainer: CounterfactualExplainer, detector: Detector, data: ADData, job: TrainJob,
                             oracle: LabelClassifier | None, fid_features: str | None = None,
                             with_sub_auroc: bool = True, max_anomalies: int = 2000,
                             histogram: Path | None = None) -> dict[str, Any]:
    """Every metric of appendix D plus oracle validity on (at most ``max_anomalies``) test anomalies;
    ``histogram``: where to draw the bounded scores of normal test samples vs counterfactuals."""
    anomalies = data.test_x[data.test_y == 1][:max_anomalies]
    normal = data.test_x[data.test_y == 0]
    result = explainer.explain(anomalies)
    images = result.outputs
    flat = images.flatten(0, 1)
    metrics: dict[str, Any] = evaluate_detector(detector, data.test_x, data.test_y)
    metrics.update(cf_auroc=cfm.cf_auroc(detector, normal, flat),
                   concept_acc=cfm.concept_accuracy(explainer.concept_logits, anomalies, images),
                   explained=len(anomalies), evaluation_mode="eval (running batch-norm statistics)")
    normal_scores = detector.scores(normal, raw=False)
    metrics["scores"] = {"normal_test": cfm.score_summary(normal_scores),
                         "anomalies": cfm.score_summary(result.score_before),
                         "counterfactuals": cfm.score_summary(result.score_after.flatten())}
    metrics["l1_change"] = (images - anomalies[:, None]).abs().mean().item()
    properties = check_explanations(detector, anomalies, {f"concept {k + 1}": images[:, k]
                                                          for k in range(images.shape[1])}, data.train_normal)
    if properties is not None:
        metrics["properties"] = properties
    if histogram is not None:
        cf_scores = result.score_after.flatten()
        score_histogram(histogram, torch.cat([normal_scores, cf_scores]).numpy(),
                        torch.cat([torch.zeros(len(normal_scores)), torch.ones(len(cf_scores))]).numpy(),
                        "normal test (blue) vs counterfactuals (orange)", "bounded score")
    if oracle is not None:
        is_normal = cfm.normal_predicate(_normal_rule(job.normal), catalog.load(job.dataset, "test",
                                                                                job.data_root).class_names)
        # Judged on the anomalies the detector flags (bounded score >= 0.5): for an anomaly the detector
        # already calls normal, the right counterfactual is the input itself, which the oracle rejects.
        detected = result.score_before >= 0.5
        if detected.any():
            metrics.update(cfm.oracle_validity(oracle, anomalies[detected], images[detected], is_normal))
        metrics["oracle_validity_all"] = cfm.oracle_validity(oracle, anomalies, images,
                                                             is_normal)["oracle_validity"]
        metrics["oracle_judged"] = int(detected.sum())
        if getattr(oracle, "test_accuracy", None):  # the label head's accuracy, and every head's
            metrics["oracle_accuracy"] = oracle.test_accuracy.get("label")
            metrics["oracle_accuracy_per_head"] = oracle.test_accuracy
    extractor = feature_extractor(fid_features, fallback=oracle) if (fid_features or oracle) else None
    if extractor is not None:
        metrics.update(fid_n(extractor, flat, normal, anomalies))
    if with_sub_auroc:
        pool = anomaly_pool(data)
        source = pool if pool is not None else data.train_normal
        substitutes = explainer.explain(source[: len(data.train_normal)]).outputs.flatten(0, 1)
        metrics["sub_auroc"] = cfm.sub_auroc(data, substitutes[: len(data.train_normal)],
                                             lambda d: build_detector(job, d.image_shape).fit(
                                                 d, job.train_config(None, progress=False)))
    return metrics


def _report(out: Path, job: TrainJob, detector: Detector, metrics: dict[str, Any], cfg: CEConfig) -> Path:
    method = detector.config().get("objective", detector.config()["detector"])
    report = Report(f"Counterfactual explanations: {method} on {job.dataset}",
                    f"normal = {job.normal}{' (coloured)' if job.colored else ''}; OE = {job.oe}")
    paper = paper_figures(job.dataset, job.colored, method, job.normal) or {}
    keys = ("ad_auroc", "score_distance", "cf_auroc", "sub_auroc", "fid_n", "concept_acc", "oracle_validity",
            "oracle_accuracy", "oracle_kept", "l1_change")
    targets = {"cf_auroc": "close to 0.5", "concept_acc": "close to 1", "oracle_validity": "close to 1",
               "oracle_accuracy": "close to 1 (the oracle's own test accuracy)",
               "fid_n": "0.5-1 (paper)"}
    report.heading("Metrics").metrics_table(
        [{"metric": k, "ours": metrics.get(k), "paper": paper.get(k), "aim": targets.get(k, "")} for k in keys],
        caption="paper: CE paper appendix G, mean over 4 seeds" if paper else "the paper has no matching setup")
    if "oracle_factor_changes" in metrics:
        report.paragraph("Which factor each concept changes (share of counterfactuals whose oracle label differs "
                         "from the input's): " + "; ".join(
                             f"{c}: " + ", ".join(f"{k} {v:.2f}" for k, v in f.items())
                             for c, f in metrics["oracle_factor_changes"].items()))
    report.paragraph(f"FID features: {metrics.get('fid_features', 'none')}. Scores are computed in eval mode.")
    if "properties" in metrics:
        report.heading("AR-Pro properties").metrics_table(
            property_rows(metrics["properties"]),
            caption="the detector is decomposable: M_s, M_d, M_omega, M_omega_bar (lower is better) and the share of "
                    "counterfactuals satisfying P1-P4 (AR-Pro sec. 2.2)")
    report.heading("Counterfactuals").image(out / "counterfactuals.png", "first row: anomalies; then one row per "
                                            "concept; the detector's bounded score under each image")
    report.image(out / "images" / "scores.png", "bounded scores: normal test samples vs counterfactuals")
    report.heading("Training").image(out / "images" / "losses.png", "loss terms every 50 steps")
    report.key_values({"steps_trained": metrics.get("steps"), "train_seconds": metrics.get("train_seconds"),
                       **{k: v for k, v in asdict(cfg).items() if k != "extra"}}, caption="explainer config")
    return report.write(out / "report.html")


def explain_counterfactuals(run_dir: str | Path, cfg: CEConfig | None = None, fid_features: str | None = None,
                            with_sub_auroc: bool = True, max_anomalies: int = 2000, oracle_epochs: int = 3,
                            oracle_limit: int | None = None, oracle_path: str | Path | None = None,
                            folder: str = "counterfactual", autoencoder_cache: str | Path | None = None
                            ) -> dict[str, Any]:
    """Train (or resume) the explainer for the run in ``run_dir``, evaluate it, write the report.

    ``oracle_path`` lets several runs on one dataset share an oracle (trained there once); ``folder``
    names the output folder under ``RUN_DIR/explain/`` (to compare explainer configs on one detector).
    Rerunning with another budget (``steps``, ``minutes``) continues from the last checkpoint. The
    latent generator's autoencoder is trained once per dataset into ``autoencoder_cache`` (default
    ``~/.cache/anomalens/autoencoders``) unless ``cfg.autoencoder`` names one."""
    cfg = cfg or CEConfig()
    run_dir = Path(run_dir)
    job, detector, data = load_run(run_dir)
    autoencoder_record = None
    if cfg.generator == "latent" and not cfg.autoencoder:
        training = AutoencoderTraining(steps=cfg.autoencoder_steps, bf16=cfg.bf16, device=cfg.device)
        path, autoencoder_record = cached_autoencoder(job, data, training, autoencoder_cache, cfg.progress)
        cfg = replace(cfg, autoencoder=str(path))
    out = run_dir / "explain" / folder
    config = {k: v for k, v in asdict(cfg).items() if k not in ("checkpoint_dir", "progress")}
    run = Run.create(out, config, cfg.seed, command="anomalens explain --method counterfactual")
    cfg = replace(cfg, checkpoint_dir=str(out / "checkpoints"))
    samples = out / "samples"
    explainer = CounterfactualExplainer(cfg, on_sample=lambda step, result: explanation_grid(
        samples / f"step_{step:06d}.png", result))
    with run.recording():
        started = time.perf_counter()
        explainer.fit(detector, data)
        train_seconds = trained_seconds(explainer.history, time.perf_counter() - started)
        explainer.save(out / "explainer.safetensors")
        oracle = (label_oracle(job, Path(oracle_path), oracle_epochs, oracle_limit) if oracle_path
                  else shared_oracle(job, out / "oracle.safetensors", oracle_epochs, oracle_limit))
        metrics = evaluate_counterfactuals(explainer, detector, data, job, oracle, fid_features, with_sub_auroc,
                                           max_anomalies, out / "images" / "scores.png")
        metrics.update(steps=explainer.step, train_seconds=train_seconds, history=explainer.history,
                       seconds_per_step=train_seconds / max(1, explainer.step), generator=cfg.generator)
        if autoencoder_record is not None:  # a one-off cost per dataset, reported apart from this run's
            metrics["autoencoder"] = {k: autoencoder_record[k] for k in ("train_seconds", "images", "steps",
                                                                          "final_mse")}
        anomalies = data.test_x[data.test_y == 1][:SHOWN]
        explanation_grid(out / "counterfactuals.png", explainer.explain(anomalies))
        loss_curves(out / "images" / "losses.png", explainer.history, title="explainer losses")
        run.write_metrics(metrics)
        _report(out, job, detector, metrics, cfg)
    summary = ", ".join(f"{k} {metrics[k]:.3f}" for k in ("ad_auroc", "cf_auroc", "concept_acc", "oracle_validity",
                                                           "sub_auroc", "fid_n") if k in metrics)
    log.info(f"{summary} -> {out / 'report.html'}")
    return metrics


def explain_images(run_dir: str | Path, folder: str | Path) -> Path:
    """Counterfactuals of the user's own images (an image folder) with the run's trained explainer."""
    run_dir = Path(run_dir)
    weights = run_dir / "explain" / "counterfactual" / "explainer.safetensors"
    if not weights.is_file():
        raise ConfigError(f"{weights} is missing. Fix: train the explainer first with "
                          f"`anomalens explain {run_dir} --method counterfactual`")
    detector = Detector.load(run_dir / "detector.safetensors")
    explainer = CounterfactualExplainer.load(weights, detector)
    c, h, w = explainer.image_shape
    x = to_tensor(read_flat_or_class_folder(folder, "L" if c == 1 else "RGB", (h, w)))
    result = explainer.explain(x)
    out = run_dir / "explain" / "counterfactual" / f"images_{Path(folder).name}"
    for start in range(0, len(x), SHOWN):
        part = explainer.explain(x[start:start + SHOWN])
        explanation_grid(out / f"counterfactuals_{start // SHOWN:03d}.png", part)
    atomic_write_json(out / "scores.json", {"input_scores": result.score_before.tolist(),
                                            "counterfactual_scores": result.score_after.tolist()})
    log.info(f"{len(x)} images explained -> {out}")
    return out


def run_from_detector(detector_path: str | Path, out: str | Path, dataset: str, normal: str, oe: str | None,
                      colored: bool = False) -> Path:
    """A run folder for a detector file trained elsewhere: ``config.yaml`` describing its task and a copy
    of the detector, so that ``explain`` works on it like on any ``anomalens train`` run. An existing
    run folder is never overwritten, unless it was made by this function for the same detector file."""
    import yaml

    from anomalens.atomic import atomic_write_bytes, atomic_write_text

    detector = Detector.load(detector_path)
    config = detector.config()
    job = TrainJob(dataset=dataset, normal=normal, oe=oe, colored=colored,
                   detector=config.get("objective", config["detector"]))
    out = Path(out)
    plain = yaml.safe_dump(asdict(job), sort_keys=False)
    existing = out / "config.yaml"
    if out.exists() and not out.is_dir():
        raise RunExistsError(f"{out} is a file, not a run folder. Fix: choose another --out")
    if existing.exists() or (out / "detector.safetensors").exists():
        same = existing.exists() and existing.read_text() == plain and (out / "detector.safetensors").exists() \
            and sha256_of(out / "detector.safetensors") == sha256_of(detector_path)
        if not same:
            raise RunExistsError(f"{out} already holds a run (config.yaml / detector.safetensors); --detector would "
                                 "overwrite it. Fix: choose a new --out folder, or pass the run folder as RUN_DIR")
        return out
    build_data(job)  # a wrong --dataset / --normal fails here, before the folder is made
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(existing, plain)
    atomic_write_bytes(out / "detector.safetensors", Path(detector_path).read_bytes())
    return out
