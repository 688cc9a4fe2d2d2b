"""Reports: image grids, plots and per-run summaries."""
