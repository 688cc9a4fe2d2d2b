"""A run folder: what was asked (config.yaml), what ran it (run.json: versions, seed, git hash,
times), what came out (metrics.json, checkpoints/), all written atomically.

Every file is written to a temporary sibling and renamed into place, so an interrupted run never
leaves a half-written file under its real name, and ``last_checkpoint`` can trust what it finds.
"""

from __future__ import annotations

import json
import os
import platform
import random
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from anomalens.atomic import atomic_write_json, atomic_write_text, jsonable

CHECKPOINT_DIR = "checkpoints"
_CHECKPOINT_RE = re.compile(r"^epoch_(\d+)\.safetensors$")
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


@dataclass
class Run:
    """A run folder. ``Run.create`` starts one (or reopens it to resume); ``finish`` closes it."""

    path: Path
    seed: int
    info: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def create(cls, path: str | Path, config: dict[str, Any], seed: int, command: str = "") -> Run:
        """Create (or reopen) ``path``: write config.yaml and run.json, seed everything.

        Reopening a folder with a *different* config raises, so a resume never mixes two setups.
        """
        path = Path(path)
        config_path = path / "config.yaml"
        if config_path.exists():
            previous = yaml.safe_load(config_path.read_text())
            if previous != _plain(config):
                raise FileExistsError(f"{path} holds a run with another config; choose a new --out folder "
                                      "or delete the old run")
        path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(config_path, yaml.safe_dump(_plain(config), sort_keys=False))
        info_path = path / "run.json"
        info = json.loads(info_path.read_text()) if info_path.exists() else {}
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
        })
        atomic_write_json(info_path, info)
        seed_everything(seed)
        return cls(path, seed, info)

    def write_metrics(self, metrics: dict[str, Any]) -> Path:
        """Merge ``metrics`` into metrics.json (flat snake_case keys, see DESIGN.md)."""
        metrics_path = self.path / "metrics.json"
        current = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
        current.update(metrics)
        return atomic_write_json(metrics_path, current)

    def finish(self, status: str = "completed") -> None:
        self.info.update(finished_at=_now(), status=status)
        atomic_write_json(self.path / "run.json", self.info)

    # checkpoints ---------------------------------------------------------------------------

    def save_checkpoint(self, epoch: int, tensors: dict[str, torch.Tensor],
                        meta: dict[str, Any] | None = None, keep: int = 2) -> Path:
        return save_checkpoint(self.path / CHECKPOINT_DIR, epoch, tensors, meta, keep)

    def last_checkpoint(self) -> tuple[int, dict[str, torch.Tensor], dict[str, Any]] | None:
        return last_checkpoint(self.path / CHECKPOINT_DIR)


def _plain(config: dict[str, Any]) -> Any:
    """The config as YAML-safe plain data (tuples -> lists, Paths -> str)."""
    return json.loads(json.dumps(config, default=jsonable))


def save_checkpoint(folder: str | Path, epoch: int, tensors: dict[str, torch.Tensor],
                    meta: dict[str, Any] | None = None, keep: int = 2) -> Path:
    """Write ``epoch_NNNN.safetensors`` atomically, with ``meta`` as JSON in its header; keep the
    newest ``keep`` checkpoints (older ones are removed only after the new one is in place)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"epoch_{epoch:04d}.safetensors"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    os.close(fd)
    try:
        tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        save_file(tensors, tmp, metadata={"epoch": str(epoch), "meta": json.dumps(meta or {}, default=jsonable)})
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    for old in _checkpoints(folder)[:-keep] if keep > 0 else []:
        old[1].unlink(missing_ok=True)
    return path


def _checkpoints(folder: Path) -> list[tuple[int, Path]]:
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _CHECKPOINT_RE.match(p.name))]
    return sorted(found)


def last_checkpoint(folder: str | Path) -> tuple[int, dict[str, torch.Tensor], dict[str, Any]] | None:
    """(epoch, tensors, meta) of the newest checkpoint that loads completely, or None.

    A damaged newest file (e.g. copied half-way by hand) is skipped in favour of the one before it.
    Loading reads safetensors only, so no code from the file is ever executed.
    """
    for epoch, path in reversed(_checkpoints(Path(folder))):
        try:
            tensors = load_file(path)
            with safe_open(path, "pt") as f:
                header = f.metadata() or {}
            return epoch, tensors, json.loads(header.get("meta", "{}"))
        except (SafetensorError, OSError, ValueError, json.JSONDecodeError):
            continue
    return None
