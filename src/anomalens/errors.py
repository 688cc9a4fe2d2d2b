"""The library's exceptions: every one names the file or value at fault and how to fix it.

They subclass the built-in exception a caller would naturally catch (``ValueError`` for bad
content, ``FileNotFoundError`` for missing data), so generic handlers keep working.
"""

from __future__ import annotations

from pathlib import Path


def _where(path: str | Path | None) -> str:
    return f"{path}: " if path is not None else ""


class AnomalensError(Exception):
    """Base class of every error raised on purpose by anomalens."""


class DataFormatError(AnomalensError, ValueError):
    """A data file exists but its content is not what its format promises."""

    def __init__(self, path: str | Path | None, problem: str, fix: str):
        self.path, self.problem, self.fix = path, problem, fix
        super().__init__(f"{_where(path)}{problem}. Fix: {fix}")


class DatasetNotFoundError(AnomalensError, FileNotFoundError):
    """A dataset's files are not in any of the searched places."""


class DownloadError(AnomalensError, OSError):
    """A download failed (offline, server error, interrupted beyond recovery)."""


class ChecksumError(DownloadError):
    """A downloaded file's sha256 differs from the published one; the file was discarded."""


class ScenarioError(AnomalensError, ValueError):
    """A scenario was asked for that cannot be built (unknown class, overlapping OE, too few samples)."""


class ConfigError(AnomalensError, ValueError):
    """A configuration value is missing, of the wrong type or out of range."""
