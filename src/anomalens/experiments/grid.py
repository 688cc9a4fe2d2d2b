"""A grid of runs from one YAML file: the papers' protocols (scenarios x detectors x seeds) as one
resumable command.

A grid file (full schema in docs/grids.md)::

    name: mnist_one_vs_rest
    base: {dataset: mnist, oe: kmnist, epochs: 20}      # TrainJob keys: the CPU-scale recipe
    grid: {detector: [bce, hsc], normal: ["0", "1"]}    # key -> list, expanded as a product
    seeds: 3                                            # a count (0, 1, 2) or a list [0, 5]
    overrides: [{when: {detector: dsvdd}, set: {oe: null}}]
    explain: {method: counterfactual, steps: 1500}      # optional, per run after training
    paper: {base: {epochs: 80}, seeds: 4}               # the paper-scale recipe (--scale paper)

Each run's resolved config (every TrainJob field, the explainer's full config, the seed) is hashed
into its folder name, ``runs/<readable prefix>-<12 hex>``; the same config always lands in the same
folder, so rerunning a grid skips finished runs (``done`` marker) and resumes interrupted ones from
their checkpoints (the run functions resume by themselves when called again on the same folder).
What one run does (train, then explain) is ``grid_jobs.run_one``; markers and locks are ``grid_state``;
where runs execute is ``launchers``.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import itertools
import json
import os
import re
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import MISSING, asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from anomalens.atomic import atomic_write_json, atomic_write_text, jsonable
from anomalens.config import from_dict
from anomalens.errors import AnomalensError, ConfigError
from anomalens.experiments import grid_state
from anomalens.experiments.grid_jobs import resolve_explain, run_one
from anomalens.experiments.training_run import TrainJob
from anomalens.progress import format_seconds

PLAN = "plan.json"  # the grid's runs (name, config) and display settings, written by every `grid run`
RESOLVED = "resolved.yaml"  # a run's resolved config (train + explain), written before it starts
RESULT = "result.json"  # a finished run's flat scalar metrics (train, then explain), read by the collector
LAYOUTS = ("ce", "oe", "curve")
NOT_HASHED = ("data_root",)  # where the data lives is not what the run is: a cluster node may differ
#: The TrainJob fields and explain keys that existed when run folders were first named by hash: always
#: hashed, so those folders keep their names. A key added since is hashed only when its value differs
#: from its default (``_hashed_part``): adding a field with a default orphans no finished run.
HASHED_TRAIN_KEYS = frozenset({
    "dataset", "normal", "detector", "oe", "oe_size", "known_anomalies", "known_size", "colored",
    "labelled_per_type", "anomalies_only", "image_size", "architecture", "trunk_weights", "net", "focal_gamma",
    "epochs", "lr", "milestones", "batch_size", "weight_decay", "augment", "pretrain_epochs", "bf16",
    "channels_last", "seed", "data_root", "device", "window", "stride", "time_column", "feature_columns",
    "label_column", "train_fraction", "normalise"})
HASHED_EXPLAIN_KEYS = frozenset({
    "method", "recipe", "fid_features", "with_sub_auroc", "max_anomalies", "oracle_epochs", "oracle_limit",
    "baseline", "plain", "shown",  # the options of the explain functions
    "concepts", "generator", "autoencoder", "autoencoder_steps", "profile", "lambda_gan", "lambda_phi",
    "lambda_rec", "lambda_r", "lr", "betas", "batch_size", "steps", "milestones", "d_every", "conditional_d",
    "phi_noise", "warmup_steps", "bf16", "channels_last", "seed", "minutes", "log_every", "sample_every",
    "checkpoint_every", "device", "extra",  # CEConfig
    "strength", "sampler", "guidance", "weights", "delta4", "prefill", "infill", "quantile", "diffusion",  # repair
})


# --------------------------------------------------------------------------------------- schema


@dataclass
class GridFile:
    """The grid YAML file. ``base``/``grid``/``overrides``/``explain`` are checked key by key when the
    grid is expanded (``expand``), before any run starts."""

    base: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, Any] = field(default_factory=dict)
    seeds: int | list[int] = 1
    explain: dict[str, Any] | None = None
    overrides: list[dict[str, Any]] = field(default_factory=list)
    paper: dict[str, Any] | None = None
    name: str = "grid"
    description: str = ""
    labels: dict[str, dict[str, str]] = field(default_factory=dict)
    table: str = "ce"
    curve_x: str = "oe_size"  # the key on the curve layout's x axis (a TrainJob key or explain.<key>)

    def __post_init__(self) -> None:
        if isinstance(self.seeds, int) and self.seeds < 1:
            raise ConfigError(f"seeds: {self.seeds} runs nothing. Fix: a count >= 1 or a list of seeds, e.g. [0, 1]")
        if isinstance(self.seeds, list) and (not self.seeds or len(set(self.seeds)) != len(self.seeds)):
            raise ConfigError(f"seeds: {self.seeds} must be a non-empty list without repeats, e.g. [0, 1, 2]")
        for key, values in self.grid.items():
            if not isinstance(values, list) or not values:
                raise ConfigError(f"grid: {key}: expected a non-empty list of values, got {values!r}. "
                                  f"Fix: `{key}: [{values!r}]`, or move a single value to base")
        for i, rule in enumerate(self.overrides):
            if not isinstance(rule, dict) or set(rule) != {"when", "set"} or not all(
                    isinstance(rule[k], dict) for k in rule):
                raise ConfigError(f"overrides[{i}]: expected {{when: {{key: value}}, set: {{key: value}}}}, "
                                  f"got {rule!r}")
        if self.curve_x not in TrainJob.__dataclass_fields__ and not self.curve_x.startswith("explain."):
            raise ConfigError(f"curve_x: {self.curve_x!r} is not a TrainJob key. Fix: e.g. oe_size, oe_classes, "
                              "filter_cutoff, focal_gamma, hsc_radial, or explain.<key>")
        if self.table not in LAYOUTS:
            raise ConfigError(f"table: {self.table!r} is not a layout. Fix: one of {', '.join(LAYOUTS)}")
        unknown = sorted(set(self.paper or {}) - {"base", "grid", "explain", "seeds", "overrides"})
        if unknown:
            raise ConfigError(f"paper: unknown key(s) {unknown}. Fix: the paper block holds base, grid, explain, "
                              "seeds and overrides, which replace or extend the CPU-scale values")
        if self.explain is not None and "method" not in self.explain:
            raise ConfigError("explain: no method. Fix: add `method: counterfactual` (or repair, heatmap, gradient)")
        self.labels = {str(k): {str(v): str(t) for v, t in (m or {}).items()} for k, m in self.labels.items()}


class _Loader(yaml.SafeLoader):
    """YAML that reads 1e-4 as a number (PyYAML follows YAML 1.1, where it is a string)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?$|^[-+]?\.(?:inf|Inf|INF)$|^\.(?:nan|NaN|NAN)$"),
    list("-+0123456789."))


def parse_yaml(text: str, source: str) -> Any:
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: not valid YAML ({e})") from e


def load_grid(path: str | Path, scale: str = "cpu", sets: tuple[str, ...] = ()) -> GridFile:
    """Read a grid file; ``scale="paper"`` applies its ``paper:`` block, ``sets`` are ``KEY=VALUE`` overrides."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the grid file ({e.strerror}). Fix: pass an existing YAML file, "
                          "e.g. grids/mnist_one_vs_rest.yaml") from e
    try:
        spec = from_dict(GridFile, parse_yaml(text, str(path)) or {}, str(path))
    except ConfigError as e:
        raise ConfigError(str(e) if str(e).startswith(str(path)) else f"{path}: {e}") from e
    return with_sets(with_scale(spec, scale, str(path)), sets, str(path))


def with_scale(spec: GridFile, scale: str, source: str = "grid") -> GridFile:
    """The grid at ``scale``: ``cpu`` is the file as written, ``paper`` merges its ``paper:`` block
    (base, grid and explain keys replaced one by one, seeds replaced, overrides appended)."""
    if scale == "cpu":
        return spec
    if scale != "paper":
        raise ConfigError(f"scale {scale!r} unknown. Fix: cpu (the file's values) or paper (its paper: block)")
    if not spec.paper:
        raise ConfigError(f"{source}: no paper: block, so no paper-scale recipe. Fix: add one or use --scale cpu")
    data = asdict(spec)
    paper = data.pop("paper")
    data["explain"] = _without_other_recipes_tuning(data["explain"], paper.get("explain"))
    for key in ("base", "grid", "explain"):
        if key in paper:
            data[key] = {**(data[key] or {}), **paper[key]}
    data["seeds"] = paper.get("seeds", data["seeds"])
    data["overrides"] = data["overrides"] + paper.get("overrides", [])
    return from_dict(GridFile, data, f"{source} (paper scale)")


def _without_other_recipes_tuning(explain: dict[str, Any] | None, paper: dict[str, Any] | None) -> dict | None:
    """The CPU explain block minus the keys its counterfactual recipe sets, when the paper block names
    another recipe: the CPU budget (``steps: 2000``) is tuning of the ``cpu`` recipe, not of ``paper``."""
    if not explain or not paper or explain.get("method") != "counterfactual":
        return explain
    recipe = explain.get("recipe", "cpu")
    if paper.get("recipe", recipe) == recipe:
        return explain
    from anomalens.explain.counterfactual import RECIPES

    return {key: value for key, value in explain.items() if key not in RECIPES.get(recipe, {})}


def with_sets(spec: GridFile, sets: tuple[str, ...], source: str = "grid") -> GridFile:
    """``KEY=VALUE`` overrides (VALUE is YAML): ``seeds=2``, ``explain.steps=100``, ``grid.normal=[3, 5]``,
    or a base key ``epochs=2``. A base or explain key is then the value of every run: it also replaces a
    grid axis of that name by the single value, and no override sets it any more."""
    data = asdict(spec)
    for item in sets:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set epochs=2 or --set explain.steps=100")
        value = parse_yaml(raw, f"--set {key}")
        if key == "seeds":
            data["seeds"] = value
        elif key.startswith("grid."):
            data["grid"][key[5:]] = value
        else:
            if key.startswith("explain."):
                if data["explain"] is None:
                    raise ConfigError(f"--set {key}: the grid has no explain block. Fix: add one to the file")
                data["explain"][key[8:]] = value
            else:
                data["base"][key] = value
            data["grid"].pop(key, None)
            for rule in data["overrides"]:
                rule["set"].pop(key, None)
    return from_dict(GridFile, data, f"{source} with --set")


# ------------------------------------------------------------------------------------ expansion


@dataclass
class PlannedRun:
    name: str
    config: dict[str, Any]
    point: dict[str, Any]  # the grid values (and seed) that made this run, for progress lines


def _train_defaults() -> dict[str, Any]:
    return json.loads(json.dumps({f.name: f.default for f in fields(TrainJob) if f.default is not MISSING},
                                 default=jsonable))


def _explain_defaults(explain: dict[str, Any]) -> dict[str, Any]:
    """The explain block that the method (and, for counterfactuals, the recipe) gives with no key set."""
    return json.loads(_explain_defaults_text(explain["method"], explain.get("recipe")))


@functools.lru_cache(maxsize=16)
def _explain_defaults_text(method: str, recipe: str | None) -> str:
    return json.dumps(resolve_explain({"method": method, **({"recipe": recipe} if recipe else {})}, 0, "hash"))


def _hashed_part(values: dict[str, Any], always: frozenset[str], defaults: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if k in always or k not in defaults or v != defaults[k]}


def config_hash(config: dict[str, Any]) -> str:
    """12 hex digits of the sha256 of the config's canonical JSON (sorted keys, no spaces), without
    ``NOT_HASHED`` and without keys added after ``HASHED_TRAIN_KEYS`` / ``HASHED_EXPLAIN_KEYS`` that hold
    their default value."""
    hashed = copy.deepcopy(config)
    hashed["train"] = _hashed_part(hashed["train"], HASHED_TRAIN_KEYS, _train_defaults())
    for key in NOT_HASHED:
        hashed["train"].pop(key, None)
    if hashed.get("explain"):
        hashed["explain"] = _hashed_part(hashed["explain"], HASHED_EXPLAIN_KEYS, _explain_defaults(hashed["explain"]))
    text = json.dumps(hashed, sort_keys=True, separators=(",", ":"), default=jsonable)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def run_name(config: dict[str, Any]) -> str:
    """``<dataset>-<detector>-<normal>[-<explain method>]-s<seed>-<hash>``: readable, and unique by the hash."""
    train = config["train"]
    parts = [train["dataset"], train["detector"], str(train["normal"])]
    if config.get("explain"):
        parts.append(config["explain"]["method"])
    prefix = "-".join(re.sub(r"[^A-Za-z0-9.]+", "_", p).strip("_") for p in parts)[:60]
    return f"{prefix}-s{train['seed']}-{config_hash(config)}"


def _seeds(spec: GridFile) -> list[int]:
    return list(range(spec.seeds)) if isinstance(spec.seeds, int) else list(spec.seeds)


def _no_seed(keys: Any, where: str) -> None:
    if "seed" in keys:
        raise ConfigError(f"{where}: seed is not a grid or base key. Fix: list seeds at the top level, "
                          "`seeds: 3` or `seeds: [0, 1, 2]`")


def _assign(train: dict[str, Any], explain: dict[str, Any] | None, key: str, value: Any, where: str) -> None:
    _no_seed([key], where)
    if key.startswith("explain."):
        if explain is None:
            raise ConfigError(f"{where}: {key} needs an explain block. Fix: add `explain: {{method: ...}}`")
        explain[key[8:]] = value
    else:
        train[key] = value


def _matches(when: dict[str, Any], train: dict[str, Any], explain: dict[str, Any] | None, where: str) -> bool:
    """Whether a run's values match an override's ``when`` (a value, or a list of accepted values)."""
    for key, wanted in when.items():
        if key.startswith("explain."):
            actual = (explain or {}).get(key[8:])
        elif key in TrainJob.__dataclass_fields__:
            actual = train.get(key, TrainJob.__dataclass_fields__[key].default)
        else:
            raise ConfigError(f"{where}: when: {key!r} is not a TrainJob key. Fix: use a train key such as "
                              "detector or normal, or explain.<key>")
        accepted = wanted if isinstance(wanted, list) else [wanted]
        if str(actual) not in {str(a) for a in accepted}:
            return False
    return True


def resolve(train: dict[str, Any], explain: dict[str, Any] | None, seed: int, where: str) -> dict[str, Any]:
    """The run's full config: every TrainJob field (normal as a string: 7 and "7" are one run) and the
    resolved explain block, both with the run's seed."""
    try:
        job = from_dict(TrainJob, {**train, "seed": seed}, where)
    except (ConfigError, TypeError, ValueError) as e:
        raise ConfigError(str(e) if str(e).startswith(where) else f"{where}: {e}") from e
    job.normal = str(job.normal)
    _check_names(job, where)
    resolved = {"train": json.loads(json.dumps(asdict(job), default=jsonable)),
                "explain": resolve_explain(explain, seed, where) if explain else None}
    return resolved


def _check_names(job: TrainJob, where: str) -> None:
    from anomalens.data import catalog
    from anomalens.data.scenarios import oe_sources

    try:
        oe_names = [name for name, _ in oe_sources(job.oe)] if job.oe else []
    except AnomalensError as e:
        raise ConfigError(f"{where}: oe: {e}") from e
    for key, names in (("dataset", [job.dataset]), ("oe", oe_names)):
        for name in names:
            if key == "oe" and name == "confetti":
                continue
            try:
                catalog.get_spec(name)
            except AnomalensError as e:
                raise ConfigError(f"{where}: {key}: {e}") from e


def expand(spec: GridFile, source: str = "grid") -> list[PlannedRun]:
    """Every run of the grid, seed-major (all scenarios of the first seed first, so that early tables
    cover every row), each validated; the same config twice (an override making two points equal) is
    one run."""
    keys = list(spec.grid)
    _no_seed(spec.base, f"{source}: base")
    runs: dict[str, PlannedRun] = {}
    for seed in _seeds(spec):
        for values in itertools.product(*(spec.grid[k] for k in keys)):
            point = dict(zip(keys, values))
            where = f"{source}: run {', '.join(f'{k}={v}' for k, v in point.items()) or '(base)'}"
            train = dict(spec.base)
            explain = dict(spec.explain) if spec.explain is not None else None
            for key, value in point.items():
                _assign(train, explain, key, value, f"{source}: grid")
            for i, rule in enumerate(spec.overrides):
                if _matches(rule["when"], train, explain, f"{source}: overrides[{i}]"):
                    for key, value in rule["set"].items():
                        _assign(train, explain, key, value, f"{source}: overrides[{i}]")
            config = resolve(train, explain, seed, where)
            name = run_name(config)
            runs.setdefault(name, PlannedRun(name, config, {**point, "seed": seed}))
    return list(runs.values())


# --------------------------------------------------------------------------------------- running


@dataclass
class Task:
    """What a launcher hands to a worker: one run, its folder and its thread count."""

    name: str
    config: dict[str, Any]
    folder: str
    threads: int = 1


def limit_threads(threads: int) -> None:
    """One thread count for the whole run (torch and any child process): the same count on every
    launcher gives the same numbers (1 vs 2 threads changes the float summation order)."""
    import torch

    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[name] = str(threads)
    torch.set_num_threads(threads)


@contextlib.contextmanager
def _output_to(path: Path) -> Iterator[None]:
    """Send the run's prints, progress lines and log records to its own ``log.txt`` (appended on
    resume), so parallel runs never interleave on the terminal."""
    import logging

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", buffering=1, encoding="utf-8") as stream:
        stream.write(f"== {datetime.now(timezone.utc).isoformat(timespec='seconds')} pid {os.getpid()}\n")
        handler = logging.StreamHandler(stream)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        root = logging.getLogger()
        level = root.level
        root.addHandler(handler)
        root.setLevel(min(level, logging.INFO) if level else logging.INFO)
        try:
            with contextlib.redirect_stdout(stream), contextlib.redirect_stderr(stream):
                yield
        finally:
            root.removeHandler(handler)
            root.setLevel(level)


def execute(task: Task) -> dict[str, Any]:
    """Run one task in this process (a local worker or a Ray task): claim its lock, run it, record
    ``result.json`` + ``done`` or ``failed``. A failing run never raises: its error is recorded and
    returned, so it neither stops the other runs nor gets retried (it would fail the same way)."""
    folder = Path(task.folder)
    limit_threads(task.threads)
    lock = grid_state.claim(folder)
    if lock is None:
        return {"status": grid_state.RUNNING}
    started = time.perf_counter()
    with lock, _output_to(folder / "log.txt"):
        (folder / grid_state.FAILED).unlink(missing_ok=True)
        try:
            metrics = run_one(task.config, folder)
        except Exception as error:  # noqa: BLE001 - recorded in the folder, reported by the launcher
            traceback.print_exc()
            return {"status": grid_state.FAILED, "error": grid_state.mark_failed(folder, error)}
        seconds = time.perf_counter() - started
        atomic_write_json(folder / RESULT, metrics)
        grid_state.mark_done(folder, seconds)
    return {"status": grid_state.DONE, "seconds": seconds, "metrics": metrics}


def write_plan(out: Path, spec: GridFile, runs: list[PlannedRun], source: str = "") -> None:
    """``plan.json`` (what ``grid status`` and ``grid table`` read) and each run's ``resolved.yaml``."""
    atomic_write_json(out / PLAN, {"name": spec.name, "description": spec.description, "source": source,
                                   "table": spec.table, "curve_x": spec.curve_x, "labels": spec.labels,
                                   "runs": [{"name": r.name, "config": r.config} for r in runs]})
    for run in runs:
        path = out / "runs" / run.name / RESOLVED
        if not path.is_file():
            atomic_write_text(path, yaml.safe_dump(run.config, sort_keys=False))


def read_plan(out: str | Path) -> dict[str, Any]:
    path = Path(out) / PLAN
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as e:
        raise ConfigError(f"{path} is missing: {out} is not a grid folder. Fix: pass the --out folder of "
                          "`anomalens grid run`") from e
    except ValueError as e:
        raise ConfigError(f"{path}: damaged ({e}). Fix: rerun `anomalens grid run` to rewrite it") from e


def run_folders(out: str | Path) -> dict[str, Path]:
    """The planned runs' folders, by name."""
    return {r["name"]: Path(out) / "runs" / r["name"] for r in read_plan(out)["runs"]}


def _check_data(runs: list[PlannedRun]) -> None:
    """Refuse a grid whose datasets are missing here, before any run starts (local launcher only:
    on a cluster the nodes hold the data)."""
    from anomalens.data import catalog
    from anomalens.data.scenarios import oe_sources

    needed = {}
    for run in runs:
        train = run.config["train"]
        needed.setdefault(("dataset", train["dataset"], None), train["data_root"])
        for oe, split in oe_sources(train["oe"]) if train["oe"] else []:
            if oe != "confetti":  # generated from the normal images
                needed.setdefault(("oe", oe, split), train["data_root"])
    for (key, name, split), root in needed.items():
        available = catalog.available_splits(name, root)
        if not available or (split is not None and split not in available):
            what = f"{name!r}" + (f" ({split} split)" if split else "")
            raise ConfigError(f"{key}: {what} is not on this machine. Fix: `anomalens data download {name}` or "
                              "point ANOMALENS_DATA (or base: data_root) at it; `anomalens data list` shows where "
                              "it is looked for")


class _Progress:
    """One flushed line per finished run, with counts and an ETA from this session's durations."""

    def __init__(self, total: int, concurrency: Callable[[], int], log: Callable[[str], None], mean: float | None):
        self.total, self.concurrency, self.log, self.prior_mean = total, concurrency, log, mean
        self.finished, self.failed, self.seconds = 0, 0, []

    def __call__(self, task: Task, result: dict[str, Any]) -> None:
        state = result.get("status")
        if state == "retry":
            self.log(f"      {task.name}: {result.get('error')}; retrying")
            return
        self.finished += 1
        if state == grid_state.FAILED and result.get("crashed"):  # the worker died: nobody wrote the marker
            grid_state.mark_failed(Path(task.folder), result.get("error", "worker died"))
        if state == grid_state.DONE:
            self.seconds.append(result["seconds"])
            shown = result.get("metrics", {}).get("ad_auroc")
            detail = f"done in {result['seconds']:.1f} s" + (f", ad_auroc {shown:.4f}" if shown is not None else "")
        elif state == grid_state.FAILED:
            self.failed += 1
            detail = f"FAILED: {result.get('error')}"
        else:
            detail = "skipped: another process is running it"
        mean = sum(self.seconds) / len(self.seconds) if self.seconds else self.prior_mean
        left = self.total - self.finished
        at_once = min(max(1, self.concurrency()), max(1, left))
        eta = f" | ETA {format_seconds(mean * left / at_once)}" if mean and left else ""
        failed = f" | {self.failed} failed" if self.failed else ""
        self.log(f"[{self.finished}/{self.total}] {task.name}: {detail}{failed}{eta}")


def default_threads(workers: int | None) -> int:
    """Threads per run: ``cores // workers`` when a worker count is given, else 1 (on every launcher,
    so the same flags give the same numbers)."""
    return max(1, (os.cpu_count() or 1) // workers) if workers else 1


def run_grid(spec: GridFile, out: str | Path, launcher: str = "local", workers: int | None = None,
             threads: int | None = None, address: str | None = None, retries: int = 2, source: str = "grid",
             log: Callable[[str], None] = print) -> grid_state.Summary:
    """Run every unfinished run of ``spec`` into ``out/runs/`` and return the final summary.

    Done runs are skipped, failed ones retried, interrupted ones resumed; runs held by a live process
    (another `grid run` on the same folder) are left to it. Every run is checked before the first starts.
    """
    from anomalens.experiments.launchers import get_launcher

    out = Path(out)
    runs = expand(spec, source)
    threads = threads or default_threads(workers)
    if launcher == "local":
        _check_data(runs)
        workers = workers or max(1, (os.cpu_count() or 1) // threads)
    runner = get_launcher(launcher, workers=workers, threads=threads, address=address, retries=retries)
    write_plan(out, spec, runs, source)
    folders = {r.name: out / "runs" / r.name for r in runs}
    before = grid_state.summarize(folders)
    todo = [r for r in runs if grid_state.status(folders[r.name]) in (grid_state.PENDING, grid_state.FAILED)]
    log(f"grid {spec.name}: {len(runs)} runs, {before.counts['done']} done, {before.counts['running']} running "
        f"elsewhere, {len(todo)} to run ({before.counts['failed']} of them failed before) with the {launcher} "
        f"launcher, {f'{workers} workers x ' if workers else ''}{threads} thread(s) per run; "
        f"logs in {out / 'runs'}/<run>/log.txt")
    if todo:
        tasks = [Task(r.name, r.config, str(folders[r.name]), threads) for r in todo]
        progress = _Progress(len(tasks), lambda: runner.concurrency, log, before.mean_seconds)
        try:
            runner.run(tasks, execute, progress)
        except KeyboardInterrupt:
            log(f"interrupted: run the same command again to resume ({out})")
            raise
    after = grid_state.summarize(folders)
    log(f"grid {spec.name}: {after.counts['done']}/{after.total} done, {after.counts['failed']} failed, "
        f"{after.counts['running']} running elsewhere -> `anomalens grid table {out}`")
    return after


def check_grid(path: str | Path, scale: str = "cpu", sets: tuple[str, ...] = ()) -> list[PlannedRun]:
    """Load and expand a grid file without running it (a dry run; also what the tests call)."""
    return expand(load_grid(path, scale, sets), str(path))

