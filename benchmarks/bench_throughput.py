"""Training throughput: the detector training loop vs a bare forward+backward+step loop.

Usage: python benchmarks/bench_throughput.py [--steps 60] [--repeats 3]

Both loops use the same network, the same 128 normal + 128 OE images per step and Adam; the bare
loop indexes pre-built batches and does nothing else. The ratio (target >= 0.85) measures what the
library's loop costs on top: sampling, augmentation, loss bookkeeping, NaN checks, progress.
Timings alternate between the two loops and keep the best of ``repeats``, so drift in machine load
affects both alike.
"""

from __future__ import annotations

import argparse
import time

import torch

from anomalens.data.addata import ADData
from anomalens.detectors.oe import OEDetector
from anomalens.detectors.training import TrainConfig

SETTINGS = [  # (name, objective, image shape, extra TrainConfig)
    ("mnist-lenet bce", "bce", (1, 28, 28), {}),
    ("mnist-lenet hsc", "hsc", (1, 28, 28), {}),
    ("cifar-lenet hsc bf16", "hsc", (3, 32, 32), {"bf16": True, "channels_last": True}),
]


def loop_seconds(objective: str, shape, steps: int, extra: dict) -> float:
    torch.manual_seed(0)
    data = ADData(train_normal=torch.rand(128 * steps, *shape), test_x=torch.rand(4, *shape),
                  test_y=torch.tensor([0, 1, 0, 1]), train_oe=torch.rand(2048, *shape))
    detector = OEDetector(objective, shape)
    detector.fit(data, TrainConfig(epochs=1, progress=False, **extra))
    return detector.history[0]["seconds"]


def bare_seconds(objective: str, shape, steps: int, extra: dict) -> float:
    torch.manual_seed(0)
    detector = OEDetector(objective, shape).train()
    if extra.get("channels_last"):
        detector.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(detector.parameters(), lr=1e-3)
    x = torch.rand(steps, 256, *shape)
    if extra.get("channels_last"):
        x = torch.stack([b.contiguous(memory_format=torch.channels_last) for b in x])
    y = torch.cat([torch.zeros(128), torch.ones(128)])
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=bool(extra.get("bf16")))
    started = time.perf_counter()
    for step in range(steps):
        with autocast:
            out = detector(x[step])
        loss = detector.objective.loss(out.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_flush_denormal(True)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.steps} steps of 256 images")
    print("| setting | library loop img/s | bare loop img/s | ratio |\n|---|---|---|---|")
    for name, objective, shape, extra in SETTINGS:
        loop, bare = [], []
        for _ in range(args.repeats):
            loop.append(loop_seconds(objective, shape, args.steps, extra))
            bare.append(bare_seconds(objective, shape, args.steps, extra))
        images = 256 * args.steps
        ips_loop, ips_bare = images / min(loop), images / min(bare)
        print(f"| {name} | {ips_loop:,.0f} | {ips_bare:,.0f} | {ips_loop / ips_bare:.2f} |", flush=True)


if __name__ == "__main__":
    main()
