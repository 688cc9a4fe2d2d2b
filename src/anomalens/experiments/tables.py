"""Result tables in the papers' layout: one row per normal definition (mean ± std over seeds) and
a final ``mean`` row (mean ± std over the rows), as in the counterfactual paper's tables 5-24."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np


def aggregate(results: Sequence[dict], metrics: Sequence[str], by: str = "normal") -> dict[str, dict[str, tuple]]:
    """{row: {metric: (mean, std, n)}} over the results sharing ``by``, plus the ``mean`` row."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in results:
        groups[str(r[by])].append(r)
    table = {}
    for row, items in groups.items():
        table[row] = {m: (float(np.mean(v)), float(np.std(v)), len(v))
                      for m in metrics if (v := [i[m] for i in items if m in i])}
    row_means = {m: [table[row][m][0] for row in table if m in table[row]] for m in metrics}
    table["mean"] = {m: (float(np.mean(v)), float(np.std(v)), len(v)) for m, v in row_means.items() if v}
    return table


def markdown_table(results: Sequence[dict], metrics: Sequence[str], by: str = "normal",
                   headers: dict[str, str] | None = None, digits: int = 3) -> str:
    """A markdown table: rows = normal definitions + mean, columns = metrics as ``mean ± std``."""
    table = aggregate(results, metrics, by)
    names = [(headers or {}).get(m, m) for m in metrics]
    lines = ["| " + " | ".join([by, *names]) + " |", "|" + "---|" * (len(metrics) + 1)]
    for row, values in table.items():
        cells = [f"{values[m][0]:.{digits}f} ± {values[m][1]:.{digits}f}" if m in values else "" for m in metrics]
        label = f"**{row}**" if row == "mean" else row
        lines.append("| " + " | ".join([label, *cells]) + " |")
    return "\n".join(lines)
