"""``ADData``: what a scenario hands to detectors and explainers (see DESIGN.md)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from anomalens.errors import DataFormatError


@dataclass
class ADData:
    """An anomaly-detection task: training data of the kinds a method may use, and a labelled test set.

    Images are float32 NCHW in [0, 1]. ``test_y`` is 1 for anomalies, 0 for normal samples.
    ``test_attrs`` keeps the ground-truth factors (e.g. ``label``, ``colour``) of every test image
    so that explanations can be checked against what really makes a sample anomalous.
    """

    train_normal: Tensor
    test_x: Tensor
    test_y: Tensor
    train_oe: Tensor | None = None
    train_anomalies: Tensor | None = None
    train_anomaly_masks: Tensor | None = None
    test_masks: Tensor | None = None
    test_attrs: dict[str, Tensor] = field(default_factory=dict)
    name: str = ""
    normal_description: str = ""

    def __post_init__(self) -> None:
        shape = tuple(self.train_normal.shape[1:])
        for key in ("test_x", "train_oe", "train_anomalies"):
            value = getattr(self, key)
            if value is not None and tuple(value.shape[1:]) != shape:
                raise ValueError(f"{self.name}: {key} has image shape {tuple(value.shape[1:])}, "
                                 f"train_normal has {shape}")
        if len(self.test_y) != len(self.test_x):
            raise ValueError(f"{self.name}: {len(self.test_x)} test images but {len(self.test_y)} labels")
        for key, values in self.test_attrs.items():
            if len(values) != len(self.test_x):
                raise ValueError(f"{self.name}: test_attrs[{key!r}] has {len(values)} values")
        for key in ("train_normal", "test_x", "train_oe", "train_anomalies"):
            value = getattr(self, key)
            if value is not None and value.is_floating_point() and not bool(torch.isfinite(value).all()):
                bad = int((~torch.isfinite(value)).sum())
                raise DataFormatError(self.name or None, f"{key} holds {bad} NaN or infinite values, which would "
                                      "make training diverge", "clean or drop those images before building the task")

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of every image in the task."""
        return tuple(self.train_normal.shape[1:])  # type: ignore[return-value]

    def summary(self) -> dict[str, object]:
        """Counts and shapes, for printing and for a run's metadata."""
        def count(t: Tensor | None) -> int:
            return 0 if t is None else len(t)

        return {
            "name": self.name,
            "normal": self.normal_description,
            "image_shape": list(self.image_shape),
            "train_normal": count(self.train_normal),
            "train_oe": count(self.train_oe),
            "train_anomalies": count(self.train_anomalies),
            "test_normal": int((self.test_y == 0).sum()),
            "test_anomalies": int((self.test_y == 1).sum()),
            "test_masks": self.test_masks is not None,
            "test_attrs": sorted(self.test_attrs),
        }

    def to(self, device: torch.device | str) -> ADData:
        """A copy with every tensor on ``device``."""
        moved = {k: (v.to(device) if isinstance(v, Tensor) else v) for k, v in self.__dict__.items()}
        moved["test_attrs"] = {k: v.to(device) for k, v in self.test_attrs.items()}
        return ADData(**moved)
