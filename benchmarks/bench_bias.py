"""The classifier bias of the counterfactual paper (section 4.4) on Colored-MNIST.

Usage: python benchmarks/bench_bias.py [--epochs 10] [--seeds 0,1]

Normal = red digits or the digit one. A BCE detector with (coloured) KMNIST as Outlier Exposure is
compared with a supervised classifier that sees only the *blue* anomalies during training. The
paper reports AuROC 98 (BCE with OE) vs 75 (supervised): a classifier trained on a biased subset of
anomalies misses the others. We also report the supervised classifier's AuROC on blue test anomalies
(seen colour) and on the rest (unseen colours), which shows where it fails.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from bench_detection import RESULTS
from common import machine

from anomalens.data.scenarios import COLOUR_NAMES, build
from anomalens.detectors.oe import OEDetector
from anomalens.detectors.training import TrainConfig
from anomalens.metrics.detection import auroc

NORMAL = "red or one"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seeds", default="0")
    args = parser.parse_args()
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        for method, extra in (("bce", {"oe": "kmnist"}), ("supervised", {"known_anomalies": "blue"})):
            data = build("mnist", NORMAL, colored=True, seed=seed, **extra)
            detector = OEDetector(method, data.image_shape)
            started = time.perf_counter()
            detector.fit(data, TrainConfig(epochs=args.epochs, lr=5e-4, milestones=(int(args.epochs * 0.8),),
                                           seed=seed, progress=False))
            seconds = time.perf_counter() - started
            scores = detector.scores(data.test_x).numpy()
            y = data.test_y.numpy().astype(bool)
            blue = data.test_attrs["colour"].numpy() == COLOUR_NAMES.index("blue")
            seen, unseen = ~y | (y & blue), ~y | (y & ~blue)
            row = {"method": method, "seed": seed, "ad_auroc": auroc(y, scores),
                   "auroc_blue_anomalies": auroc(y[seen], scores[seen]),
                   "auroc_other_anomalies": auroc(y[unseen], scores[unseen]), "train_seconds": seconds}
            rows.append(row)
            print(json.dumps(row), flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "bias.json").write_text(json.dumps(rows, indent=1))
    lines = ["# Classifier bias on Colored-MNIST (normal: red or one)\n", f"Machine: {machine()}\n",
             "| detector | AuROC all | AuROC blue anomalies | AuROC other anomalies | train s |",
             "|---|---|---|---|---|"]
    for method in ("bce", "supervised"):
        r = [row for row in rows if row["method"] == method]
        cells = [f"{np.mean([x[k] for x in r]):.3f}" for k in
                 ("ad_auroc", "auroc_blue_anomalies", "auroc_other_anomalies", "train_seconds")]
        label = "BCE with OE" if method == "bce" else "supervised (blue only)"
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    (RESULTS / "bias.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
