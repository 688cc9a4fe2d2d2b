"""One latent autoencoder per dataset, trained once and shared by every scenario and seed of it.

The counterfactual explainer's latent generator edits in an autoencoder's latent space. Training
that autoencoder per scenario would repeat the same work 30 times per dataset (the CE paper's
grids), so it is trained on the dataset's whole training split (every class, i.e. the normal images
of every scenario) plus the OE images, and cached under ``cache_dir`` by dataset, OE, image shape
and recipe. Its cost is reported once, beside the file, to be amortised over a grid.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from anomalens.atomic import atomic_write_json, exclusive
from anomalens.data import catalog
from anomalens.data.addata import ADData
from anomalens.data.images import to_tensor
from anomalens.data.scenarios import colored_variant, match_format
from anomalens.explain.autoencoders import AutoencoderTraining, save_autoencoder, train_autoencoder

log = logging.getLogger(__name__)
MAX_IMAGES = 30_000  # enough for a small autoencoder; keeps the one-off cost to minutes on a CPU


def labelled_split(job, split: str, limit: int | None, subsample_seed: int):
    """A split of the run's dataset coloured like the run's (another colouring seed per split), at most
    ``limit`` images drawn with ``subsample_seed``: the autoencoder's and the oracle's training data."""
    images = catalog.load(job.dataset, split, job.data_root)
    if job.colored:
        images = colored_variant(images, job.seed + (7 if split == "train" else 8))
    if limit is not None and limit < len(images):
        images = images.subset(np.random.default_rng(subsample_seed).choice(len(images), limit, replace=False))
    return images


def dataset_cache_name(job, key: dict) -> str:
    """A file stem for a cache shared by every scenario of a dataset: the dataset, its colouring, and a
    digest of everything else the cached file depends on (``key``)."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    return f"{job.dataset.replace('/', '_')}{'-colored' if job.colored else ''}-{digest}"


def dataset_images(job, data: ADData, limit: int = MAX_IMAGES) -> torch.Tensor:
    """The dataset's training images of every class at the task's format, plus the task's OE images."""
    if catalog.get_spec(job.dataset).kind == "defects":
        parts = [data.train_normal]
    else:
        train = labelled_split(job, "train", limit, subsample_seed=0)  # one autoencoder for every seed
        parts = [match_format(train.images, tuple(data.image_shape))]
    parts += [t for t in (data.train_oe, data.train_anomalies) if t is not None and len(t)]
    return torch.cat(parts)


def cached_autoencoder(job, data: ADData, training: AutoencoderTraining, cache_dir: str | Path | None = None,
                       progress: bool = True) -> tuple[Path, dict]:
    """(path of the dataset's autoencoder, its record {train_seconds, images, steps}); trained when absent."""
    folder = Path(cache_dir) if cache_dir is not None else Path(catalog.CACHE_DIR) / "autoencoders"
    key = {"dataset": job.dataset, "colored": job.colored, "oe": job.oe, "shape": list(data.image_shape),
           "training": asdict(training)}
    name = dataset_cache_name(job, key)
    path, record_path = folder / f"{name}.safetensors", folder / f"{name}.json"
    with exclusive(folder / f"{name}.lock"):  # parallel workers of a grid train it once
        if path.is_file() and record_path.is_file():
            return path, json.loads(record_path.read_text())
        return path, _train_and_cache(job, data, training, path, record_path, key, progress)


def _train_and_cache(job, data: ADData, training: AutoencoderTraining, path: Path, record_path: Path,
                     key: dict, progress: bool) -> dict:
    folder, name = path.parent, path.stem
    images = dataset_images(job, data)
    log.info(f"training the {job.dataset} latent autoencoder once on {len(images)} images ({training.steps} steps); "
             f"every scenario and seed of {job.dataset} reuses {path}")
    started = time.perf_counter()
    model = train_autoencoder(to_tensor(images) if not isinstance(images, torch.Tensor) else images, training,
                              folder / f"{name}.checkpoints", progress)
    record = {"train_seconds": time.perf_counter() - started, "images": len(images), "steps": training.steps,
              "final_mse": model.history[-1]["mse"] if model.history else None, **key}
    save_autoencoder(model, path, record)
    atomic_write_json(record_path, record)
    return record
