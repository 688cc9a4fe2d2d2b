"""Explainers: they see a detector only through its interface (score, raw_score, anomaly_map)."""
