"""Safetensors I/O for every weights file and training checkpoint the library writes.

One reader and one writer, so every file gets the same guarantees: it is written atomically, it is
read without executing code (safetensors holds tensors and string metadata only), its ``format``
is checked, and weights that are not finite (NaN, inf, e.g. from a bit flip or a diverged run) are
refused at load instead of producing black heatmaps later.

Training checkpoints (``step_NNNNNN.safetensors`` in a folder) hold the tensors of every model,
optimizer and random generator, plus JSON metadata (history, config); the newest one that loads
completely is what a resumed run continues from.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes
from torch import Tensor

from anomalens.atomic import atomic_write_bytes, jsonable
from anomalens.errors import AnomalensError

_CHECKPOINT_RE = re.compile(r"^(?:step|epoch)_(\d+)\.safetensors$")
MAX_PARAMETERS = 2_000_000_000  # a config asking for more is refused before any allocation (8 GB in fp32)


class CheckpointError(AnomalensError, ValueError):
    """A weights file cannot be loaded: damaged, of another format, non-finite, or of another architecture."""


def digest(tensors: dict[str, Tensor]) -> str:
    """sha256 over names, dtypes, shapes and bytes of ``tensors``: stored in every file the library
    writes, so that a flipped bit in a weight (finite, but wrong) is caught at load."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def write_weights(path: str | Path, tensors: dict[str, Tensor], metadata: dict[str, str]) -> Path:
    """One safetensors file (tensors made contiguous on the CPU, string metadata plus a checksum of
    the tensors), written atomically."""
    data = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    return atomic_write_bytes(path, safetensors_bytes(data, metadata={**metadata, "sha256": digest(data)}))


def check_finite(tensors: dict[str, Tensor], source: str | Path, fix: str) -> None:
    """Refuse floating-point tensors holding NaN or inf, naming the first bad tensor."""
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise CheckpointError(f"{source}: tensor {name!r} holds {bad} non-finite values (NaN or inf); the file "
                                  f"is damaged or comes from a diverged run. Fix: {fix}")


def read_weights(path: str | Path, what: str, writer: str,
                 expected_format: str | None = None) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Tensors and header metadata of a safetensors file (no code is executed).

    Raises ``CheckpointError`` naming the file and what writes such files when it cannot be read,
    when its ``format`` metadata is not ``expected_format``, or when a weight is not finite."""
    path = Path(path)
    fix = f"pass a file written by {writer}"
    if not path.is_file():
        raise CheckpointError(f"{path}: no such {what} file. Fix: {fix}")
    try:
        with safe_open(path, "pt") as f:
            metadata = f.metadata() or {}
        tensors = load_file(path)
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path}: not a readable {what} file ({str(e)[:200]}). Fix: {fix}") from e
    if expected_format is not None and metadata.get("format") != expected_format:
        raise CheckpointError(f"{path}: not an anomalens {what} (format {metadata.get('format')!r}, expected "
                              f"{expected_format!r}). Fix: {fix}")
    check_finite(tensors, path, f"retrain, or {fix}")
    if "sha256" in metadata and metadata["sha256"] != digest(tensors):
        raise CheckpointError(f"{path}: the weights do not match the checksum written with them; the file was "
                              f"changed or damaged after it was saved. Fix: restore it from a copy, or retrain")
    return tensors, metadata


def metadata_json(metadata: dict[str, str], key: str, path: str | Path, writer: str) -> Any:
    """A JSON value of a file's header (e.g. its ``config``), or ``CheckpointError`` when it is missing
    or not JSON: a damaged header must not surface as a ``KeyError``."""
    if key not in metadata:
        raise CheckpointError(f"{path}: the header has no {key!r} entry. Fix: pass a file written by {writer}")
    try:
        return json.loads(metadata[key])
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: the header's {key!r} is not JSON ({e}). Fix: pass a file written by "
                              f"{writer}") from e


def build_checked(build, tensors: dict[str, Tensor], source: str | Path) -> torch.nn.Module:
    """``build()`` a module for the weights ``tensors`` without trusting the file's config.

    The module is first built on the meta device (no memory), and its parameter count and shapes are
    compared with the file: a header asking for a conv width of 1e9 is refused here instead of
    allocating terabytes. Then the module is built for real and the weights are loaded."""
    try:
        with torch.device("meta"):
            shell = build()
    except (ValueError, TypeError, KeyError, RuntimeError, NotImplementedError) as e:
        raise CheckpointError(f"{source}: the header's config cannot build a network ({str(e)[:200]}). "
                              "Fix: pass a file written by anomalens") from e
    size = sum(t.numel() for t in shell.state_dict().values())
    if size > MAX_PARAMETERS:
        raise CheckpointError(f"{source}: the header's config asks for {size:,} weights (limit {MAX_PARAMETERS:,}). "
                              "Fix: the file is damaged or not from anomalens; retrain")
    load_checked(shell, tensors, source, strict_values=False)
    module = build()
    load_checked(module, tensors, source)
    return module


def load_checked(module: torch.nn.Module, tensors: dict[str, Tensor], source: str | Path,
                 strict_values: bool = True) -> None:
    """Load a state dict, refusing any difference in names or shapes with a readable message."""
    own = module.state_dict()
    missing, unexpected = sorted(set(own) - set(tensors)), sorted(set(tensors) - set(own))
    wrong = [f"{k}: file {tuple(tensors[k].shape)} vs model {tuple(own[k].shape)}"
             for k in sorted(set(own) & set(tensors)) if tensors[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        details = "; ".join(filter(None, [
            f"missing {missing[:4]}" if missing else "", f"unexpected {unexpected[:4]}" if unexpected else "",
            f"shape mismatch {wrong[:3]}" if wrong else ""]))
        raise CheckpointError(f"{source}: weights are of another architecture ({details}). Fix: load the file "
                              "with the class's own load(), which rebuilds the network from the file's config")
    if strict_values:
        module.load_state_dict(tensors)


# ---------------------------------------------------------------------------------- checkpoints


def optimizer_state(optimizer: torch.optim.Optimizer, prefix: str) -> tuple[dict[str, Tensor], dict]:
    """An optimizer's state as flat tensors named ``prefix.i.name`` plus the JSON-able rest."""
    state = optimizer.state_dict()
    tensors = {f"{prefix}.{i}.{k}": v for i, s in state["state"].items() for k, v in s.items()
               if isinstance(v, Tensor)}
    return tensors, {"param_groups": state["param_groups"]}


def restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, Tensor], meta: dict, prefix: str) -> None:
    state: dict[int, dict[str, Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith(prefix + "."):
            _, index, name = key.rsplit(".", 2)
            state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save_checkpoint(folder: str | Path, step: int, tensors: dict[str, Tensor],
                    meta: dict[str, Any] | None = None, keep: int = 2) -> Path:
    """Write ``step_NNNNNN.safetensors`` atomically with ``meta`` as JSON in its header; keep the newest
    ``keep`` checkpoints (older ones are removed only after the new one is in place)."""
    folder = Path(folder)
    path = folder / f"step_{step:06d}.safetensors"
    write_weights(path, tensors, {"step": str(step), "meta": json.dumps(meta or {}, default=jsonable)})
    for _, old in checkpoints(folder)[:-keep] if keep > 0 else []:
        old.unlink(missing_ok=True)
    return path


def checkpoints(folder: str | Path) -> list[tuple[int, Path]]:
    """(step, path) of the checkpoints in ``folder``, oldest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted((int(m.group(1)), p) for p in folder.iterdir() if (m := _CHECKPOINT_RE.match(p.name)))


def last_checkpoint(folder: str | Path) -> tuple[int, dict[str, Tensor], dict[str, Any]] | None:
    """(step, tensors, meta) of the newest checkpoint that loads completely and holds finite values, or None.

    A damaged newest file (e.g. copied half-way by hand) is skipped in favour of the one before it.
    """
    for step, path in reversed(checkpoints(folder)):
        try:
            tensors = load_file(path)
            with safe_open(path, "pt") as f:
                header = f.metadata() or {}
            check_finite(tensors, path, "")
            if "sha256" in header and header["sha256"] != digest(tensors):
                continue
            return step, tensors, json.loads(header.get("meta", "{}"))
        except (SafetensorError, OSError, ValueError, RuntimeError, json.JSONDecodeError):
            continue
    return None
