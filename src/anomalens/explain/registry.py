"""The explainer registry: name -> class, for construction by name, the CLI's ``--method``
choices and the contract tests. A new explainer is one module in ``anomalens/explain/`` with
``@register("name")`` on a class that has ``from_options(name, **options)``, ``fit`` and ``explain``."""

from __future__ import annotations

from typing import Any

from anomalens.registry import Registry

_EXPLAINERS = Registry("explanation method", "anomalens.explain")
REGISTRY = _EXPLAINERS.table
register = _EXPLAINERS.register
names = _EXPLAINERS.names


def create(name: str, **options: Any):
    """A new explainer ``name``; ``options`` are the fields of its config (``ConfigError`` for unknown ones)."""
    return _EXPLAINERS.get(name).from_options(name, **options)
