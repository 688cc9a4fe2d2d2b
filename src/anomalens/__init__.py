"""anomalens: detect anomalies in images and explain them.

The public API: build a task (``build_scenario``), a detector by name (``create_detector``, or
``Detector.load``), an explainer by name (``create_explainer``); every explainer answers with an
``Explanation``. Heavy modules are imported on first use, so ``import anomalens`` stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "ADData": "anomalens.data.addata",
    "build_scenario": ("anomalens.data.scenarios", "build"),
    "Detector": "anomalens.detectors.base",
    "TrainConfig": "anomalens.detectors.training",
    "create_detector": ("anomalens.detectors.registry", "create"),
    "detector_names": ("anomalens.detectors.registry", "names"),
    "Explainer": "anomalens.explain.base",
    "Explanation": "anomalens.explain.base",
    "create_explainer": ("anomalens.explain.registry", "create"),
    "explainer_names": ("anomalens.explain.registry", "names"),
    "CounterfactualExplainer": "anomalens.explain.counterfactual",
    "CEConfig": "anomalens.explain.counterfactual",
    "HeatmapExplainer": "anomalens.explain.heatmap",
    "RepairExplainer": "anomalens.explain.repair",
    "RepairConfig": "anomalens.explain.repair",
    "AnomalensError": "anomalens.errors",
    "resolve_device": "anomalens.device",
    "setup_logging": "anomalens.logs",
}
__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'anomalens' has no attribute {name!r}")
    target = _EXPORTS[name]
    module, attribute = target if isinstance(target, tuple) else (target, name)
    return getattr(importlib.import_module(module), attribute)
