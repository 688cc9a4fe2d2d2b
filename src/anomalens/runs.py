"""A run folder: what was asked (config.yaml), what ran it (run.json: versions, seed, git hash,
times, status and error), what came out (metrics.json, checkpoints/), all written atomically.

Every file is written to a temporary sibling and renamed into place, so an interrupted run never
leaves a half-written file under its real name.
"""

from __future__ import annotations

import contextlib
import json
import platform
import random
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from anomalens.atomic import atomic_write_json, atomic_write_text, jsonable
from anomalens.errors import AnomalensError

_VERSIONED = ("anomalens", "torch", "numpy", "pillow", "matplotlib", "safetensors", "pyyaml")


# ------------------------------------------------------------------------------------ provenance


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch from the run's one seed."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def package_versions() -> dict[str, str]:
    versions = {"python": sys.version.split()[0]}
    for name in _VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def git_hash(folder: str | Path | None = None) -> str | None:
    """The commit of the source tree anomalens runs from (``+dirty`` if modified), or None."""
    folder = Path(folder or Path(__file__).resolve().parent)
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True,
                             timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=folder,
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return out + ("+dirty" if dirty else "")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# ------------------------------------------------------------------------------------------ runs


class RunExistsError(AnomalensError, FileExistsError):
    """The run folder holds a finished or checkpointed run with another config."""


# changing these continues a run, never refused; a recipe's warm-up is a share of its steps, so it is one too
BUDGET_KEYS = ("steps", "epochs", "minutes", "generations", "warmup_steps")


def _differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two plain configs."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [d for k in sorted(set(old) | set(new), key=str)
                for d in _differences(old.get(k), new.get(k), f"{prefix}{k}.")]
    return [] if old == new else [prefix.rstrip(".")]


@dataclass
class Run:
    """A run folder. ``Run.create`` starts one (or reopens it to resume); ``recording()`` wraps the
    work and writes its outcome (completed, interrupted, or failed with the error) to run.json."""

    path: Path
    seed: int
    info: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def create(cls, path: str | Path, config: dict[str, Any], seed: int, command: str = "") -> Run:
        """Create (or reopen) ``path``: write config.yaml and run.json, seed everything.

        Reopening a folder whose config differs only in budget keys (steps, epochs, minutes, ...) continues
        the run with the new budget. Another difference is refused (``RunExistsError``) unless the old
        run never got anywhere (failed before its first checkpoint), so that a resume never mixes two
        setups and a typo in a first attempt does not block the corrected command."""
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise RunExistsError(f"{path} is a file, not a run folder. Fix: choose another --out")
        config_path = path / "config.yaml"
        plain = _plain(config)
        info_path = path / "run.json"
        info = _read_json(info_path)
        if config_path.exists():
            try:
                previous = yaml.safe_load(config_path.read_text())
            except yaml.YAMLError:
                previous = None
            changed = _differences(previous, plain)
            real = [k for k in changed if k.rsplit(".", 1)[-1] not in BUDGET_KEYS]
            if real and _has_progress(path, info):
                raise RunExistsError(f"{path} holds a run with another config (changed: {', '.join(real[:6])}). "
                                     "Fix: choose a new --out folder, or delete the old run")
            if real:
                info = {}  # the old attempt left nothing to resume: start afresh
        path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(config_path, yaml.safe_dump(plain, sort_keys=False))
        info.update({
            "seed": seed,
            "command": command or " ".join(sys.argv),
            "versions": package_versions(),
            "git": git_hash(),
            "platform": platform.platform(),
            "torch_threads": torch.get_num_threads(),
            "started_at": info.get("started_at", _now()),
            "resumed_at": [*info.get("resumed_at", []), _now()] if info else [],
            "finished_at": None,
            "status": "running",
            "error": None,
        })
        atomic_write_json(info_path, info)
        seed_everything(seed)
        return cls(path, seed, info)

    def write_metrics(self, metrics: dict[str, Any]) -> Path:
        """Merge ``metrics`` into metrics.json (flat snake_case keys, see DESIGN.md)."""
        metrics_path = self.path / "metrics.json"
        current = _read_json(metrics_path)
        current.update(metrics)
        return atomic_write_json(metrics_path, current)

    def finish(self, status: str = "completed", error: str | None = None) -> None:
        self.info.update(finished_at=_now(), status=status, error=error)
        if status == "completed":
            self.info.setdefault("completed_at", self.info["finished_at"])
        atomic_write_json(self.path / "run.json", self.info)

    @contextlib.contextmanager
    def recording(self):
        """Run the body; run.json then says completed, interrupted (Ctrl-C: rerun to resume) or failed
        with the error message. The exception is re-raised."""
        try:
            yield self
        except KeyboardInterrupt:
            self.finish("interrupted", "interrupted by the user; run the same command again to resume")
            raise
        except BaseException as e:
            self.finish("failed", f"{type(e).__name__}: {e}")
            raise
        self.finish()


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _has_progress(path: Path, info: dict[str, Any]) -> bool:
    """Whether a run folder holds something worth protecting: a run that completed once, metrics or a checkpoint."""
    return bool(info.get("completed_at")) or (path / "metrics.json").exists() or any(path.glob("**/*.safetensors"))


def _plain(config: dict[str, Any]) -> Any:
    """The config as YAML-safe plain data (tuples -> lists, Paths -> str)."""
    return json.loads(json.dumps(config, default=jsonable))
