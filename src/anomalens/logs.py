"""Logging set-up. Modules log through ``logging.getLogger(__name__)``; the CLI (or a user) calls
``setup_logging`` once, so that messages reach stderr line by line even when it is a file."""

from __future__ import annotations

import logging
import sys


class _FlushingHandler(logging.Handler):
    """Writes to the *current* ``sys.stderr`` (tests and notebooks swap it) and flushes each line."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
            sys.stderr.flush()
        except Exception:  # noqa: BLE001 - logging must never break the job
            self.handleError(record)


def setup_logging(level: int = logging.INFO) -> None:
    """Send the library's messages (``anomalens.*``) to stderr, one flushed line each."""
    logger = logging.getLogger("anomalens")
    if not any(isinstance(h, _FlushingHandler) for h in logger.handlers):
        handler = _FlushingHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
