"""The one progress display of every long loop: step, the loss terms, speed and ETA, on stderr.

On a terminal the line is redrawn in place at most every 0.5 s. Elsewhere (CI logs, ``> file``,
a Ray worker) a complete line is written and flushed every ``every`` steps, so a log file shows
a running job within seconds instead of at its end.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


def format_seconds(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    """``Progress(total, label)``; ``update(done, values)`` after each step, ``close()`` at the end.

    ``start`` is the step a resumed job begins at (the ETA counts only the steps run here)."""

    def __init__(self, total: int, label: str, start: int = 0, every: int = 50, unit: str = "step",
                 stream: TextIO | None = None, enabled: bool = True):
        self.total, self.label, self.unit, self.every = total, label, unit, max(1, every)
        self.start = self.done = start
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.interactive = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self._started = time.perf_counter()
        self._last_draw = 0.0
        self._text = ""

    def line(self, values: dict[str, float] | None = None, extra: str = "") -> str:
        elapsed = time.perf_counter() - self._started
        run = max(1, self.done - self.start)
        eta = elapsed / run * (self.total - self.done)
        shown = " ".join(f"{k} {v:.4g}" for k, v in (values or {}).items())
        return (f"{self.label} {self.unit} {self.done}/{self.total}" + (f" {extra}" if extra else "")
                + (f" | {shown}" if shown else "")
                + f" | {elapsed / run:.2f} s/{self.unit}, {format_seconds(elapsed)} elapsed, ETA {format_seconds(eta)}")

    def update(self, done: int, values: dict[str, float] | None = None, extra: str = "") -> None:
        self.done = done
        if not self.enabled:
            return
        now = time.perf_counter()
        if self.interactive:
            if now - self._last_draw > 0.5 or done == self.total:
                self._last_draw = now
                self._write("\r" + self.line(values, extra) + "\033[K")
        elif done % self.every == 0 or done == self.total:
            self._write(self.line(values, extra) + "\n")

    def close(self, message: str = "") -> None:
        """End the live line (terminal) and print ``message`` if given."""
        if self.enabled and self.interactive:
            self._write("\n")
        if self.enabled and message:
            self._write(message + "\n")

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()
