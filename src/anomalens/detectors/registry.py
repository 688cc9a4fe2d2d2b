"""The detector registry: one name -> class table that drives construction by name, the CLI's
choices, ``anomalens list``, loading saved files and the contract tests.

A new detector is one new module in ``anomalens/detectors/`` whose class carries
``@register("name")``; every module of the package is imported on first use of the registry, so
nothing else needs editing.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from anomalens.errors import ConfigError

REGISTRY: dict[str, type] = {}


def register(*names: str):
    """Class decorator: make the class constructible (``create``) and loadable under each of ``names``."""
    def wrap(cls):
        for name in names:
            if name in REGISTRY and REGISTRY[name] is not cls:
                raise ValueError(f"detector name {name!r} is taken by {REGISTRY[name].__name__}")
            REGISTRY[name] = cls
        return cls
    return wrap


def _import_all() -> None:
    import anomalens.detectors as package

    for module in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{module.name}")


def names() -> list[str]:
    """Every registered detector name, sorted."""
    _import_all()
    return sorted(REGISTRY)


def detector_class(name: str) -> type:
    _import_all()
    if name not in REGISTRY:
        raise ConfigError(f"unknown detector {name!r}. Fix: use one of {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]


def create(name: str, image_shape: tuple[int, int, int], **options: Any):
    """A new, untrained detector ``name`` for images ``image_shape``. ``options`` are the train job's
    settings (``net``, ``focal_gamma``, ``architecture``, ``trunk_weights``); each detector takes the
    ones it understands."""
    return detector_class(name).create(name, tuple(image_shape), **options)
