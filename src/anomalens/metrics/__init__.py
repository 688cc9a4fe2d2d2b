"""Metrics with the flat snake_case names of DESIGN.md (ad_auroc, score_distance, ...)."""
