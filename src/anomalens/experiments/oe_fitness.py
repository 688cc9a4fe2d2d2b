"""The fitness of one Outlier-Exposure image: the AuROC of a detector trained with it alone, measured
on a validation split carved from the *training* data, never on the test set.

The OE paper (appendix H) scores individuals on the test set and reports the same numbers, which
selects on the test set. Here the normal training images are split into a fitting part and held-out
normals, and held-out anomalies are drawn from the training images of the other classes; the search
only ever sees that validation AuROC. The test AuROC of a found image is measured once, after the
search, by ``evaluate_image`` (the same training, so the same detector, scored on both sets).

Training is a short run of the library's detector training (balanced batches of normal images and
copies of the one OE image, with the scenario's augmentation), and its seeds are fixed per fitness
seed, so the fitness is a deterministic function of the image: a cached value is exact, and a
resumed search equals an uninterrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from anomalens.data import catalog, scenarios
from anomalens.data.addata import ADData
from anomalens.data.images import to_tensor
from anomalens.detectors import registry
from anomalens.detectors.training import TrainConfig
from anomalens.errors import ConfigError
from anomalens.metrics.detection import auroc


@dataclass(frozen=True)
class Split:
    """Indices into the dataset's *train* split: normal images the detector fits on, held-out normal
    images and held-out anomalies (training images of the other classes) that form the validation set."""

    fit_normal: np.ndarray
    val_normal: np.ndarray
    val_anomalies: np.ndarray

    def as_json(self) -> dict[str, list[int]]:
        return {k: getattr(self, k).tolist() for k in ("fit_normal", "val_normal", "val_anomalies")}


def carve_validation(normal_mask: np.ndarray, val_normal: int, val_anomalies: int, seed: int) -> Split:
    """Hold out ``val_normal`` of the normal training images and draw ``val_anomalies`` of the others."""
    normal, others = np.flatnonzero(normal_mask), np.flatnonzero(~np.asarray(normal_mask, bool))
    if not 1 <= val_normal < len(normal):
        raise ConfigError(f"val_normal must lie in [1, {len(normal) - 1}] (the task has {len(normal)} normal training "
                          f"images, some must stay for fitting), got {val_normal}. Fix: e.g. --val-normal "
                          f"{max(1, len(normal) // 10)}")
    if not 1 <= val_anomalies <= len(others):
        raise ConfigError(f"val_anomalies must lie in [1, {len(others)}] (the training images of the other "
                          f"classes), got {val_anomalies}. Fix: e.g. --val-anomalies {min(len(others), 1000)}")
    rng = np.random.default_rng([seed, 7])
    held = rng.permutation(normal)
    return Split(np.sort(held[val_normal:]), np.sort(held[:val_normal]),
                 np.sort(rng.choice(others, val_anomalies, replace=False)))


@dataclass
class SearchTask:
    """What the search and its final report need. ``val_*`` are training images; ``test_*`` are the test
    split, read only by ``evaluate_image`` after the search."""

    fit_normal: Tensor
    val_x: Tensor
    val_y: Tensor
    pool: Tensor
    test_x: Tensor
    test_y: Tensor
    split: Split | None = None
    name: str = ""
    flat: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.flat = self.pool.flatten(1).numpy().astype(np.float32)  # the operators' L2 space

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.fit_normal.shape[1:])  # type: ignore[return-value]


def build_task(dataset: str, normal: str | list[str], oe: str, pool_size: int | None, val_normal: int,
               val_anomalies: int, seed: int = 0, data_root: str | Path | None = None) -> SearchTask:
    """The scenario (``scenarios.build``: the OE pool of ``pool_size`` images drawn as ``oe_size`` draws
    them, checked against the test anomalies) plus a validation split of the training data."""
    if oe == "confetti":
        raise ConfigError("the search picks images of an OE dataset; confetti noise is generated, not a pool. "
                          "Fix: pass a dataset, e.g. --oe kmnist")
    data = scenarios.build(dataset, normal, oe=oe, oe_size=pool_size, seed=seed, data_root=data_root)
    train = catalog.load(dataset, "train", data_root)
    split = carve_validation(scenarios.parse_normality(normal, train.class_names)(train), val_normal, val_anomalies,
                             seed)
    val_index = np.concatenate([split.val_normal, split.val_anomalies])
    val_y = torch.cat([torch.zeros(len(split.val_normal)), torch.ones(len(split.val_anomalies))]).long()
    return SearchTask(to_tensor(train.images[split.fit_normal]), to_tensor(train.images[val_index]), val_y,
                      data.train_oe, data.test_x, data.test_y, split, data.name)


@dataclass(frozen=True)
class FitnessRecipe:
    """The short training behind one fitness value (a budget in epochs and steps, never seconds)."""

    detector: str = "bce"
    net: str | None = None
    epochs: int = 1
    steps_per_epoch: int | None = 20  # cap on the steps of an epoch (None: one pass over the normal images)
    lr: float = 1e-3
    batch_size: int = 128
    augment: str = "none"
    seeds: int = 1  # fitness = mean AuROC over this many trainings (the paper: 2)
    seed: int = 0
    device: str = "cpu"

    def train_config(self, seed: int) -> TrainConfig:
        return TrainConfig(epochs=self.epochs, lr=self.lr, batch_size=self.batch_size, augment=self.augment,
                           seed=seed, progress=False, max_steps_per_epoch=self.steps_per_epoch, device=self.device)


def check_detector(recipe: FitnessRecipe, image_shape: tuple[int, int, int]) -> None:
    """Refuse a detector that does not train on OE images: a single OE image would change nothing."""
    if recipe.detector not in registry.names():
        raise ConfigError(f"unknown detector {recipe.detector!r}. Fix: use one of bce, focal, hsc, deepsad")
    detector = registry.create(recipe.detector, image_shape, net=recipe.net)
    if getattr(getattr(detector, "objective", None), "anomalies", None) != "oe":
        raise ConfigError(f"the {recipe.detector!r} detector does not train on Outlier Exposure, so the OE image "
                          "cannot change it. Fix: use bce, focal, hsc or deepsad")


def _train(task: SearchTask, index: int, recipe: FitnessRecipe, seed: int):
    torch.manual_seed(seed)  # the initial weights: the same for every image under one fitness seed
    detector = registry.create(recipe.detector, task.image_shape, net=recipe.net)
    data = ADData(train_normal=task.fit_normal, train_oe=task.pool[index:index + 1], test_x=task.val_x[:0],
                  test_y=task.val_y[:0], name=f"{task.name}: OE image {index}")
    return detector.fit(data, recipe.train_config(seed))


def _seeds(recipe: FitnessRecipe) -> list[int]:
    return [recipe.seed * 1000 + s for s in range(recipe.seeds)]


def fitness(task: SearchTask, index: int, recipe: FitnessRecipe) -> float:
    """Mean validation AuROC of detectors trained with pool image ``index`` as the only OE image."""
    return float(np.mean([auroc(task.val_y, _train(task, index, recipe, s).scores(task.val_x))
                          for s in _seeds(recipe)]))


def evaluate_image(task: SearchTask, index: int, recipe: FitnessRecipe) -> dict[str, float]:
    """Validation and test AuROC of the very detectors ``fitness`` trains (for the report, after the search)."""
    val, test = [], []
    for s in _seeds(recipe):
        detector = _train(task, index, recipe, s)
        val.append(auroc(task.val_y, detector.scores(task.val_x)))
        test.append(auroc(task.test_y, detector.scores(task.test_x)))
    return {"val_auroc": float(np.mean(val)), "test_auroc": float(np.mean(test))}
