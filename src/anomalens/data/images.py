"""``LabeledImages``: the one in-memory form every reader and the catalog return.

Readers differ in what they parse, not in what they hand back: uint8 images in NHWC layout,
integer labels and the class names. Scenarios turn these into float tensors (``to_tensor``).

Pixels and labels are checked here, once for every reader: a NaN pixel, a value above 255 or a
label outside the class range would otherwise be cast silently (NaN -> 0, 300 -> 44, label -1 ->
the last class) and poison training without any visible error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from anomalens.errors import DataFormatError

_PIXEL_FIX = "store pixels as uint8 in 0..255 (for floats in [0, 1]: np.round(x * 255).astype(np.uint8))"


def _first_bad(values: np.ndarray, bad: np.ndarray) -> str:
    """'3 bad, the first 300 at index (1, 5)': how many values are wrong, and where to look."""
    index = np.unravel_index(int(np.argmax(bad)), bad.shape)
    where = index[0] if len(index) == 1 else tuple(int(i) for i in index)
    return f"{int(bad.sum())} bad, the first {values[index].item()!r} at index {where}"


def as_uint8(values: np.ndarray, source: str | Path | None, what: str = "pixel values") -> np.ndarray:
    """``values`` as uint8, refusing anything a cast would change (NaN, inf, fractions, < 0, > 255).

    uint8 input is returned as is; other numeric arrays are converted only when the cast is exact.
    """
    values = np.asarray(values)
    if values.dtype == np.uint8:
        return values
    if values.dtype == bool or not np.issubdtype(values.dtype, np.number):
        raise DataFormatError(source, f"{what} have dtype {values.dtype}, expected numbers", _PIXEL_FIX)
    if np.issubdtype(values.dtype, np.floating):
        bad = ~np.isfinite(values)
        if bad.any():
            raise DataFormatError(source, f"{what} contain NaN or infinity ({_first_bad(values, bad)})",
                                  "replace the missing pixels or drop those images; " + _PIXEL_FIX)
        fraction = values != np.round(values)
        if fraction.any():
            raise DataFormatError(source, f"{what} are not whole numbers ({_first_bad(values, fraction)})",
                                  _PIXEL_FIX)
    bad = (values < 0) | (values > 255)
    if bad.any():
        raise DataFormatError(source, f"{what} lie outside 0..255 ({_first_bad(values, bad)})", _PIXEL_FIX)
    return values.astype(np.uint8)


def check_labels(labels: np.ndarray, n_classes: int, source: str | Path | None) -> np.ndarray:
    """``labels`` as int64 class indices in ``0..n_classes - 1``; anything else names the value at fault."""
    labels = np.asarray(labels)
    if np.issubdtype(labels.dtype, np.floating):
        bad = ~np.isfinite(labels) | (labels != np.round(np.nan_to_num(labels)))
        if bad.any():
            raise DataFormatError(source, f"labels are not whole numbers ({_first_bad(labels, bad)})",
                                  "store labels as integer class indices")
    elif not np.issubdtype(labels.dtype, np.integer):
        raise DataFormatError(source, f"labels have dtype {labels.dtype}, expected integers",
                              "store labels as integer class indices")
    bad = (labels < 0) | (labels >= n_classes)
    if bad.any():
        raise DataFormatError(source, f"labels outside the class range 0..{n_classes - 1} "
                              f"({_first_bad(labels, bad)})",
                              f"fix or drop those samples; this dataset has {n_classes} classes")
    return labels.astype(np.int64)


@dataclass
class LabeledImages:
    """A set of images with class labels.

    images: (N, H, W, C) uint8, C in {1, 3}. labels: (N,) int64 class indices into ``class_names``.
    attrs: extra per-image factors (e.g. ``colour`` or ``font`` of synthetic glyphs), each (N,).
    source: the file the arrays were read from, named in errors (defaults to ``name``).
    Other integer or float pixel arrays are accepted only when casting them to uint8 is exact
    (``as_uint8``); labels must lie in ``0..len(class_names) - 1`` (``DataFormatError`` otherwise).
    """

    images: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    name: str = ""
    attrs: dict[str, np.ndarray] = field(default_factory=dict)
    source: str | Path | None = None

    def __post_init__(self) -> None:
        where = self.source or self.name or None
        self.images = np.asarray(self.images)
        if self.images.ndim == 3:  # grayscale without channel axis
            self.images = self.images[..., None]
        if self.images.ndim != 4 or self.images.shape[-1] not in (1, 3):
            raise DataFormatError(where, f"expected images of shape (N, H, W, 1|3), got {self.images.shape}",
                                  "store images as NHWC arrays with 1 or 3 channels")
        self.images = as_uint8(self.images, where)
        self.labels = check_labels(self.labels, len(self.class_names), where)
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
            self.source,
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
    source: str | Path | None = None  # the file named in errors (defaults to name)

    def __post_init__(self) -> None:
        where = self.source or self.name or None
        self.train, self.test = as_uint8(self.train, where), as_uint8(self.test, where)
        if self.train.ndim == 3:
            self.train = self.train[..., None]
        if self.test.ndim == 3:
            self.test = self.test[..., None]
        self.test_labels = check_labels(self.test_labels, 2, where)
        n = len(self.test)
        if not (len(self.test_labels) == len(self.test_defect_type) == len(self.test_masks) == n):
            raise ValueError(f"{self.name}: test arrays disagree in length")
        if self.test_masks.shape[1:] != self.test.shape[1:3]:
            raise ValueError(f"{self.name}: masks {self.test_masks.shape} do not match images {self.test.shape}")

    def defect_counts(self) -> dict[str, int]:
        types, counts = np.unique(self.test_defect_type, return_counts=True)
        return {str(t): int(c) for t, c in zip(types, counts)}
