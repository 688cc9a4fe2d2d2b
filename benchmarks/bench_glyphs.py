"""Time synthetic glyph generation against its budget: 20,000 28x28 glyphs in under 20 s.

Usage: python benchmarks/bench_glyphs.py [--n 20000] [--grid PATH]

The cold run includes rendering and caching each (font, character, stroke) mask; the best of the
following runs is the steady-state cost. ``--grid`` saves 64 grayscale and 64 coloured samples as a
PNG, for checking by eye that glyphs are legible, centred and varied.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from common import machine
from PIL import Image

from anomalens.data.synthetic import _glyph_mask, glyphs

TARGET_S = 20.0




def timed(n: int, coloured: bool, repeats: int = 3) -> tuple[float, float]:
    """(cold, best) seconds; cold starts from an empty mask cache."""
    _glyph_mask.cache_clear()
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        glyphs(n, seed=0, coloured=coloured)
        times.append(time.perf_counter() - start)
    return times[0], min(times[1:])


def save_grid(path: str, count: int = 64) -> None:
    """Grayscale samples on the left, coloured on the right, 8x8 each, upscaled 3x for viewing."""
    panels = []
    for coloured in (False, True):
        imgs = glyphs(count, seed=1, coloured=coloured).images
        if imgs.shape[-1] == 1:
            imgs = np.repeat(imgs, 3, -1)
        side = int(np.ceil(np.sqrt(count)))
        pad = np.zeros((side * side - count, *imgs.shape[1:]), np.uint8)
        tiles = np.concatenate([imgs, pad]).reshape(side, side, *imgs.shape[1:])
        tiles = np.pad(tiles, ((0, 0), (0, 0), (1, 1), (1, 1), (0, 0)), constant_values=60)  # grid lines
        h, w = tiles.shape[2:4]
        panels.append(tiles.transpose(0, 2, 1, 3, 4).reshape(side * h, side * w, 3))
    grid = np.concatenate([panels[0], np.full((panels[0].shape[0], 8, 3), 255, np.uint8), panels[1]], 1)
    Image.fromarray(grid).resize((grid.shape[1] * 3, grid.shape[0] * 3), Image.Resampling.NEAREST).save(path)
    print(f"saved sample grid to {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help="glyphs per run (default 20000)")
    parser.add_argument("--grid", default=None, help="save a PNG of sample glyphs to this path")
    args = parser.parse_args()

    print(f"machine: {machine()}")
    ok = True
    for coloured in (False, True):
        cold, best = timed(args.n, coloured)
        kind = "coloured " if coloured else "grayscale"
        print(
            f"{kind} n={args.n}: cold {cold:.2f} s ({args.n / cold:,.0f} img/s), "
            f"best of 3 {best:.2f} s ({args.n / best:,.0f} img/s)"
        )
        ok &= cold < TARGET_S * args.n / 20_000
    verdict = "PASS" if ok else "FAIL"
    print(f"{verdict}: cold runs {'within' if ok else 'over'} the {TARGET_S:.0f} s budget per 20,000 glyphs")
    if args.grid:
        save_grid(args.grid)


if __name__ == "__main__":
    main()
