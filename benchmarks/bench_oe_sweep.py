"""OE-size sweep (OE paper, Figure 3): BCE vs HSC with 1, 2, 4, ..., 1024 and all OE images.

Usage: python benchmarks/bench_oe_sweep.py [--datasets mnist,fmnist] [--classes 0,4,8] [--epochs 10]

The paper finds that on (Fashion-)MNIST the amount of OE barely matters for HSC while BCE needs
much OE. Writes benchmarks/results/oe_sweep.json (resumable), oe_sweep.md and oe_sweep.png.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

import numpy as np
from bench_detection import RESULTS, SUITES, machine, run_one

from anomalens.report.plots import line_plot

SIZES = [2 ** k for k in range(11)] + [None]  # None = the whole OE set


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="mnist,fmnist")
    parser.add_argument("--methods", default="bce,hsc")
    parser.add_argument("--classes", default="0,4,8")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--report-only", action="store_true", help="write the table and plot from finished runs")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "oe_sweep.json"
    results = json.loads(path.read_text()) if path.exists() else []
    done = {(r["suite"], r["method"], r["normal"], r["oe_size"]) for r in results}
    todo = [(s, m, int(c), n) for s in args.datasets.split(",") for m in args.methods.split(",")
            for c in args.classes.split(",") for n in SIZES if (s, m, int(c), n) not in done]
    if args.report_only:
        todo = []
    print(f"OE sweep: {len(todo)} runs to do on {machine()}", flush=True)
    started = time.perf_counter()
    for i, (suite, method, normal, size) in enumerate(todo):
        job = replace(SUITES[suite]["job"], detector=method, normal=str(normal), oe_size=size, epochs=args.epochs,
                      milestones=(int(args.epochs * 0.75),))
        result = run_one(job)
        results.append({"suite": suite, "method": method, "normal": normal, "oe_size": size, **result})
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(results, indent=1))
        tmp.replace(path)
        eta = (time.perf_counter() - started) / (i + 1) * (len(todo) - i - 1)
        print(f"[{i + 1}/{len(todo)}] {suite} {method} normal={normal} oe={size or 'all'}: "
              f"AuROC {result['ad_auroc']:.4f} ({result['train_seconds']:.0f}s) | ETA {eta / 60:.1f} min", flush=True)

    labels = [str(s) if s else "all" for s in SIZES]
    x = [s or 2 ** 12 for s in SIZES]  # "all" plotted at 4096 on the log axis
    lines = ["# OE-size sweep\n", f"Machine: {machine()}. Epochs per run: {args.epochs}. "
             f"Classes: {args.classes}. Mean AuROC over the classes (n = runs per cell).\n",
             "| dataset | method | " + " | ".join(labels) + " |", "|---|---|" + "---|" * len(SIZES)]
    series, errors = {}, {}
    for suite in args.datasets.split(","):
        for method in args.methods.split(","):
            means, stds = [], []
            for size in SIZES:
                v = [r["ad_auroc"] for r in results
                     if r["suite"] == suite and r["method"] == method and r["oe_size"] == size]
                means.append(float(np.mean(v)) if v else float("nan"))
                stds.append(float(np.std(v)) if v else 0.0)
            series[f"{suite} {method}"], errors[f"{suite} {method}"] = means, stds
            counts = [sum(r["suite"] == suite and r["method"] == method and r["oe_size"] == size for r in results)
                      for size in SIZES]
            lines.append(f"| {suite} | {method} | " + " | ".join(f"{m:.3f} (n={n})" if n else "-"
                                                             for m, n in zip(means, counts)) + " |")
    (RESULTS / "oe_sweep.md").write_text("\n".join(lines) + "\n")
    line_plot(RESULTS / "oe_sweep.png", x, series, "number of OE samples (rightmost: all)", "mean AuROC",
              "BCE vs HSC when varying the OE size", log_x=True, errors=errors)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
