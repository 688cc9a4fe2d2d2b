"""Benchmark: the evolutionary search for the best and worst single OE image (OE paper, sec. 5.4,
appendix H) on MNIST one-vs-rest with KMNIST as the OE pool, beside the random-image baseline
(appendix D: one randomly drawn OE image, several draws).

Usage: flock /tmp/anomalens-heavy.lock python benchmarks/bench_oe_search.py [--classes 0,8] [--detector bce]
           [--population 16] [--generations 10] [--steps 20] [--out runs/bench/oe_search] [--data-root ../shared/data]

Each class is one ``anomalens oe-search`` run folder (``OUT/mnist<class>-<detector>``, resumable: rerun
the command after an interrupt). The script then copies each run's image grid to
``benchmarks/results/oe_search_mnist<class>_<detector>.png`` and writes ``benchmarks/results/oe_search.md``
and ``.json``. The paper has no MNIST numbers for this experiment; its CIFAR-10 means (Table 3,
appendix D Table 5) are printed beside ours for scale.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time

import torch
from common import RESULTS, machine

from anomalens.experiments.oe_search import OESearchJob, run_search
from anomalens.logs import setup_logging

#: OE paper, CIFAR-10 with 80MTI OE, mean AuROC over the 10 classes: Table 3 (evolutionary search,
#: selected on test) and appendix D Table 5 (best of a pure random search). No MNIST figures exist.
PAPER_CIFAR10 = {"bce": {"best": 69.9, "worst": 31.6, "random_search_best": 68.7},
                 "hsc": {"best": 77.7, "worst": 43.3, "random_search_best": 76.5}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classes", default="0,8")
    parser.add_argument("--detector", default="bce")
    parser.add_argument("--population", type=int, default=16)
    parser.add_argument("--generations", type=int, default=10)
    parser.add_argument("--steps", type=int, default=20, help="training steps per fitness evaluation (one epoch)")
    parser.add_argument("--baseline-draws", type=int, default=16)
    parser.add_argument("--out", default="runs/bench/oe_search")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    setup_logging()
    rows, started = {}, time.perf_counter()
    for normal in args.classes.split(","):
        job = OESearchJob(dataset="mnist", normal=normal, oe="kmnist", detector=args.detector,
                          population=args.population, generations=args.generations,
                          fitness_steps_per_epoch=args.steps, baseline_draws=args.baseline_draws, device="cpu",
                          data_root=args.data_root)
        folder = f"{args.out}/mnist{normal}-{args.detector}"
        metrics = run_search(job, folder)
        shutil.copyfile(f"{folder}/images/oe_search.png", RESULTS / f"oe_search_mnist{normal}_{args.detector}.png")
        rows[normal] = {"folder": folder, **{k: v for k, v in metrics.items() if not k.endswith("_history")}}
    paper = PAPER_CIFAR10.get(args.detector, {})
    lines = [f"Machine: {machine()}; {time.perf_counter() - started:.0f} s in this call (0 for finished runs)", "",
             "| class | best found: test AuROC (val) | worst found: test AuROC (val) | random image: test AuROC "
             "(val) | evaluations | search s | paper (CIFAR-10 mean): best / worst / random-search best |",
             "|---|---|---|---|---|---|---|"]
    for normal, m in rows.items():
        lines.append(f"| {normal} | {m['best_test_auroc_top1']:.3f} ({m['best_val_auroc'][0]:.3f}) | "
                     f"{m['worst_test_auroc_top1']:.3f} ({m['worst_val_auroc'][0]:.3f}) | "
                     f"{m['baseline_test_auroc_mean']:.3f} ± {m['baseline_test_auroc_std']:.3f} "
                     f"({m['baseline_val_auroc_mean']:.3f} ± {m['baseline_val_auroc_std']:.3f}) | {m['evaluations']} | "
                     f"{m['search_seconds']:.0f} | {paper.get('best', '-')} / {paper.get('worst', '-')} / "
                     f"{paper.get('random_search_best', '-')} |")
    text = "\n".join(lines) + "\n"
    (RESULTS / "oe_search.md").write_text(text)
    (RESULTS / "oe_search.json").write_text(json.dumps(rows, indent=2) + "\n")
    print(text)


if __name__ == "__main__":
    main()
