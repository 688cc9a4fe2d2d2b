"""``anomalens oe-search``: the evolutionary search for the best and the worst single OE image (OE
paper, sec. 5.4 and appendix H), as a resumable run folder.

The search maximises (best) or minimises (worst) the validation AuROC of ``oe_fitness``; the found
images' *test* AuROC is measured only afterwards, beside the random-image baseline (appendix D: one
randomly drawn OE image, several draws). The run folder holds, besides config.yaml and run.json:

- ``split.json``: the train-split indices of the fitting normals and the validation set;
- ``fitness_cache.json``: every validation AuROC computed so far (written after each evaluation);
- ``state_best.safetensors`` / ``state_worst.safetensors``: population, fitness, generation, history
  and the generator's state, written atomically after each generation;
- ``report_cache.json``, ``metrics.json`` and ``images/oe_search.png`` (the found images).

Rerunning the command continues from the last generation (fitness values of the interrupted one are
reused from the cache), and a finished run is returned as it is.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from anomalens.atomic import atomic_write_json
from anomalens.checkpoints import metadata_json, read_weights, write_weights
from anomalens.errors import ConfigError
from anomalens.experiments.oe_evolution import Evolution, initial_population, next_generation, ranking
from anomalens.experiments.oe_fitness import FitnessRecipe, SearchTask, build_task, check_detector, evaluate_image
from anomalens.experiments.oe_fitness import fitness as image_fitness
from anomalens.progress import Progress
from anomalens.report.grids import save_grid
from anomalens.runs import Run, seed_everything

log = logging.getLogger(__name__)
FORMAT = "anomalens.oe_search/1"
OBJECTIVES = ("best", "worst")


@dataclass
class OESearchJob:
    """Every setting of one search; ``anomalens oe-search`` flags and YAML files hold the same keys.
    The defaults are the CPU-scale recipe (the paper's values are in comments)."""

    dataset: str = "mnist"
    normal: str = "0"
    oe: str = "kmnist"
    pool_size: int | None = None  # OE images the search picks from (None: all), drawn like oe_size
    detector: str = "bce"
    net: str | None = None
    objective: str = "both"  # best | worst | both
    population: int = 16  # paper 64
    generations: int = 10  # paper 50
    tournament: int = 3
    mate_chance: float = 0.05
    mutate_chance: float = 0.55
    candidates: int = 10_000
    nearest: int = 50
    elite: int = 1  # paper 0
    fitness_epochs: int = 1  # paper: 30 epochs, milestone 25 (appendix G)
    fitness_steps_per_epoch: int | None = 20  # paper: whole epochs
    fitness_seeds: int = 1  # paper 2
    lr: float = 1e-3
    batch_size: int = 128
    augment: str = "none"  # MNIST: none, as the paper
    val_normal: int = 500  # normal training images held out for validation
    val_anomalies: int = 1000  # training images of the other classes in the validation set
    report_top: int = 3  # found images whose test AuROC is reported, per objective
    baseline_draws: int = 16  # random single images for the baseline
    seed: int = 0
    data_root: str | None = None
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.objective not in (*OBJECTIVES, "both"):
            raise ConfigError(f"objective must be best, worst or both, got {self.objective!r}. Fix: --objective both")
        for name in ("population", "generations", "fitness_epochs", "fitness_seeds", "report_top", "baseline_draws"):
            if getattr(self, name) < 1 and not (name == "generations" and self.generations == 0):
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}. Fix: pass a positive value")
        if self.pool_size is not None and self.pool_size < 1:
            raise ConfigError(f"pool_size must be >= 1, got {self.pool_size}. Fix: leave it out to use every OE image")
        self.evolution()

    def evolution(self) -> Evolution:
        return Evolution(self.tournament, self.mate_chance, self.mutate_chance, self.candidates, self.nearest,
                         self.elite)

    def recipe(self) -> FitnessRecipe:
        return FitnessRecipe(self.detector, self.net, self.fitness_epochs, self.fitness_steps_per_epoch, self.lr,
                             self.batch_size, self.augment, self.fitness_seeds, self.seed, self.device)

    def objectives(self) -> tuple[str, ...]:
        return OBJECTIVES if self.objective == "both" else (self.objective,)


class Cache:
    """Values per pool index, computed once and saved atomically after each new one (so an interrupt
    loses at most the evaluation that was running)."""

    def __init__(self, path: Path, compute: Callable[[int], Any]):
        self.path, self.compute = path, compute
        self.values = {int(k): v for k, v in _read_json(path).items()}
        self.new = 0

    def __call__(self, index: int) -> Any:
        if index not in self.values:
            self.values[index] = self.compute(index)
            self.new += 1
            atomic_write_json(self.path, {str(k): v for k, v in sorted(self.values.items())})
        return self.values[index]

    def many(self, indices: np.ndarray) -> np.ndarray:
        return np.array([self(int(i)) for i in indices], np.float64)


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


# ------------------------------------------------------------------------------------- the state


def save_state(path: Path, population: np.ndarray, fitness: np.ndarray, meta: dict[str, Any]) -> None:
    write_weights(path, {"population": torch.from_numpy(np.asarray(population, np.int64)),
                         "fitness": torch.from_numpy(np.asarray(fitness, np.float64))},
                  {"format": FORMAT, "state": json.dumps(meta)})


def load_state(path: Path) -> tuple[np.ndarray, np.ndarray, dict[str, Any]] | None:
    """Population, fitness and the JSON state (generation, generator, history), or None before the first save."""
    if not path.exists():
        return None
    tensors, metadata = read_weights(path, "OE search state", "anomalens oe-search", FORMAT)
    return tensors["population"].numpy(), tensors["fitness"].numpy(), metadata_json(metadata, "state", path,
                                                                                    "anomalens oe-search")


def _entry(generation: int, fitness: np.ndarray, new: int, seconds: float) -> dict[str, float]:
    return {"generation": generation, "best": float(fitness.max()), "worst": float(fitness.min()),
            "mean": float(fitness.mean()), "evaluations": new, "seconds": round(seconds, 2)}


def evolve(job: OESearchJob, objective: str, flat: np.ndarray, fitness: Cache, folder: Path,
           progress: bool = True) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Run (or continue) one objective's search to ``job.generations``; returns its last generation."""
    path, maximise = folder / f"state_{objective}.safetensors", objective == "best"
    saved = load_state(path)
    if saved is None:
        started, fitness.new = time.perf_counter(), 0
        log.info(f"oe-search {objective}: evaluating the initial population ({job.population} images)")
        population = initial_population(len(flat), job.population, np.random.default_rng([job.seed, 0]))
        scores = fitness.many(population)
        rng = np.random.default_rng([job.seed, 1 + OBJECTIVES.index(objective)])
        meta = {"generation": 0, "rng": rng.bit_generator.state,
                "history": [_entry(0, scores, fitness.new, time.perf_counter() - started)]}
        save_state(path, population, scores, meta)
    else:
        population, scores, meta = saved
        rng = np.random.default_rng()
        rng.bit_generator.state = meta["rng"]
    bar = Progress(job.generations, f"oe-search {objective}", start=meta["generation"], every=1, unit="generation",
                   enabled=progress)
    while meta["generation"] < job.generations:
        started, fitness.new = time.perf_counter(), 0
        population = next_generation(population, scores, flat, maximise, job.evolution(), rng)
        scores = fitness.many(population)
        meta["generation"] += 1
        meta["rng"] = rng.bit_generator.state
        meta["history"].append(_entry(meta["generation"], scores, fitness.new, time.perf_counter() - started))
        save_state(path, population, scores, meta)
        bar.update(meta["generation"], {"best": scores.max(), "worst": scores.min(), "mean": scores.mean()},
                   f"({fitness.new} new evaluations)")
    bar.close()
    return population, scores, meta


# ------------------------------------------------------------------------------------ the report


def found_images(population: np.ndarray, scores: np.ndarray, objective: str, top: int) -> list[int]:
    """The ``top`` distinct images of the last generation, fittest first for the objective."""
    found: list[int] = []
    for position in ranking(scores, objective == "best"):
        if int(population[position]) not in found:
            found.append(int(population[position]))
    return found[:top]


def report(job: OESearchJob, task: SearchTask, finals: dict[str, tuple], folder: Path) -> dict[str, Any]:
    """Test AuROC of the found images and of the random baseline (same training), and the image grid."""
    evaluate = Cache(folder / "report_cache.json", lambda i: evaluate_image(task, i, job.recipe()))
    metrics: dict[str, Any] = {"selection": "validation split of the training data (the paper selects on test)",
                               "pool_size": len(task.pool)}
    rows, captions, labels = [task.fit_normal[:max(job.report_top, 8)]], ["normal"], [[]]
    for objective, (population, scores, meta) in finals.items():
        images = found_images(population, scores, objective, job.report_top)
        results = [evaluate(i) for i in images]
        history = meta["history"]
        metrics.update({f"{objective}_images": images,
                        f"{objective}_val_auroc": [r["val_auroc"] for r in results],
                        f"{objective}_test_auroc": [r["test_auroc"] for r in results],
                        f"{objective}_test_auroc_top1": results[0]["test_auroc"],
                        f"{objective}_test_auroc_mean": float(np.mean([r["test_auroc"] for r in results])),
                        f"{objective}_val_fitness_initial_mean": history[0]["mean"],
                        f"{objective}_val_fitness_final_mean": history[-1]["mean"],
                        f"{objective}_history": history})
        rows.append(task.pool[images])
        captions.append(f"{objective} found")
        labels.append([f"{r['test_auroc']:.3f}" for r in results])
    draws = np.random.default_rng([job.seed, 3]).choice(len(task.pool), min(job.baseline_draws, len(task.pool)),
                                                        replace=False)
    baseline = [evaluate(int(i)) for i in draws]
    test, val = [r["test_auroc"] for r in baseline], [r["val_auroc"] for r in baseline]
    metrics.update(baseline_images=draws.tolist(), baseline_test_auroc=test,
                   baseline_test_auroc_mean=float(np.mean(test)), baseline_test_auroc_std=float(np.std(test)),
                   baseline_val_auroc_mean=float(np.mean(val)), baseline_val_auroc_std=float(np.std(val)))
    shown = draws[:max(job.report_top, 8)]
    rows.append(task.pool[shown])
    captions.append("random draws")
    labels.append([f"{t:.3f}" for t in test[:len(shown)]])
    save_grid(folder / "images" / "oe_search.png", rows, captions, labels=labels, caption_width=90)
    return metrics


# --------------------------------------------------------------------------------------- the run


def _normal_rule(normal: str) -> str | list[str]:
    parts = [p.strip() for p in str(normal).split(",")]
    return parts if all(p.isdigit() for p in parts) else str(normal)


def _finished(out: Path, config: dict[str, Any]) -> dict[str, Any] | None:
    """The metrics of a completed run of this very config in ``out``, else None."""
    try:
        same = yaml.safe_load((out / "config.yaml").read_text()) == json.loads(json.dumps(config))
    except (OSError, yaml.YAMLError):
        return None
    done = _read_json(out / "run.json").get("status") == "completed"
    metrics = _read_json(out / "metrics.json")
    return metrics if same and done and metrics else None


def run_search(job: OESearchJob, out: str | Path, progress: bool = True) -> dict[str, Any]:
    """Search, report and record into run folder ``out``; rerunning resumes, a finished run is returned."""
    out, config = Path(out), asdict(job)
    if (finished := _finished(out, config)) is not None:
        log.info(f"{out} holds this finished search; nothing to do (a new --out or config starts another)")
        return finished
    seed_everything(job.seed)
    task = build_task(job.dataset, _normal_rule(job.normal), job.oe, job.pool_size, job.val_normal,
                      job.val_anomalies, job.seed, job.data_root)
    check_detector(job.recipe(), task.image_shape)
    run = Run.create(out, config, job.seed, command="anomalens oe-search")
    split = task.split.as_json() if task.split is not None else {}
    atomic_write_json(run.path / "split.json", {**split, "note": "indices into the train split; the search never "
                      "reads the test split"})
    log.info(f"{task.name}: {len(task.fit_normal)} normal images to fit, validation {int((task.val_y == 0).sum())} "
             f"normal + {int(task.val_y.sum())} anomalies (training data), {len(task.pool)} OE candidates")
    with run.recording():
        fitness = Cache(run.path / "fitness_cache.json", lambda i: image_fitness(task, i, job.recipe()))
        finals = {o: evolve(job, o, task.flat, fitness, run.path, progress) for o in job.objectives()}
        metrics = report(job, task, finals, run.path)
        seconds = sum(entry["seconds"] for _, _, meta in finals.values() for entry in meta["history"])
        metrics.update(evaluations=len(fitness.values), search_seconds=round(seconds, 1))
        run.write_metrics(metrics)
    for objective in job.objectives():
        val, test = metrics[f"{objective}_val_auroc"][0], metrics[f"{objective}_test_auroc_top1"]
        image = metrics[f"{objective}_images"][0]
        log.info(f"{objective} image {image}: validation AuROC {val:.4f}, test AuROC {test:.4f}")
    log.info(f"random single image: test AuROC {metrics['baseline_test_auroc_mean']:.4f} ± "
             f"{metrics['baseline_test_auroc_std']:.4f} over {len(metrics['baseline_test_auroc'])} draws -> "
             f"{run.path / 'images' / 'oe_search.png'}")
    return metrics
