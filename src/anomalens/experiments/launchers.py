"""Launchers: where a grid's runs execute. ``local`` runs them in N worker processes on this machine,
``ray`` as Ray tasks on a laptop or a cluster. Both call the same ``target(task)`` (``grid.execute``),
which records each run's outcome in its folder, so a run's numbers do not depend on the launcher;
only the thread count does (it is part of the task, the same for both).

Retry policy (both launchers): a run that *raises* is recorded as failed and never retried, since
application errors (``AnomalensError``, a bad config, a NaN loss) come back the same way; rerun the
grid after fixing the cause. A run whose *process dies* (killed, out of memory, a lost cluster node)
is retried up to ``retries`` times (default 2), then recorded as failed.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing as mp
import os
import signal
import socket
import sys
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

from anomalens.errors import AnomalensError, ConfigError

Target = Callable[[Any], dict[str, Any]]
OnResult = Callable[[Any, dict[str, Any]], None]
LAUNCHERS: dict[str, type] = {}
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def register(name: str):
    def wrap(cls: type) -> type:
        LAUNCHERS[name] = cls
        return cls
    return wrap


def get_launcher(name: str, **options: Any):
    """A launcher by name; ``options``: workers, threads, retries, address (ray)."""
    if name not in LAUNCHERS:
        raise ConfigError(f"unknown launcher {name!r}. Fix: one of {', '.join(sorted(LAUNCHERS))}")
    return LAUNCHERS[name](**options)


def _crashed(message: str) -> dict[str, Any]:
    return {"status": "failed", "error": message, "crashed": True}


# ------------------------------------------------------------------------------------------ local


@contextlib.contextmanager
def _thread_environment(threads: int) -> Iterator[None]:
    """Thread-count variables for processes started inside the block (a spawned child reads them
    before importing torch); the parent's own values are restored after."""
    saved = {name: os.environ.get(name) for name in THREAD_VARIABLES}
    os.environ.update({name: str(threads) for name in THREAD_VARIABLES})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _interrupt_when_parent_dies() -> None:
    """Linux: ask the kernel to send this worker SIGINT when the grid process dies, even by SIGKILL, so
    no orphan keeps training; SIGINT lets the run checkpoint and record itself as interrupted."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGINT)
    parent = mp.parent_process()
    if parent is not None and os.getppid() != parent.pid:  # it died before prctl took effect
        raise KeyboardInterrupt


def _serve(conn: Connection, target: Target) -> None:
    """A worker process: run tasks from the pipe until told to stop (None) or the parent goes away."""
    with contextlib.suppress(KeyboardInterrupt, EOFError, BrokenPipeError):
        if sys.platform == "linux":
            _interrupt_when_parent_dies()
        while (task := conn.recv()) is not None:
            conn.send(target(task))


@dataclass
class _Worker:
    process: Any
    conn: Connection
    task: Any = None


@register("local")
class LocalLauncher:
    """``workers`` spawned processes (fresh interpreters: no state shared with the caller), each running
    one task at a time with ``threads`` threads; a dead worker is replaced and its task retried."""

    def __init__(self, workers: int | None = None, threads: int = 1, retries: int = 2, address: str | None = None):
        if address:
            raise ConfigError("--address is for the ray launcher. Fix: add --launcher ray, or drop --address")
        self.workers, self.threads, self.retries = max(1, workers or 1), max(1, threads), retries

    @property
    def concurrency(self) -> int:
        return self.workers

    def _start(self, target: Target) -> _Worker:
        context = mp.get_context("spawn")
        parent, child = context.Pipe()
        with _thread_environment(self.threads):
            process = context.Process(target=_serve, args=(child, target), daemon=True, name="anomalens-grid")
            process.start()
        child.close()
        return _Worker(process, parent)

    def run(self, tasks: list[Any], target: Target, on_result: OnResult) -> None:
        queue, attempts, workers = deque(tasks), Counter(), []
        try:
            while queue or any(w.task is not None for w in workers):
                for worker in [w for w in workers if w.task is None]:  # idle: feed it or let it go
                    if queue:
                        worker.task = queue.popleft()
                        worker.conn.send(worker.task)
                    else:
                        self._stop(worker)
                        workers.remove(worker)
                while queue and len(workers) < self.workers:
                    worker = self._start(target)
                    worker.task = queue.popleft()
                    worker.conn.send(worker.task)
                    workers.append(worker)
                busy = [w for w in workers if w.task is not None]
                wait([w.conn for w in busy] + [w.process.sentinel for w in busy])
                for worker in busy:
                    result = self._collect(worker)
                    if result is not None:
                        task, worker.task = worker.task, None
                        on_result(task, result)
                    elif not worker.process.is_alive():
                        task = worker.task
                        workers.remove(worker)
                        attempts[task.name] += 1
                        message = f"worker process died (exit code {worker.process.exitcode})"
                        if attempts[task.name] <= self.retries:
                            on_result(task, {"status": "retry", "error": message})
                            queue.appendleft(task)
                        else:
                            on_result(task, _crashed(f"{message}, {attempts[task.name]} times"))
        finally:
            for worker in workers:
                self._stop(worker)

    @staticmethod
    def _collect(worker: _Worker) -> dict[str, Any] | None:
        try:
            return worker.conn.recv() if worker.conn.poll() else None
        except (EOFError, OSError):
            return None

    @staticmethod
    def _stop(worker: _Worker) -> None:
        with contextlib.suppress(OSError):
            worker.conn.send(None)
        worker.process.join(timeout=10 if worker.task is None else 1)
        if worker.process.is_alive():
            worker.process.terminate()
            worker.process.join()
        worker.conn.close()


# -------------------------------------------------------------------------------------------- ray


def import_ray():
    try:
        import ray
    except ImportError as e:
        raise AnomalensError("the ray launcher needs Ray. Fix: pip install 'anomalens[ray]' "
                             "(or use --launcher local)") from e
    return ray


def _ray_address(address: str | None) -> str | None:
    """The address for ``ray.init``: the given one, else $RAY_ADDRESS, else the last instance started on
    this machine (``ray start``) if it still answers, else ``"local"`` (a new local instance). Without
    the check, ``ray.init()`` spends minutes retrying an instance that died without ``ray stop``
    (its address stays in /tmp/ray/ray_current_cluster)."""
    if address or os.environ.get("RAY_ADDRESS"):
        return address
    try:
        from ray._private.services import find_bootstrap_address  # where ray.init() looks (Ray 2.x)
        last = find_bootstrap_address(None)
    except Exception:  # noqa: BLE001 - another Ray version: let ray.init decide
        return None
    if last is None:
        return None
    host, _, port = last.rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=2).close()
    except (OSError, ValueError):
        return "local"
    return None


@register("ray")
class RayLauncher:
    """Each run is a Ray task with ``num_cpus=threads`` (and ``num_gpus=1`` where the cluster has GPUs),
    retried by Ray on system failures (``max_retries``), never on exceptions (``retry_exceptions=False``;
    ``execute`` records those anyway). ``address``: a cluster ("ray://host:10001", "host:6379", "auto");
    None lets ``ray.init`` decide: $RAY_ADDRESS, else a running local instance, else a new local one.
    ``workers`` caps the tasks in flight (default: all, Ray packs them by CPU). The run folders must be
    on storage every node can write (a shared file system), and every node needs anomalens installed."""

    def __init__(self, workers: int | None = None, threads: int = 1, retries: int = 2, address: str | None = None,
                 gpus: float | None = None):
        import_ray()  # a missing Ray is reported before the grid writes anything
        self.workers, self.threads, self.retries, self.address, self.gpus = workers, max(1, threads), retries, \
            address, gpus
        self._concurrency = workers or 1

    @property
    def concurrency(self) -> int:
        return self._concurrency

    def run(self, tasks: list[Any], target: Target, on_result: OnResult) -> None:
        ray = import_ray()
        started_here = not ray.is_initialized()
        if started_here:
            ray.init(address=_ray_address(self.address), log_to_driver=False, configure_logging=False)
        pending: dict[Any, Any] = {}
        try:
            resources = ray.cluster_resources()
            gpus = self.gpus if self.gpus is not None else (1 if resources.get("GPU", 0) >= 1 else 0)
            self._concurrency = self.workers or max(1, int(resources.get("CPU", 1) // self.threads))
            remote = ray.remote(target).options(num_cpus=self.threads, num_gpus=gpus, max_retries=self.retries,
                                                retry_exceptions=False)
            queue = deque(tasks)
            while queue or pending:
                while queue and len(pending) < (self.workers or len(tasks)):
                    task = queue.popleft()
                    pending[remote.remote(task)] = task
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    task = pending.pop(ref)
                    try:
                        result = ray.get(ref)
                    except ray.exceptions.RayError as e:
                        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                        result = _crashed(f"Ray task failed after {self.retries} retries: {reason}")
                    on_result(task, result)
        except KeyboardInterrupt:
            for ref in pending:
                ray.cancel(ref, force=True)
            raise
        finally:
            if started_here:
                ray.shutdown()
