"""A built-in multivariate sensor series with injected anomalies of known type, features and span.

Offline and deterministic by seed, so that tests, the demo and benchmarks can check detectors and
repairs against exact ground truth (which feature, which steps), which real benchmarks rarely give.

The normal process is a small "plant": features come in correlated pairs. Pair k shares a signal
s_k(t) (two sinusoids with periods of 15-60 steps plus AR(1) noise); feature 2k reads s_k, feature
2k+1 reads g_k s_k, each with its own sensor noise, level and scale (so normalisation matters). The
periods, gains, levels and scales are the plant's and are drawn once per seed; each recording draws
fresh phases and noise.

Anomalies (``FAULTS``), one feature each, magnitudes in units of the feature's normal std:

- ``spike``: 1-3 steps off by 4-6 std;
- ``level_shift``: 20-50 steps off by 2-3 std;
- ``drift``: 30-60 steps moving linearly away, to 2.5-4 std;
- ``frozen``: 30-60 steps stuck at the value of the first one (the sensor stopped updating);
- ``pair_break``: 30-60 steps of feature 2k+1 mirrored about its mean: its marginal distribution is
  unchanged, only the correlation with feature 2k breaks.

``synthetic_series`` returns one normal training recording and one test recording per fault type
(a normal prefix, then ``per_type`` anomalies ``gap`` steps apart, so normal windows lie between).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from anomalens.data.timeseries import Recording
from anomalens.errors import ConfigError

FAULTS = ("spike", "level_shift", "drift", "frozen", "pair_break")


@dataclass
class Plant:
    """The normal process's fixed parameters, one row per pair (periods, amplitudes) or feature."""

    periods: np.ndarray  # (pairs, 2)
    amplitudes: np.ndarray  # (pairs, 2)
    gains: np.ndarray  # (pairs,)
    levels: np.ndarray  # (F,)
    scales: np.ndarray  # (F,)
    n_features: int

    @classmethod
    def draw(cls, rng: np.random.Generator, n_features: int) -> Plant:
        pairs = (n_features + 1) // 2
        return cls(rng.uniform(15, 60, (pairs, 2)), rng.uniform(0.5, 1.0, (pairs, 2)),
                   rng.uniform(0.6, 1.4, pairs) * rng.choice([-1, 1], pairs), rng.uniform(-50, 50, n_features),
                   10 ** rng.uniform(-1, 2, n_features), n_features)

    def simulate(self, steps: int, rng: np.random.Generator) -> np.ndarray:
        """(steps, F) readings of a fresh run of the plant."""
        t = np.arange(steps)[:, None]
        phases = rng.uniform(0, 2 * np.pi, self.periods.shape)
        shared = (self.amplitudes * np.sin(2 * np.pi * t[..., None] / self.periods + phases)).sum(-1)
        ar = np.zeros_like(shared)
        innovations = rng.normal(0, 0.1, shared.shape)
        for i in range(1, steps):  # AR(1) drift of the shared signal, phi = 0.9
            ar[i] = 0.9 * ar[i - 1] + innovations[i]
        shared = shared + ar
        out = np.empty((steps, self.n_features))
        for f in range(self.n_features):
            k = f // 2
            signal = shared[:, k] if f % 2 == 0 else self.gains[k] * shared[:, k]
            out[:, f] = signal + rng.normal(0, 0.08, steps)
        return out * self.scales + self.levels


def inject(fault: str, values: np.ndarray, mask: np.ndarray, start: int, std: np.ndarray,
           rng: np.random.Generator) -> int:
    """Write one ``fault`` at ``start`` into ``values`` and ``mask`` (in place); returns its span."""
    n_features = values.shape[1]
    sign = rng.choice([-1.0, 1.0])
    if fault == "pair_break":
        if n_features < 2:
            raise ConfigError("pair_break needs at least 2 features")
        feature = 2 * int(rng.integers(n_features // 2)) + 1
    else:
        feature = int(rng.integers(n_features))
    span = {"spike": int(rng.integers(1, 4)), "level_shift": int(rng.integers(20, 51))}.get(
        fault, int(rng.integers(30, 61)))
    part = slice(start, start + span)
    column = values[part, feature]
    if fault == "spike":
        column += sign * rng.uniform(4, 6) * std[feature]
    elif fault == "level_shift":
        column += sign * rng.uniform(2, 3) * std[feature]
    elif fault == "drift":
        column += sign * np.linspace(0, rng.uniform(2.5, 4), span) * std[feature]
    elif fault == "frozen":
        column[:] = column[0]
    elif fault == "pair_break":
        column[:] = 2 * values[:, feature].mean() - column
    else:
        raise ConfigError(f"unknown fault {fault!r}. Fix: use one of {', '.join(FAULTS)}")
    mask[part, feature] = True
    return span


def synthetic_series(seed: int = 0, n_features: int = 8, train_steps: int = 8000, prefix: int = 800,
                     per_type: int = 8, gap: int = 250, faults: tuple[str, ...] = FAULTS) -> list[Recording]:
    """The normal training recording, then one test recording per fault type (see the module doc)."""
    if n_features < 2 or train_steps < 200 or per_type < 1 or gap < 100:
        raise ConfigError(f"synthetic series need n_features >= 2, train_steps >= 200, per_type >= 1 and gap >= 100; "
                          f"got {n_features}, {train_steps}, {per_type}, {gap}")
    rng = np.random.default_rng(seed)
    plant = Plant.draw(rng, n_features)
    features = [f"sensor{f}" for f in range(n_features)]
    normal = plant.simulate(train_steps, rng)
    std = normal.std(0)
    recordings = [Recording("normal", normal, features, np.zeros(train_steps, bool), fault="")]
    for fault in faults:
        values = plant.simulate(prefix + per_type * gap, rng)
        mask = np.zeros(values.shape, bool)
        for i in range(per_type):
            start = prefix + i * gap + int(rng.integers(0, gap - 60 - 20))
            inject(fault, values, mask, start, std, rng)
        recordings.append(Recording(fault, values, features, mask=mask, fault=fault))
    return recordings
