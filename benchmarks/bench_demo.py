"""The demo's targets (issue 12, section 5), measured the way a new user meets them: ``anomalens demo``
with its defaults, in a fresh folder, timed end to end.

Usage: python benchmarks/bench_demo.py [--out DIR] [--steps N] [--seeds 0 1 2] [--threads 2]

Targets: oracle validity >= 0.80, concept accuracy >= 0.95, each concept changing a different factor
(concept 1 the colour, concept 2 the digit, per ``oracle_factor_changes``), whole demo <= 5 minutes on
two idle cores. Prints one Markdown row per seed and writes ``results/demo.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import torch
from common import RESULTS, machine

from anomalens.demo import DemoConfig, run_demo

TARGETS = {"oracle_validity": 0.80, "concept_acc": 0.95, "minutes": 5.0}


def distinct_factors(changes: dict[str, dict[str, float]]) -> bool:
    """True when the concepts' most-changed factors differ (e.g. concept 1: colour, concept 2: digit)."""
    top = [max(factors, key=factors.get) for factors in changes.values() if factors]
    return len(top) == len(set(top)) and len(top) > 1


def measure(out: Path, seed: int, steps: int | None) -> dict:
    config = DemoConfig(seed=seed) if steps is None else DemoConfig(seed=seed, explainer_steps=steps)
    started = time.perf_counter()
    metrics = run_demo(out, config)
    minutes = (time.perf_counter() - started) / 60
    cf = metrics["counterfactual"]
    changes = cf.get("oracle_factor_changes", {})
    return {"seed": seed, "steps": config.explainer_steps, "minutes": minutes, "ad_auroc": metrics["bce"]["ad_auroc"],
            **{k: cf.get(k) for k in ("oracle_validity", "concept_acc", "cf_auroc", "fid_n")},
            "factor_changes": changes, "distinct_factors": distinct_factors(changes)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="keep the demo folders here (default: a temporary folder)")
    parser.add_argument("--steps", type=int, help="explainer steps (default: the demo's own)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    root = args.out or Path(tempfile.mkdtemp(prefix="bench_demo_"))
    rows = []
    try:
        for seed in args.seeds:
            row = measure(root / f"demo_s{seed}", seed, args.steps)
            rows.append(row)
            met = (row["oracle_validity"] >= TARGETS["oracle_validity"] and row["concept_acc"] >= TARGETS["concept_acc"]
                   and row["distinct_factors"] and row["minutes"] <= TARGETS["minutes"])
            factors = "; ".join(f"{c}: " + ", ".join(f"{f} {v:.2f}" for f, v in fs.items())
                                for c, fs in row["factor_changes"].items())
            print(f"| {seed} | {row['steps']} | {row['minutes']:.1f} | {row['ad_auroc']:.3f} | "
                  f"{row['oracle_validity']:.3f} | {row['concept_acc']:.3f} | {row['cf_auroc']:.3f} | "
                  f"{row['fid_n']:.3f} | {factors} | {'met' if met else 'missed'} |", flush=True)
    finally:
        if args.out is None:
            shutil.rmtree(root, ignore_errors=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "demo.json").write_text(json.dumps({"machine": machine(), "targets": TARGETS, "rows": rows}, indent=1))
    print(f"machine: {machine()}")


if __name__ == "__main__":
    main()
