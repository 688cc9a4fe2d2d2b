"""The CE paper's figures (appendix G, tables 5, 6, 11 and 12; means over 4 seeds) for the setups we
can reproduce, so that reports show the paper's number beside ours where the setup matches.

Keys: (dataset, colored, detector, normal) with normal as written in the run's config.
Columns: ad_auroc, score_distance, cf_auroc, sub_auroc, fid_n, concept_acc.
"""

from __future__ import annotations

COLUMNS = ("ad_auroc", "score_distance", "cf_auroc", "sub_auroc", "fid_n", "concept_acc")

_MNIST_BCE = {  # table 5
    "0": (0.99, 0.78, 0.76, 0.93, 0.42, 0.97), "1": (1.00, 0.87, 0.66, 0.97, 0.47, 0.99),
    "2": (0.97, 0.69, 0.75, 0.85, 0.56, 0.87), "3": (0.99, 0.67, 0.77, 0.94, 0.33, 0.89),
    "4": (0.97, 0.75, 0.70, 0.88, 0.48, 0.91), "5": (0.97, 0.65, 0.66, 0.84, 0.44, 0.98),
    "6": (1.00, 0.90, 0.71, 0.98, 0.33, 0.96), "7": (0.96, 0.71, 0.70, 0.92, 0.50, 0.96),
    "8": (0.95, 0.54, 0.72, 0.87, 0.31, 0.94), "9": (0.96, 0.60, 0.77, 0.94, 0.47, 0.97),
}
_MNIST_HSC = {  # table 6
    "0": (0.99, 0.81, 0.84, 0.91, 0.58, 0.98), "1": (1.00, 0.89, 0.88, 0.95, 0.60, 0.90),
    "2": (0.98, 0.72, 0.77, 0.77, 0.80, 0.92), "3": (0.98, 0.67, 0.82, 0.85, 0.48, 0.83),
    "4": (0.96, 0.73, 0.80, 0.84, 0.83, 0.81), "5": (0.96, 0.62, 0.83, 0.70, 0.77, 0.92),
    "6": (1.00, 0.88, 0.77, 0.98, 0.84, 0.95), "7": (0.97, 0.71, 0.70, 0.92, 0.52, 0.91),
    "8": (0.95, 0.52, 0.89, 0.73, 0.88, 0.94), "9": (0.97, 0.59, 0.80, 0.92, 0.53, 0.91),
}
PAPER: dict[tuple[str, bool, str, str], tuple[float, ...]] = {
    **{("mnist", False, "bce", k): v for k, v in _MNIST_BCE.items()},
    **{("mnist", False, "hsc", k): v for k, v in _MNIST_HSC.items()},
    ("mnist", True, "bce", "red or one"): (0.98, 0.42, 0.54, 0.83, 0.69, 1.00),  # table 11, red+one
    ("mnist", True, "hsc", "red or one"): (0.98, 0.60, 0.57, 0.78, 0.93, 1.00),  # table 12, red+one
}


def paper_figures(dataset: str, colored: bool, detector: str, normal: str | int) -> dict[str, float] | None:
    """The paper's means for this setup, or None when the paper has no matching row."""
    rule = " ".join(str(normal).lower().replace("+", " or ").split())
    row = PAPER.get((dataset, colored, detector, rule))
    return dict(zip(COLUMNS, row)) if row else None
