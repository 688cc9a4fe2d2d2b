"""A name -> class table filled by a decorator: what the detector and explainer registries share.

Every module of the registry's package is imported on first use, so a new method is one module
with ``@register("name")`` and nothing else to edit.
"""

from __future__ import annotations

import importlib
import pkgutil

from anomalens.errors import ConfigError


class Registry:
    """``Registry("detector", "anomalens.detectors")``: ``register``, ``names``, ``get``."""

    def __init__(self, kind: str, package: str):
        self.kind, self.package = kind, package
        self.table: dict[str, type] = {}

    def register(self, *names: str):
        """Class decorator: make the class available under each of ``names``."""
        def wrap(cls):
            for name in names:
                if name in self.table and self.table[name] is not cls:
                    raise ValueError(f"{self.kind} name {name!r} is taken by {self.table[name].__name__}")
                self.table[name] = cls
            return cls
        return wrap

    def _import_all(self) -> None:
        package = importlib.import_module(self.package)
        for module in pkgutil.iter_modules(package.__path__):
            importlib.import_module(f"{self.package}.{module.name}")

    def names(self) -> list[str]:
        """Every registered name, sorted."""
        self._import_all()
        return sorted(self.table)

    def get(self, name: str) -> type:
        self._import_all()
        if name not in self.table:
            raise ConfigError(f"unknown {self.kind} {name!r}. Fix: use one of {', '.join(sorted(self.table))}")
        return self.table[name]
