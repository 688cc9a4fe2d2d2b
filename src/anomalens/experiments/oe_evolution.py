"""The genetic operators of the OE paper's evolutionary search (appendix H, Algorithm 1), pure NumPy.

An individual is the index of one image of the Outlier-Exposure pool; a population is an int array
of them. The operators only see the pool's flattened pixels (for L2 neighbourhoods), the fitness
values and a ``numpy.random.Generator``, so they are cheap to test and a resumed search that
restores the generator's state makes the same choices as an uninterrupted one.

Paper values (``Evolution`` defaults): tournaments of 3, mating chance 0.05, mutation chance 0.55,
10,000 random candidates narrowed to the 50 nearest. ``elite`` is ours (the paper has none, ``0``
reproduces it): the best ``elite`` individuals pass to the next generation untouched, so a small
population cannot lose its best image to an unlucky tournament draw or a mutation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from anomalens.errors import ConfigError


@dataclass(frozen=True)
class Evolution:
    """Hyper-parameters of one generation step (Algorithm 1's constants)."""

    tournament: int = 3  # competitors per selection tournament
    mate_chance: float = 0.05  # per pair (i, i + 1)
    mutate_chance: float = 0.55  # per individual
    candidates: int = 10_000  # random pool images a mutation / mating child is chosen near
    nearest: int = 50  # ... narrowed to this many nearest (L2), of which one is drawn
    elite: int = 0  # best individuals copied unchanged into the next generation (0 = the paper)

    def __post_init__(self) -> None:
        if self.tournament < 1 or self.candidates < 1 or self.nearest < 1 or self.elite < 0:
            raise ConfigError(f"tournament, candidates and nearest must be >= 1 and elite >= 0; got {self.tournament}, "
                              f"{self.candidates}, {self.nearest}, {self.elite}. Fix: e.g. 3, 10000, 50, 1")
        for name in ("mate_chance", "mutate_chance"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"{name} must lie in [0, 1], got {getattr(self, name)}. Fix: e.g. 0.05 / 0.55")


def initial_population(pool_size: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """RND(D, size): ``size`` distinct random pool indices."""
    if not 1 <= size <= pool_size:
        raise ConfigError(f"a population of {size} needs between 1 and {pool_size} (the OE pool's size) images. "
                          f"Fix: use --population <= {pool_size}, or a larger --pool-size")
    return rng.choice(pool_size, size, replace=False).astype(np.int64)


def _better(fitness: np.ndarray, maximise: bool) -> np.ndarray:
    """Fitness turned so that larger is always better."""
    return fitness if maximise else -fitness


def ranking(fitness: np.ndarray, maximise: bool) -> np.ndarray:
    """Positions from the fittest to the least fit (stable: ties keep their order)."""
    return np.argsort(-_better(np.asarray(fitness, np.float64), maximise), kind="stable")


def tournament_select(population: np.ndarray, fitness: np.ndarray, count: int, size: int, maximise: bool,
                      rng: np.random.Generator) -> np.ndarray:
    """``count`` winners, each the fittest of ``size`` distinct random members (RND(D', 3))."""
    score = _better(np.asarray(fitness, np.float64), maximise)
    size = min(size, len(population))
    winners = np.empty(count, np.int64)
    for slot in range(count):
        entrants = rng.choice(len(population), size, replace=False)
        winners[slot] = population[entrants[np.argmax(score[entrants])]]
    return winners


def near(flat: np.ndarray, parents: list[int], evolution: Evolution, rng: np.random.Generator) -> int:
    """One pool index drawn from the ``nearest`` of ``candidates`` random pool images, nearest meaning
    the smallest sum of L2 distances to the parents (one parent: mutation; two: mating)."""
    n = len(flat)
    pool = rng.choice(n, min(evolution.candidates, n), replace=False)
    distance = np.zeros(len(pool))
    for parent in parents:
        distance += np.sqrt(((flat[pool] - flat[parent]) ** 2).sum(1))
    closest = pool[np.argsort(distance, kind="stable")[:evolution.nearest]]
    return int(rng.choice(closest))


def next_generation(population: np.ndarray, fitness: np.ndarray, flat: np.ndarray, maximise: bool,
                    evolution: Evolution, rng: np.random.Generator) -> np.ndarray:
    """Select, mate and mutate (Algorithm 1's loop body without the evaluation).

    The elite take the first places and skip mating and mutation; the other places are filled by
    tournaments, then pairs (i, i + 1) mate with ``mate_chance`` (both children drawn near both parents)
    and each individual mutates with ``mutate_chance`` (replaced by an image drawn near it)."""
    population, fitness = np.asarray(population, np.int64), np.asarray(fitness, np.float64)
    if len(population) != len(fitness):
        raise ValueError(f"{len(population)} individuals but {len(fitness)} fitness values")
    elite = population[ranking(fitness, maximise)[:min(evolution.elite, len(population))]]
    children = tournament_select(population, fitness, len(population) - len(elite), evolution.tournament,
                                 maximise, rng)
    for i in range(0, len(children) - 1, 2):
        if rng.random() < evolution.mate_chance:
            parents = [int(children[i]), int(children[i + 1])]
            for j in (0, 1):
                children[i + j] = near(flat, parents, evolution, rng)
    for i in range(len(children)):
        if rng.random() < evolution.mutate_chance:
            children[i] = near(flat, [int(children[i])], evolution, rng)
    return np.concatenate([elite, children])
