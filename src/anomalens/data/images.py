"""``LabeledImages``: the one in-memory form every reader and the catalog return.

Readers differ in what they parse, not in what they hand back: uint8 images in NHWC layout,
integer labels and the class names. Scenarios turn these into float tensors (``to_tensor``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass
class LabeledImages:
    """A set of images with class labels.

    images: (N, H, W, C) uint8, C in {1, 3}. labels: (N,) int64 class indices into ``class_names``.
    attrs: extra per-image factors (e.g. ``colour`` or ``font`` of synthetic glyphs), each (N,).
    """

    images: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    name: str = ""
    attrs: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.images.ndim == 3:  # grayscale without channel axis
            self.images = self.images[..., None]
        if self.images.ndim != 4 or self.images.shape[-1] not in (1, 3):
            raise ValueError(f"{self.name or 'images'}: expected (N, H, W, 1|3), got {self.images.shape}")
        if self.images.dtype != np.uint8:
            raise ValueError(f"{self.name or 'images'}: expected uint8 pixels, got {self.images.dtype}")
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if len(self.labels) != len(self.images):
            raise ValueError(
                f"{self.name or 'images'}: {len(self.images)} images but {len(self.labels)} labels"
            )
        for key, values in self.attrs.items():
            if len(values) != len(self.images):
                raise ValueError(f"{self.name or 'images'}: attr {key!r} has {len(values)} values")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, C) of every image."""
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    def class_counts(self) -> dict[str, int]:
        counts = np.bincount(self.labels, minlength=len(self.class_names))
        return {name: int(c) for name, c in zip(self.class_names, counts)}

    def subset(self, index: np.ndarray) -> LabeledImages:
        """The images at ``index`` (boolean mask or integer indices), attrs included."""
        return LabeledImages(
            self.images[index],
            self.labels[index],
            self.class_names,
            self.name,
            {k: v[index] for k, v in self.attrs.items()},
        )


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 NHWC -> float32 NCHW in [0, 1], the layout every detector and explainer takes."""
    if images.ndim == 3:
        images = images[..., None]
    return torch.from_numpy(images.transpose(0, 3, 1, 2).copy()).float().div_(255.0)  # copy: inputs may be read-only


@dataclass
class DefectImages:
    """An industrial-inspection set (MVTec-AD layout): defect-free training images and a test set
    of good and defective images with pixel masks.

    train: (N, H, W, C) uint8. test: (M, H, W, C) uint8. test_labels: (M,) 0 good / 1 defect.
    test_defect_type: (M,) str ('good' or the defect name). test_masks: (M, H, W) uint8 in {0, 1}.
    """

    train: np.ndarray
    test: np.ndarray
    test_labels: np.ndarray
    test_defect_type: np.ndarray
    test_masks: np.ndarray
    name: str = ""

    def __post_init__(self) -> None:
        if self.train.ndim == 3:
            self.train = self.train[..., None]
        if self.test.ndim == 3:
            self.test = self.test[..., None]
        n = len(self.test)
        if not (len(self.test_labels) == len(self.test_defect_type) == len(self.test_masks) == n):
            raise ValueError(f"{self.name}: test arrays disagree in length")
        if self.test_masks.shape[1:] != self.test.shape[1:3]:
            raise ValueError(f"{self.name}: masks {self.test_masks.shape} do not match images {self.test.shape}")

    def defect_counts(self) -> dict[str, int]:
        types, counts = np.unique(self.test_defect_type, return_counts=True)
        return {str(t): int(c) for t, c in zip(types, counts)}
