"""Grid run-folder hashes survive new TrainJob / explain fields: a key added with a default leaves every
existing run's folder name unchanged (finished runs are not orphaned); setting it changes the name."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import yaml

from anomalens.atomic import jsonable
from anomalens.experiments.grid import HASHED_EXPLAIN_KEYS, HASHED_TRAIN_KEYS, check_grid, config_hash

GRID = {"name": "tiny", "base": {"dataset": "glyphs", "oe": "glyph_letters", "oe_size": 128, "epochs": 1},
        "grid": {"detector": ["bce"], "normal": ["0"]}}


def _legacy_hash(config: dict) -> str:
    """The hash as computed before the rule: every key of the config of that time, data_root left out."""
    old = copy.deepcopy(config)
    old["train"] = {k: v for k, v in old["train"].items() if k in HASHED_TRAIN_KEYS and k != "data_root"}
    if old.get("explain"):
        old["explain"] = {k: v for k, v in old["explain"].items() if k in HASHED_EXPLAIN_KEYS}
    text = json.dumps(old, sort_keys=True, separators=(",", ":"), default=jsonable)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _runs(tmp_path: Path, **changes):
    spec = copy.deepcopy(GRID)
    spec["base"].update(changes)
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(spec))
    return check_grid(path)


def test_new_fields_at_their_default_keep_the_old_hash(tmp_path: Path) -> None:
    (run,) = _runs(tmp_path)
    assert "filter" in run.config["train"] and "oe_classes" in run.config["train"]  # resolved with the new keys
    # the name the code before the new fields gave this run (checked on that commit)
    assert config_hash(run.config) == _legacy_hash(run.config) == "aef608e6fe1c"
    assert run.name.endswith("aef608e6fe1c")
    unknown = copy.deepcopy(run.config)
    unknown["train"]["not_a_trainjob_field"] = 1  # a key without a known default is always hashed
    assert config_hash(unknown) != config_hash(run.config)


def test_new_fields_set_away_from_the_default_change_the_hash(tmp_path: Path) -> None:
    (plain,) = _runs(tmp_path)
    (filtered,) = _runs(tmp_path, filter="low", filter_cutoff=4)
    (diverse,) = _runs(tmp_path, oe_classes=3)
    (default_radial,) = _runs(tmp_path, hsc_radial="pseudo_huber")  # the default, written out
    assert len({plain.name, filtered.name, diverse.name}) == 3
    assert default_radial.name == plain.name


def test_explain_keys_at_their_default_keep_the_hash(tmp_path: Path) -> None:
    spec = copy.deepcopy(GRID)
    spec["explain"] = {"method": "heatmap"}
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(spec))
    (run,) = check_grid(path)
    assert run.name.endswith("b8fda1bc0ce5")  # as before the rule (checked on that commit)
    extended = copy.deepcopy(run.config)
    extended["explain"]["shown"] = 12  # the default, present in both
    assert config_hash(extended) == config_hash(run.config) == _legacy_hash(run.config)
    extended["explain"]["shown"] = 5
    assert config_hash(extended) != config_hash(run.config)
