"""Is bf16 autocast worth it on this CPU? One CIFAR LeNet forward + backward of 128 images, float32
against bf16 autocast, alternating, best of ``repeats`` (the first round is a warm-up).

Usage: python benchmarks/bench_bf16.py [--threads 1] [--repeats 3]

Without AVX512-BF16 or AMX, oneDNN emulates bfloat16 and the step gets many times slower; the
library's ``device.autocast`` then runs float32 instead (``device.native_bf16`` prints below).
"""

from __future__ import annotations

import argparse
import time

import torch
from common import machine

from anomalens.detectors.oe import OEDetector
from anomalens.device import native_bf16


def step_seconds(detector: OEDetector, x: torch.Tensor, bf16: bool) -> float:
    started = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):  # forced: measure the emulation too
        loss = detector(x).float().mean()
    loss.backward()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    detector, x = OEDetector("bce", (3, 32, 32), net="cifar"), torch.rand(128, 3, 32, 32)
    times: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(args.repeats + 1):
        for bf16 in (False, True):
            times[bf16].append(step_seconds(detector, x, bf16))
    fp32, bf16 = min(times[False][1:]), min(times[True][1:])
    print(f"| float32 {fp32:.3f} s | bf16 {bf16:.3f} s | bf16 / float32 {bf16 / fp32:.2f} | "
          f"native bf16: {native_bf16('cpu')} | capability {torch.backends.cpu.get_cpu_capability()} |")
    print(f"machine: {machine()}")


if __name__ == "__main__":
    main()
