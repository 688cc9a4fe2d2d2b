"""The detector registry: one name -> class table that drives construction by name, the CLI's
choices, ``anomalens list``, loading saved files and the contract tests.

A new detector is one new module in ``anomalens/detectors/`` whose class carries
``@register("name")`` and a ``create(name, image_shape, **options)`` classmethod.
"""

from __future__ import annotations

from typing import Any

from anomalens.registry import Registry

_DETECTORS = Registry("detector", "anomalens.detectors")
REGISTRY = _DETECTORS.table
register = _DETECTORS.register
names = _DETECTORS.names
detector_class = _DETECTORS.get


def create(name: str, image_shape: tuple[int, int, int], **options: Any):
    """A new, untrained detector ``name`` for images ``image_shape``. ``options`` are the train job's
    settings (``net``, ``focal_gamma``, ``architecture``, ``trunk_weights``); each detector takes the
    ones it understands."""
    return detector_class(name).create(name, tuple(image_shape), **options)
