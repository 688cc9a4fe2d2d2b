"""Multivariate time series as anomaly-detection tasks: recordings, sliding windows, normalisation.

A *recording* is one file of sensor readings (steps x features) with optional per-step labels and,
where known, per-feature ground truth. Detectors and explainers see a window of T steps as a
one-channel image (1, F, T): a row per feature, a column per step. This one choice lets everything
built for images work on windows unchanged: the feature scores alpha and thresholds tau are (F, T),
so the repaired region omega marks features *and* steps, the guided in-filling pastes the original
back outside it, and the property metrics and the detectors' contract are the same code.

How a task is cut from recordings (``series_task``), so that no test step is ever trained on:

- a recording without anomalies (SKAB's anomaly-free file, a user's normal log) is training data;
- a recording with labelled anomalies gives the first ``train_fraction`` of its normal prefix (the
  steps before the first anomaly) to training and the rest to the test set;
- training windows lie inside the training parts, test windows inside the test parts, never across
  two recordings; a window is anomalous when any of its steps is;
- the per-feature normalisation (z-scores) is fitted on training steps only: by default each
  recording's own normal training steps (``normalise="recording"``: test benches and plants run at
  different operating points from one run to the next, SKAB's flow rate is 32 in one experiment and
  122 in another, and a global scale would flag whole runs; measured on SKAB with ``series_ae``,
  AuROC 0.57 global vs 0.81 per recording); recordings with fewer normal training steps than a
  window, and every recording with ``normalise="global"``, use the statistics of all training steps.

Values stay in normalised units (not [0, 1] like images): an anomaly is free to lie far outside the
normal range, and ``SeriesData.denormalise`` gives sensor units back for plots.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from anomalens.data.addata import ADData
from anomalens.errors import ConfigError, DataFormatError, ScenarioError

log = logging.getLogger(__name__)

DEFAULT_WINDOW = 100  # AR-Pro's windows (sec. 4)
NORMALISATIONS = ("recording", "global")


@dataclass
class Recording:
    """One multivariate recording: ``values`` (steps, F) in sensor units; ``labels`` (steps,) 1 where a
    step is anomalous; ``mask`` (steps, F) the anomalous features of each step, where known; ``fault``
    the kind of anomaly the recording holds (a SKAB fault, a synthetic anomaly type)."""

    name: str
    values: np.ndarray
    features: list[str]
    labels: np.ndarray | None = None
    mask: np.ndarray | None = None
    fault: str = ""
    source: str | Path | None = None

    def __post_init__(self) -> None:
        self.values = np.asarray(self.values, dtype=np.float64)
        if self.values.ndim != 2 or self.values.shape[1] != len(self.features):
            raise ValueError(f"{self.name}: values must be (steps, {len(self.features)} features), "
                             f"got {self.values.shape}")
        if self.labels is not None:
            self.labels = np.asarray(self.labels).astype(bool)
            if self.labels.shape != (len(self.values),):
                raise ValueError(f"{self.name}: {len(self.labels)} labels for {len(self.values)} steps")
        if self.mask is not None:
            self.mask = np.asarray(self.mask).astype(bool)
            if self.mask.shape != self.values.shape:
                raise ValueError(f"{self.name}: mask {self.mask.shape} differs from values {self.values.shape}")
            if self.labels is None:
                self.labels = self.mask.any(1)

    @property
    def anomalous(self) -> bool:
        return self.labels is not None and bool(self.labels.any())


@dataclass
class Normalizer:
    """Per-feature z-scores, fitted on normal steps only (anomalies must not shift the scale)."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, values: np.ndarray, features: Sequence[str]) -> Normalizer:
        mean, std = values.mean(0), values.std(0)
        flat = std < 1e-8 * np.maximum(1.0, np.abs(mean))
        if flat.any():  # a constant sensor: keep it (an anomaly may move it) but do not divide by zero
            log.warning(f"features {[features[i] for i in np.flatnonzero(flat)]} are constant in the normal "
                        "training data; they are centred but not scaled")
            std = np.where(flat, 1.0, std)
        return cls(mean, std)

    def __call__(self, values: np.ndarray) -> np.ndarray:
        return (values - self.mean) / self.std


@dataclass
class SeriesData(ADData):
    """An ``ADData`` whose samples are windows (N, 1, F, T) of normalised values (see the module doc).

    ``test_masks`` (N, F, T) is the per-feature ground truth where known (the synthetic series), else
    None; ``test_step_labels`` (N, T) the per-step labels; ``test_attrs`` holds ``fault`` (index into
    ``fault_names``, -1 for normal windows), ``recording`` (index into ``recording_names``) and
    ``start`` (first step of the window in its recording). ``norm_mean`` and ``norm_std`` (R, F) are the
    normalisation of each recording."""

    feature_names: list[str] = field(default_factory=list)
    test_step_labels: Tensor | None = None
    norm_mean: Tensor | None = None
    norm_std: Tensor | None = None
    fault_names: list[str] = field(default_factory=list)
    recording_names: list[str] = field(default_factory=list)
    stride: int = 1

    @property
    def n_features(self) -> int:
        return self.image_shape[1]

    @property
    def window(self) -> int:
        return self.image_shape[2]

    def denormalise(self, x: Tensor, recording: Tensor | int = 0) -> Tensor:
        """Windows (N, F, T) of recording(s) ``recording`` (an index, or (N,) indices) in sensor units."""
        if self.norm_mean is None or self.norm_std is None:
            return x
        index = torch.as_tensor(recording).long()
        mean, std = self.norm_mean[index].to(x), self.norm_std[index].to(x)
        return x * std[..., :, None] + mean[..., :, None]

    def summary(self) -> dict[str, object]:
        out = super().summary()
        out.update(features=list(self.feature_names), window=self.window, stride=self.stride,
                   faults=list(self.fault_names), recordings=len(self.recording_names))
        return out

    def to(self, device: torch.device | str) -> SeriesData:
        moved = {f.name: getattr(self, f.name) for f in fields(self)}
        moved = {k: (v.to(device) if isinstance(v, Tensor) else v) for k, v in moved.items()}
        moved["test_attrs"] = {k: v.to(device) for k, v in self.test_attrs.items()}
        return SeriesData(**moved)


def window_starts(steps: int, window: int, stride: int, begin: int = 0) -> np.ndarray:
    """First steps of the windows of length ``window`` every ``stride`` steps inside [begin, steps)."""
    return np.arange(begin, steps - window + 1, stride, dtype=np.int64)


def _cut(array: np.ndarray, starts: np.ndarray, window: int) -> np.ndarray:
    """(steps, ...) -> (N, window, ...) windows at ``starts``."""
    return np.stack([array[s:s + window] for s in starts]) if len(starts) else array[:0, None].repeat(window, 1)


def series_task(recordings: Sequence[Recording], window: int = DEFAULT_WINDOW, stride: int = 10,
                train_fraction: float = 0.5, normalise: str = "recording", name: str = "") -> SeriesData:
    """Windows of ``recordings`` as an anomaly-detection task (the split rule is in the module doc)."""
    if window < 4 or stride < 1:
        raise ConfigError(f"window must be >= 4 and stride >= 1, got {window} and {stride}. Fix: e.g. window 100")
    if normalise not in NORMALISATIONS:
        raise ConfigError(f"normalise must be one of {NORMALISATIONS}, got {normalise!r}")
    if not 0 < train_fraction < 1:
        raise ConfigError(f"train_fraction must lie in (0, 1), got {train_fraction}")
    if not recordings:
        raise ScenarioError(f"{name}: no recordings to build a task from")
    features = recordings[0].features
    for rec in recordings:
        if rec.features != features:
            raise DataFormatError(rec.source or rec.name, f"features {rec.features} differ from {features} of "
                                  f"{recordings[0].name}", "give every file the same feature columns")
    train_parts, test_parts = [], []
    for rec in recordings:
        if not rec.anomalous:
            train_parts.append((rec, len(rec.values)))
            continue
        split = int(train_fraction * int(np.argmax(rec.labels)))
        if split >= window:
            train_parts.append((rec, split))
        test_parts.append((rec, split))
    if not test_parts:
        raise ScenarioError(f"{name}: no recording has labelled anomalies, so there is nothing to test on. Fix: give "
                            "the files a label column (1 = anomalous step) and name it (label_column)")
    normal_steps = np.concatenate([rec.values[:end] for rec, end in train_parts]) if train_parts else None
    if normal_steps is None or len(normal_steps) < window:
        raise ScenarioError(f"{name}: fewer than {window} normal training steps. Fix: add an anomaly-free recording, "
                            "lower the window or raise train_fraction")
    pooled = Normalizer.fit(normal_steps, features)
    ends = {id(rec): end for rec, end in train_parts}
    norms = [Normalizer.fit(rec.values[:ends[id(rec)]], features)
             if normalise == "recording" and ends.get(id(rec), 0) >= window else pooled for rec in recordings]
    norm_of = {id(rec): n for rec, n in zip(recordings, norms)}

    def norm(rec: Recording) -> np.ndarray:
        return norm_of[id(rec)](rec.values)

    train = [_cut(norm(rec), window_starts(end, window, stride), window) for rec, end in train_parts]
    x_train = np.concatenate(train)
    if not len(x_train):
        raise ScenarioError(f"{name}: no training window of {window} steps fits the normal parts. "
                            "Fix: lower the window")

    faults = sorted({rec.fault for rec, _ in test_parts})
    xs, ys, steps, masks, attrs = [], [], [], [], {"fault": [], "recording": [], "start": []}
    names = [rec.name for rec in recordings]
    index = {id(rec): i for i, rec in enumerate(recordings)}
    for rec, split in test_parts:
        starts = window_starts(len(rec.values), window, stride, split)
        if not len(starts):
            log.warning(f"{rec.name}: its test part ({len(rec.values) - split} steps) is shorter than a window")
            continue
        labels = _cut(rec.labels, starts, window)
        xs.append(_cut(norm(rec), starts, window))
        steps.append(labels)
        ys.append(labels.any(1))
        masks.append(_cut(rec.mask, starts, window) if rec.mask is not None else None)
        attrs["fault"].append(np.where(labels.any(1), faults.index(rec.fault), -1))
        attrs["recording"].append(np.full(len(starts), index[id(rec)]))
        attrs["start"].append(starts)
    if not xs:
        raise ScenarioError(f"{name}: no test window of {window} steps fits the labelled recordings' test parts. "
                            "Fix: lower the window or train_fraction")
    x_test, y_test = np.concatenate(xs), np.concatenate(ys)
    if y_test.all() or not y_test.any():
        raise ScenarioError(f"{name}: the test windows are all {'anomalous' if y_test.all() else 'normal'}; AuROC "
                            "needs both. Fix: lower train_fraction or the window, or label the anomalies")

    def windows(a: np.ndarray) -> Tensor:  # (N, T, F) -> (N, 1, F, T)
        return torch.from_numpy(np.ascontiguousarray(a.transpose(0, 2, 1), dtype=np.float32))[:, None]

    test_masks = None
    if all(m is not None for m in masks):
        test_masks = torch.from_numpy(np.concatenate(masks).transpose(0, 2, 1).astype(np.float32))
    return SeriesData(
        train_normal=windows(x_train), test_x=windows(x_test), test_y=torch.from_numpy(y_test.astype(np.int64)),
        test_masks=test_masks, test_attrs={k: torch.from_numpy(np.concatenate(v).astype(np.int64))
                                           for k, v in attrs.items()},
        name=name, normal_description=f"normal operation ({len(train_parts)} recordings' normal steps)",
        feature_names=list(features), test_step_labels=torch.from_numpy(np.concatenate(steps).astype(np.int64)),
        norm_mean=torch.from_numpy(np.stack([n.mean for n in norms])).float(),
        norm_std=torch.from_numpy(np.stack([n.std for n in norms])).float(),
        fault_names=faults, recording_names=names, stride=stride)


def recordings_summary(recordings: Sequence[Recording]) -> dict[str, int]:
    """Normal steps and anomalous steps per fault type, for ``anomalens data info``."""
    steps: dict[str, int] = {"normal steps": 0}
    for rec in recordings:
        labels = rec.labels if rec.labels is not None else np.zeros(len(rec.values), bool)
        steps["normal steps"] += int((~labels).sum())
        if labels.any():
            key = f"{rec.fault or 'anomalous'} steps"
            steps[key] = steps.get(key, 0) + int(labels.sum())
    return steps
