"""Data layer: file readers, dataset catalog, downloads, scenarios and built-in synthetic data."""
