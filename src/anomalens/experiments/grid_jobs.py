"""One run of a grid: train (or resume) the detector, then the optional explain step. This module
is the one place that knows the run functions (``run_training``, ``explain_counterfactuals``,
``explain_repairs``, ``explain_run``) and their options, so that re-pointing the explain step (e.g. at
a unified ``Explainer.fit/explain``) touches nothing else.

``resolve_explain`` turns a grid's explain block into the full config that is hashed and stored with
the run (every default filled in, the run's seed); ``run_one`` runs a resolved config.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from anomalens.atomic import jsonable
from anomalens.config import from_dict
from anomalens.errors import ConfigError
from anomalens.experiments.training_run import TrainJob

RUNTIME_KEYS = ("checkpoint_dir", "progress")  # set by the run functions, never part of a config


@dataclass
class CounterfactualOptions:
    """Arguments of ``explain_counterfactuals`` besides its CEConfig (grid defaults)."""

    recipe: str = "cpu"  # CEConfig.recipe: cpu or paper; other explain keys override its values
    fid_features: str | None = None
    with_sub_auroc: bool = True
    max_anomalies: int = 2000
    oracle_epochs: int = 3
    oracle_limit: int | None = None


@dataclass
class RepairOptions:
    """Arguments of ``explain_repairs`` besides its RepairConfig (grid defaults)."""

    max_anomalies: int = 64
    baseline: bool = True
    plain: bool = False  # also the paper's off-the-shelf baseline (whole image re-generated, no guidance)


@dataclass
class HeatmapOptions:
    """Arguments of ``explain_run`` (heatmap, gradient, gradient_x_input)."""

    shown: int = 12


def _explain_parts(method: str) -> tuple[type, type | None]:
    """(options dataclass, config dataclass or None) of an explain method."""
    if method == "counterfactual":
        from anomalens.explain.counterfactual import CEConfig

        return CounterfactualOptions, CEConfig
    if method == "repair":
        from anomalens.explain.repair import RepairConfig

        return RepairOptions, RepairConfig
    from anomalens.experiments.explain_run import EXPLAIN_METHODS

    if method not in EXPLAIN_METHODS:
        known = ", ".join(["counterfactual", "repair", *EXPLAIN_METHODS])
        raise ConfigError(f"explain: method: {method!r} is unknown. Fix: one of {known}")
    return HeatmapOptions, None


def resolve_explain(explain: dict[str, Any], seed: int, where: str) -> dict[str, Any]:
    """The explain block with every default filled in and the run's seed: what gets hashed and run."""
    explain = dict(explain)
    method = explain.pop("method")
    options_cls, config_cls = _explain_parts(method)
    option_keys = {f.name for f in dataclasses.fields(options_cls)}
    config_keys = {f.name for f in dataclasses.fields(config_cls)} - set(RUNTIME_KEYS) if config_cls else set()
    if "seed" in explain:
        raise ConfigError(f"{where}: explain: seed is set per run from `seeds`. Fix: remove it")
    unknown = sorted(set(explain) - option_keys - config_keys)
    if unknown:
        raise ConfigError(f"{where}: explain ({method}): unknown key(s) {unknown}. Fix: use "
                          f"{', '.join(sorted(option_keys | config_keys - {'seed'}))}")
    options = asdict(from_dict(options_cls, {k: v for k, v in explain.items() if k in option_keys},
                               f"{where}: explain"))
    resolved: dict[str, Any] = {"method": method, **options}
    if config_cls is not None:
        given = {k: v for k, v in explain.items() if k in config_keys}
        try:
            # the recipe takes the grid's keys itself, so `explain.steps` keeps its warm-up share as `--steps` does
            start = asdict(config_cls.recipe(options["recipe"], **given)) if method == "counterfactual" else given
            config = from_dict(config_cls, {**start, "seed": seed}, f"{where}: explain")
            if hasattr(config, "validate"):
                config.validate()
        except (TypeError, ValueError) as e:
            raise ConfigError(str(e) if str(e).startswith(where) else f"{where}: explain: {e}") from e
        resolved.update({k: v for k, v in asdict(config).items() if k not in RUNTIME_KEYS})
    return json.loads(json.dumps(resolved, default=jsonable))


def _explain(explain: dict[str, Any], folder: Path) -> dict[str, Any]:
    """Run the explain step on a trained run folder; the one call site of the explain functions."""
    method = explain["method"]
    options_cls, config_cls = _explain_parts(method)
    option_keys = {f.name for f in dataclasses.fields(options_cls)}
    options = {k: v for k, v in explain.items() if k in option_keys}
    config = {k: v for k, v in explain.items() if k not in option_keys and k != "method"}
    if method == "counterfactual":
        from anomalens.experiments.counterfactual_run import explain_counterfactuals

        options.pop("recipe")
        return explain_counterfactuals(folder, from_dict(config_cls, config), **options)
    if method == "repair":
        from anomalens.experiments.repair_run import explain_repairs

        return explain_repairs(folder, from_dict(config_cls, config), **options)
    from anomalens.experiments.explain_run import explain_run

    return explain_run(folder, method, **options)


def flat_metrics(metrics: dict[str, Any], prefix: str = "") -> dict[str, float | str]:
    """Scalars of a metrics dict; nested dicts become dotted keys, lists and histories are dropped."""
    out: dict[str, float | str] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat_metrics(value, f"{name}."))
        elif isinstance(value, (bool, int, float, str)) or value is None:
            out[name] = value
        elif hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
            out[name] = value.item()
    return out


def run_one(config: dict[str, Any], folder: str | Path) -> dict[str, Any]:
    """Train (or resume) the run's detector into ``folder``, then its explain step if any; returns the
    flat metrics (the explainer's own ``train_seconds``/``steps`` become ``explain_train_seconds``/
    ``explain_steps``). Called again on the same folder, each step resumes from its checkpoints."""
    from anomalens.experiments.training_run import run_training
    from anomalens.runs import seed_everything

    folder = Path(folder)
    job = from_dict(TrainJob, config["train"], str(folder / "resolved.yaml"))
    seed_everything(job.seed)  # whatever the process ran before: a fresh worker and a reused one agree
    metrics = flat_metrics(run_training(job, folder))
    if config.get("explain"):
        seed_everything(job.seed)  # the same start whether training just ran or was found finished
        explained = flat_metrics(_explain(config["explain"], folder))
        for key in ("train_seconds", "steps", "seconds_per_step"):
            if key in explained:
                explained[f"explain_{key}"] = explained.pop(key)
        metrics.update(explained)
    return metrics
