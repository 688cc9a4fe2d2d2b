"""The explainer registry: name -> class, for construction by name, the CLI's ``--method``
choices and the contract tests. A new explainer is one module in ``anomalens/explain/`` with
``@register("name")`` on a class that has ``from_options(name, **options)``, ``fit`` and ``explain``."""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from anomalens.errors import ConfigError

REGISTRY: dict[str, type] = {}


def register(*names: str):
    """Class decorator: make the explainer constructible by each of ``names``."""
    def wrap(cls):
        for name in names:
            REGISTRY[name] = cls
        return cls
    return wrap


def _import_all() -> None:
    import anomalens.explain as package

    for module in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{module.name}")


def names() -> list[str]:
    _import_all()
    return sorted(REGISTRY)


def create(name: str, **options: Any):
    """A new explainer ``name``; ``options`` are the fields of its config (``ConfigError`` for unknown ones)."""
    _import_all()
    if name not in REGISTRY:
        raise ConfigError(f"unknown explanation method {name!r}. Fix: use one of {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name].from_options(name, **options)
