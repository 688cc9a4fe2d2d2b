"""The evolutionary search for single OE images (OE paper, appendix H): its operators, the validation
split that keeps the test set out of the fitness, a tiny search, resume, and the command."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from anomalens import cli
from anomalens.cli import main
from anomalens.errors import ConfigError
from anomalens.experiments import oe_search
from anomalens.experiments.oe_evolution import Evolution, initial_population, near, next_generation, tournament_select
from anomalens.experiments.oe_fitness import FitnessRecipe, SearchTask, build_task, carve_validation, fitness
from anomalens.experiments.oe_search import Cache, OESearchJob, evolve, load_state

from conftest import write_idx

RECIPE = FitnessRecipe("bce", epochs=1, steps_per_epoch=3, batch_size=8, lr=1e-2, device="cpu")
TINY = {"fitness_steps_per_epoch": 3, "batch_size": 8, "lr": 1e-2, "device": "cpu", "candidates": 30, "nearest": 4}


def _bars(kinds: list[tuple[str, int]], seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(len(kinds), 1, 16, 16, generator=g) * 0.3
    for i, (kind, at) in enumerate(kinds):
        if kind == "h":
            x[i, :, at:at + 3, 2:14] = 0.9
        else:
            x[i, :, 2:14, at:at + 3] = 0.9
    return x


def tiny_task(test: torch.Tensor | None = None) -> SearchTask:
    """16 px: normal = a horizontal bar, anomalies = a vertical bar, the OE pool = 30 blends from a horizontal
    bar (useless OE) to a vertical one (useful OE) on one background, so L2 neighbours are neighbouring blends
    and the fitness rises with the blend. A fitness evaluation takes about 0.1 s."""
    normal = _bars([("h", i % 12) for i in range(32)], 0)
    val_x = torch.cat([_bars([("h", i * 5 % 12) for i in range(12)], 1), _bars([("v", i * 5 % 12) for i in range(12)],
                                                                              2)])
    test_x = torch.cat([_bars([("h", i * 7 % 12) for i in range(12)], 3), _bars([("v", i * 7 % 12) for i in range(12)],
                                                                               4)])
    y = torch.cat([torch.zeros(12), torch.ones(12)]).long()
    blend = torch.linspace(0, 1, 30).view(-1, 1, 1, 1)
    pool = (1 - blend) * _bars([("h", 6)], 5) + blend * _bars([("v", 6)], 5)
    return SearchTask(normal, val_x, y, pool, test_x if test is None else test, y, name="tiny bars")


# ----------------------------------------------------------------------------------- operators


def test_initial_population_is_distinct_pool_indices() -> None:
    population = initial_population(30, 10, np.random.default_rng(0))
    assert len(set(population.tolist())) == 10 and population.min() >= 0 and population.max() < 30
    with pytest.raises(ConfigError, match="population"):
        initial_population(5, 6, np.random.default_rng(0))


def test_tournament_returns_the_fittest_entrant_for_best_and_the_least_fit_for_worst() -> None:
    population, scores = np.array([7, 3, 9, 4]), np.array([0.5, 0.9, 0.1, 0.6])
    rng = np.random.default_rng(0)
    assert set(tournament_select(population, scores, 5, 4, True, rng).tolist()) == {3}
    assert set(tournament_select(population, scores, 5, 4, False, rng).tolist()) == {9}
    winners = tournament_select(population, scores, 200, 3, True, rng)
    assert 9 not in winners.tolist()  # the least fit can never win a tournament of 3 out of 4


def test_mutation_draws_from_the_nearest_pool_images() -> None:
    flat = np.random.default_rng(0).random((40, 5)).astype(np.float32)
    evolution = Evolution(mutate_chance=1.0, mate_chance=0.0, candidates=40, nearest=3)
    population = np.array([0, 10, 20, 30])
    children = next_generation(population, np.zeros(4), flat, True, evolution, np.random.default_rng(1))
    assert children.dtype == np.int64 and ((children >= 0) & (children < 40)).all()
    for child in children:  # every child is among the 3 nearest of some selected parent
        nearest = {int(p): set(np.argsort(((flat - flat[p]) ** 2).sum(1))[:3].tolist()) for p in population}
        assert any(int(child) in s for s in nearest.values())


def test_crossover_children_lie_between_both_parents() -> None:
    flat = np.array([[0, 0], [10, 0], [5, 0], [5, 4], [0, 9], [12, 7]], np.float32)
    evolution = Evolution(candidates=6, nearest=3)
    children = {near(flat, [0, 1], evolution, np.random.default_rng(s)) for s in range(30)}
    assert children <= {0, 1, 2} and 2 in children  # the points with the least summed distance to both
    twins = Evolution(mate_chance=1.0, mutate_chance=0.0, candidates=6, nearest=2)  # parents 0 and 0 mate:
    offspring = next_generation(np.array([0, 0]), np.zeros(2), flat, True, twins, np.random.default_rng(0))
    assert set(offspring.tolist()) <= {0, 2}  # children drawn near them, not copies of the selection


def test_selection_keeps_the_elite_through_mating_and_mutation() -> None:
    flat = np.random.default_rng(0).random((50, 4)).astype(np.float32)
    population, scores = np.array([5, 6, 7, 8, 9]), np.array([0.3, 0.8, 0.1, 0.5, 0.6])
    rough = Evolution(mate_chance=1.0, mutate_chance=1.0, candidates=50, nearest=50, elite=1)
    for seed in range(5):
        assert next_generation(population, scores, flat, True, rough, np.random.default_rng(seed))[0] == 6
        assert next_generation(population, scores, flat, False, rough, np.random.default_rng(seed))[0] == 7
    paper = Evolution(mate_chance=0.0, mutate_chance=0.0)  # selection alone: only old individuals remain
    assert set(next_generation(population, scores, flat, True, paper, np.random.default_rng(0))) <= set(population)


# ------------------------------------------------------------------------------- the fitness data


def test_validation_split_comes_from_the_training_data_never_the_test_set(tmp_path) -> None:
    rng = np.random.default_rng(0)
    folder = tmp_path / "mnist"
    folder.mkdir()
    train_labels, test_labels = np.arange(60, dtype=np.uint8) % 10, np.arange(20, dtype=np.uint8) % 10
    train_images = rng.integers(0, 256, (60, 28, 28), dtype=np.uint8)
    test_images = rng.integers(0, 256, (20, 28, 28), dtype=np.uint8)
    write_idx(folder / "train-images-idx3-ubyte.gz", train_images)
    write_idx(folder / "train-labels-idx1-ubyte.gz", train_labels)
    write_idx(folder / "t10k-images-idx3-ubyte.gz", test_images)
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", test_labels)
    (tmp_path / "kmnist").mkdir()
    np.savez(tmp_path / "kmnist" / "kmnist-test-imgs.npz", arr_0=rng.integers(0, 256, (12, 28, 28), dtype=np.uint8))
    np.savez(tmp_path / "kmnist" / "kmnist-test-labels.npz", arr_0=np.arange(12, dtype=np.uint8) % 10)

    task = build_task("mnist", ["3"], "kmnist", None, 2, 10, seed=0, data_root=tmp_path)
    split = task.split
    assert set(split.fit_normal) | set(split.val_normal) == set(np.flatnonzero(train_labels == 3))
    assert not set(split.fit_normal) & set(split.val_normal)
    assert (train_labels[split.val_anomalies] != 3).all() and len(split.val_anomalies) == 10
    # every image the fitness sees is a training image, and none is a test image
    seen = torch.cat([task.fit_normal, task.val_x]).flatten(1)
    test = torch.from_numpy(test_images).float().div(255).flatten(1)
    assert torch.equal(task.val_x[:2, 0], torch.from_numpy(train_images[split.val_normal]).float().div(255))
    assert not (torch.cdist(seen, test) < 1e-6).any()
    assert len(task.pool) == 12 and len(task.test_x) == 20
    with pytest.raises(ConfigError, match="val_normal"):
        carve_validation(train_labels == 3, 6, 10, 0)


def _without_timing(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in entry.items() if k not in ("seconds", "evaluations")} for entry in history]


def test_a_tiny_search_improves_never_reads_the_test_set_and_resumes_exactly(tmp_path) -> None:
    """One search run straight through (on a task whose test images are NaN: reading them would fail),
    and the same search interrupted in the middle of a generation and run again."""
    job = OESearchJob(population=6, generations=2, objective="best", **TINY)
    task = tiny_task(test=torch.full((24, 1, 16, 16), float("nan")))
    straight = evolve(job, "best", task.flat, Cache(tmp_path / "a" / "cache.json", lambda i: fitness(task, i, RECIPE)),
                      tmp_path / "a", False)
    first, last = straight[2]["history"][0], straight[2]["history"][-1]
    assert last["best"] > first["best"] and last["mean"] > first["mean"]  # a better image than the initial ones
    calls = []

    def interrupted(index: int) -> float:
        calls.append(index)
        if len(calls) == 9:  # in the middle of a generation after the initial one
            raise KeyboardInterrupt
        return fitness(task, index, RECIPE)

    with pytest.raises(KeyboardInterrupt):
        evolve(job, "best", task.flat, Cache(tmp_path / "b" / "cache.json", interrupted), tmp_path / "b", False)
    assert load_state(tmp_path / "b" / "state_best.safetensors")[2]["generation"] == 1
    resumed = evolve(job, "best", task.flat, Cache(tmp_path / "b" / "cache.json", lambda i: fitness(task, i, RECIPE)),
                     tmp_path / "b", False)
    np.testing.assert_array_equal(resumed[0], straight[0])
    np.testing.assert_array_equal(resumed[1], straight[1])
    assert resumed[2]["rng"] == straight[2]["rng"]
    assert _without_timing(resumed[2]["history"]) == _without_timing(straight[2]["history"])


# ------------------------------------------------------------------------------------ the command


def test_command_writes_the_run_keeps_a_finished_one_and_names_bad_input(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(oe_search, "build_task", lambda *args, **kwargs: tiny_task())
    monkeypatch.setattr(cli, "explainer_names", lambda: ["heatmap"])  # the parser's explainer list imports diffusers
    out = tmp_path / "run"
    flags = ["oe-search", "--out", str(out), "--population", "3", "--generations", "1", "--report-top", "1",
             "--baseline-draws", "2", "--fitness-steps-per-epoch", "3", "--batch-size", "8", "--device", "cpu",
             "--candidates", "30", "--nearest", "4"]
    assert main(flags) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "completed" and run["versions"]["torch"] and run["seed"] == 0
    assert (out / "images" / "oe_search.png").stat().st_size > 0
    assert {"best_test_auroc_top1", "worst_test_auroc_top1", "baseline_test_auroc_mean", "baseline_test_auroc_std",
            "best_val_auroc"} <= set(metrics)
    assert metrics["best_val_auroc"][0] >= metrics["worst_val_auroc"][0]

    def never(*args, **kwargs):
        raise AssertionError("a finished run was redone")

    monkeypatch.setattr(oe_search, "build_task", never)
    assert main(flags) == 0  # finished: returned as it is
    capsys.readouterr()
    monkeypatch.setattr(oe_search, "build_task", lambda *args, **kwargs: tiny_task())
    for bad, words in ((["--population", "0"], "population must be >= 1"),
                       (["--detector", "dsvdd"], "does not train on Outlier Exposure"),
                       (["--elite", "-1"], "elite >= 0")):
        assert main(["oe-search", "--out", str(tmp_path / "bad"), *bad]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("anomalens: error:") and words in err and "\n" not in err
