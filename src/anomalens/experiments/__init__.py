"""Experiments: single training runs, the papers' scenario grids and their result tables."""
