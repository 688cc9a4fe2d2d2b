"""The state of a grid's run folders, told by marker files, so that any process (a rerun, ``grid status``,
a Ray worker on another machine sharing the folder) can read it without a database:

- ``done``: JSON with ``seconds`` and ``finished_at``, written last, after ``result.json``;
- ``failed``: JSON with the error's one-line ``message`` and its ``traceback``; a rerun retries the run;
- ``running``: the lock of the process working on the run: ``pid``, ``host`` and a ``heartbeat`` time
  refreshed every ``HEARTBEAT_SECONDS``. It is stale (the run counts as pending and may be taken over)
  when its pid is dead on this host, or its heartbeat is older than ``STALE_SECONDS`` (another host);
- none of these: pending.

Every marker is written atomically. The lock is created with ``os.link`` of a finished temporary file,
which fails if the lock exists: two workers can never both claim a run.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from anomalens.atomic import atomic_write_json

DONE, FAILED, RUNNING, PENDING = "done", "failed", "running", "pending"
STATES = (DONE, RUNNING, FAILED, PENDING)
HEARTBEAT_SECONDS = 20.0
STALE_SECONDS = 90.0


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _read(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this host; a zombie (killed, not yet reaped, as happens in
    containers without an init process) counts as dead."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):  # no /proc (macOS): trust kill()
        return True


def lock_is_live(lock: dict[str, Any] | None, now: float | None = None) -> bool:
    """Whether a ``running`` lock belongs to a process that is still working."""
    if not lock:
        return False
    if now is None:
        now = time.time()
    if now - float(lock.get("heartbeat", 0)) > STALE_SECONDS:
        return False
    if lock.get("host") == socket.gethostname():
        return _pid_alive(int(lock.get("pid", -1)))
    return True


def status(folder: str | Path) -> str:
    """done, failed, running or pending (a stale lock, i.e. an interrupted run, counts as pending)."""
    folder = Path(folder)
    if (folder / DONE).is_file():
        return DONE
    if lock_is_live(_read(folder / RUNNING)):
        return RUNNING
    if (folder / FAILED).is_file():
        return FAILED
    return PENDING


def mark_done(folder: Path, seconds: float) -> None:
    atomic_write_json(folder / DONE, {"seconds": seconds, "finished_at": _now()})
    (folder / FAILED).unlink(missing_ok=True)


def mark_failed(folder: Path, error: BaseException | str) -> str:
    """Record why the run failed; returns the one-line message."""
    if isinstance(error, BaseException):
        message = f"{type(error).__name__}: {error}".splitlines()[0]
        trace = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    else:
        message, trace = error, ""
    atomic_write_json(folder / FAILED, {"message": message, "traceback": trace, "failed_at": _now()})
    return message


def failure(folder: Path) -> str | None:
    marker = _read(Path(folder) / FAILED)
    return marker.get("message") if marker else None


def duration(folder: Path) -> float | None:
    marker = _read(Path(folder) / DONE)
    return float(marker["seconds"]) if marker and "seconds" in marker else None


@dataclass
class Lock:
    """The ``running`` marker of one run, held by this process; a daemon thread refreshes its heartbeat."""

    folder: Path
    info: dict[str, Any] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)

    def _write(self) -> None:
        self.info["heartbeat"] = time.time()
        atomic_write_json(self.folder / RUNNING, self.info)

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            try:
                self._write()
            except OSError:  # a full disk must not kill the run; the next beat tries again
                continue

    def __enter__(self) -> Lock:
        threading.Thread(target=self._beat, daemon=True, name="grid-heartbeat").start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        (self.folder / RUNNING).unlink(missing_ok=True)


def claim(folder: str | Path) -> Lock | None:
    """Take the run's lock, or None when a live process holds it. A stale lock is taken over."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / RUNNING
    info = {"pid": os.getpid(), "host": socket.gethostname(), "started_at": _now(), "heartbeat": time.time()}
    fd, tmp = tempfile.mkstemp(prefix=".running.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(info, f)
        for _ in range(2):
            try:
                os.link(tmp, target)
                return Lock(folder, info)
            except FileExistsError:
                if lock_is_live(_read(target)):
                    return None
                target.unlink(missing_ok=True)  # stale: the process that held it is gone
        return None
    finally:
        Path(tmp).unlink(missing_ok=True)


@dataclass
class Summary:
    """Counts of a grid's runs by state, and an ETA from the durations of finished runs."""

    counts: dict[str, int]
    mean_seconds: float | None
    failures: dict[str, str]

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def eta_seconds(self, concurrency: int | None = None) -> float | None:
        """Time left for the running and pending runs (failed ones wait for a fix), at ``concurrency`` runs
        at a time (default: as many as are running now, at least one)."""
        if self.mean_seconds is None:
            return None
        left = self.counts[RUNNING] + self.counts[PENDING]
        return self.mean_seconds * left / max(1, concurrency or self.counts[RUNNING])


def summarize(folders: dict[str, Path]) -> Summary:
    """The summary of named run folders."""
    counts = dict.fromkeys(STATES, 0)
    seconds, failures = [], {}
    for name, folder in folders.items():
        state = status(folder)
        counts[state] += 1
        if state == DONE and (s := duration(folder)) is not None:
            seconds.append(s)
        elif state == FAILED:
            failures[name] = failure(folder) or "unknown error"
    return Summary(counts, sum(seconds) / len(seconds) if seconds else None, failures)
