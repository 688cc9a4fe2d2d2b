"""Explainers: they see a detector only through its interface (score, raw_score, anomaly_map,
decompose), share the `Explainer`/`Explanation` interface and are listed in `explain.registry`."""
