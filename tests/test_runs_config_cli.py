"""Run folders, checkpoints, configs, metrics and the command line."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from anomalens import cli
from anomalens.atomic import atomic_write_text, exclusive
from anomalens.checkpoints import last_checkpoint, save_checkpoint
from anomalens.config import from_dict, load_config
from anomalens.errors import ConfigError
from anomalens.metrics.detection import auroc, score_distance
from anomalens.runs import Run, RunExistsError

# ------------------------------------------------------------------------------------------- runs


def test_run_folder_records_config_seed_versions(tmp_path: Path) -> None:
    run = Run.create(tmp_path / "r", {"lr": 0.001, "widths": (16, 32)}, seed=5, command="test")
    run.write_metrics({"ad_auroc": 0.9})
    run.write_metrics({"score_distance": np.float32(0.25)})
    run.finish()
    assert yaml.safe_load((tmp_path / "r" / "config.yaml").read_text()) == {"lr": 0.001, "widths": [16, 32]}
    info = json.loads((tmp_path / "r" / "run.json").read_text())
    assert info["seed"] == 5 and info["versions"]["torch"].startswith("2.")
    assert info["started_at"] and info["finished_at"] and info["status"] == "completed"
    assert json.loads((tmp_path / "r" / "metrics.json").read_text()) == {"ad_auroc": 0.9, "score_distance": 0.25}
    assert not list((tmp_path / "r").glob(".*tmp"))  # no temporary files left behind


def test_run_refuses_other_config_on_resume_but_continues_with_another_budget(tmp_path: Path) -> None:
    Run.create(tmp_path, {"a": 1, "steps": 10}, seed=0).finish()
    again = Run.create(tmp_path, {"a": 1, "steps": 10}, seed=0)
    assert len(again.info["resumed_at"]) == 1 and again.info["status"] == "running"
    with pytest.raises(RunExistsError, match=r"another config \(changed: a\)"):
        Run.create(tmp_path, {"a": 2, "steps": 10}, seed=0)
    more = Run.create(tmp_path, {"a": 1, "steps": 20, "minutes": 5}, seed=0)  # a new budget continues the run
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["steps"] == 20 and more.info["resumed_at"]
    Run.create(tmp_path, {"a": 1, "steps": 20, "minutes": 5, "generations": 12}, seed=0)  # oe-search's budget


def test_a_failed_first_attempt_does_not_block_the_corrected_command(tmp_path: Path) -> None:
    run = Run.create(tmp_path, {"dataset": "mnsit"}, seed=0)
    with pytest.raises(ValueError), run.recording():
        raise ValueError("unknown dataset 'mnsit'")
    info = json.loads((tmp_path / "run.json").read_text())
    assert info["status"] == "failed" and "mnsit" in info["error"]
    fixed = Run.create(tmp_path, {"dataset": "mnist"}, seed=0)  # nothing was trained: start afresh
    with fixed.recording():
        pass
    info = json.loads((tmp_path / "run.json").read_text())
    assert info["status"] == "completed" and info["error"] is None and info["resumed_at"] == []


def test_run_files_follow_the_umask(tmp_path: Path) -> None:
    import os

    old = os.umask(0o002)
    try:
        Run.create(tmp_path / "shared", {"a": 1}, seed=0)
    finally:
        os.umask(old)
    assert oct((tmp_path / "shared" / "config.yaml").stat().st_mode & 0o777) == oct(0o664)


def test_seeding_is_reproducible(tmp_path: Path) -> None:
    Run.create(tmp_path / "a", {}, seed=11)
    first = torch.rand(3)
    Run.create(tmp_path / "b", {}, seed=11)
    assert torch.equal(first, torch.rand(3))


def test_checkpoints_resume_from_last_complete(tmp_path: Path) -> None:
    folder = tmp_path / "ckpt"
    assert last_checkpoint(folder) is None
    for epoch in (1, 2, 3):
        save_checkpoint(folder, epoch, {"w": torch.full((2,), float(epoch))}, {"loss": 1.0 / epoch}, keep=2)
    assert sorted(p.name for p in folder.iterdir()) == ["step_000002.safetensors", "step_000003.safetensors"]
    epoch, tensors, meta = last_checkpoint(folder)
    assert epoch == 3 and tensors["w"].tolist() == [3.0, 3.0] and meta == {"loss": pytest.approx(1 / 3)}
    newest = folder / "step_000003.safetensors"
    newest.write_bytes(newest.read_bytes()[:20])  # damaged by hand: the previous one is used
    epoch, tensors, _ = last_checkpoint(folder)
    assert epoch == 2 and tensors["w"].tolist() == [2.0, 2.0]


def test_atomic_write_leaves_old_file_on_failure(tmp_path: Path, monkeypatch) -> None:
    target = atomic_write_text(tmp_path / "m.json", "old")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr("os.replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_text(target, "new")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["m.json"]


def test_exclusive_makes_a_second_holder_wait(tmp_path: Path) -> None:
    import threading
    import time

    events: list[str] = []

    def hold(name: str, seconds: float) -> None:
        with exclusive(tmp_path / "x.lock"):
            events.append(f"{name} in")
            time.sleep(seconds)
            events.append(f"{name} out")

    first = threading.Thread(target=hold, args=("a", 0.3))
    first.start()
    while not events:
        time.sleep(0.01)
    hold("b", 0)
    first.join()
    assert events == ["a in", "a out", "b in", "b out"]


# ----------------------------------------------------------------------------------------- config


@dataclass
class _Cfg:
    epochs: int = 3
    lr: float = 1e-3
    widths: tuple[int, ...] = (4, 8)
    oe: str | None = None
    extra: dict = field(default_factory=dict)


def test_config_validation(tmp_path: Path) -> None:
    cfg = from_dict(_Cfg, {"epochs": 5, "lr": 1, "widths": [2, 4]})
    assert cfg.lr == 1.0 and cfg.widths == (2, 4) and cfg.oe is None
    with pytest.raises(ConfigError, match=r"unknown setting\(s\) \['epoch'\]"):
        from_dict(_Cfg, {"epoch": 5})
    with pytest.raises(ConfigError, match="epochs: expected an integer"):
        from_dict(_Cfg, {"epochs": "5"})
    path = tmp_path / "c.yaml"
    path.write_text("epochs: [1\n")
    with pytest.raises(ConfigError, match="c.yaml: not valid YAML"):
        load_config(_Cfg, path)


# ---------------------------------------------------------------------------------------- metrics


def test_auroc_matches_definition_with_ties() -> None:
    labels = np.array([0, 0, 1, 1, 0, 1])
    scores = np.array([0.1, 0.5, 0.5, 0.9, 0.2, 0.3])
    pairs = [(a > n) + 0.5 * (a == n) for a in scores[labels == 1] for n in scores[labels == 0]]
    assert auroc(labels, scores) == pytest.approx(np.mean(pairs))
    assert auroc(labels, -scores) == pytest.approx(1 - np.mean(pairs))
    assert score_distance(torch.tensor(labels), torch.tensor(scores)) == pytest.approx(abs(1.7 / 3 - 0.8 / 3))
    with pytest.raises(ValueError, match="both normal"):
        auroc([1, 1], [0.2, 0.3])


# -------------------------------------------------------------------------------------------- CLI


def test_cli_help_shows_examples(capsys) -> None:
    for argv in (["--help"], ["data", "list", "--help"], ["data", "info", "--help"], ["demo", "--help"]):
        with pytest.raises(SystemExit) as exit_:
            cli.main(argv)
        assert exit_.value.code == 0
        assert "examples:" in capsys.readouterr().out


def test_cli_data_list_and_info(tiny_mnist: Path, capsys) -> None:
    assert cli.main(["data", "list", "--data-root", str(tiny_mnist.parent)]) == 0
    out = capsys.readouterr().out
    assert f"found in {tiny_mnist} (idx)" in out and "built-in (generated)" in out
    assert cli.main(["data", "info", "mnist", "--data-root", str(tiny_mnist.parent), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["splits"]["train"]["count"] == 50 and info["splits"]["test"]["image_shape"] == [28, 28, 1]


def test_cli_errors_are_one_clear_line(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.delenv("ANOMALENS_DATA", raising=False)
    assert cli.main(["data", "info", "cifar100", "--data-root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("anomalens: error: dataset 'cifar100'") and "Traceback" not in err
    monkeypatch.setenv("ANOMALENS_OFFLINE", "1")
    assert cli.main(["data", "download", "mnist", "--data-root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "train-images-idx3-ubyte.gz" in err and str(tmp_path / "mnist") in err


@pytest.mark.slow  # 30 s; tests/test_cli_runs.py covers train and explain through the CLI in the default tier
def test_demo_writes_a_complete_run(tmp_path: Path, capsys) -> None:
    assert cli.main(["demo", "--quick", "--out", str(tmp_path / "demo")]) == 0
    captured = capsys.readouterr()
    out = captured.out + captured.err  # the narration is logged to stderr
    metrics = json.loads((tmp_path / "demo" / "metrics.json").read_text())
    assert 0.5 < metrics["pixel_knn"]["ad_auroc"] <= 1.0  # a real detector score, better than chance
    assert metrics["bce"]["ad_auroc"] > 0.6
    assert metrics["data"]["train_oe"] == 1024 and "AuROC" in out
    cf = metrics["counterfactual"]
    assert 0 <= cf["oracle_validity"] <= 1 and 0 <= cf["concept_acc"] <= 1 and 0 <= cf["cf_auroc"] <= 1
    assert cf["fid_features"].startswith("classifier:") and 0 <= cf["sub_auroc"] <= 1
    assert set(cf["oracle_factor_changes"]["concept_1"]) == {"label", "colour"}
    assert (tmp_path / "demo" / "images" / "samples.png").stat().st_size > 1000
    explained = tmp_path / "demo" / "detector" / "explain" / "counterfactual"
    for name in ("report.html", "counterfactuals.png", "explainer.safetensors", "oracle.safetensors",
                 "images/losses.png", "metrics.json"):
        assert (explained / name).is_file(), name
    assert "report.html" in out and json.loads((tmp_path / "demo" / "run.json").read_text())["status"] == "completed"
    html = (explained / "report.html").read_text()
    assert "cf_auroc" in html and "data:image/png;base64," in html


@pytest.mark.slow
def test_full_demo_meets_its_targets(tmp_path: Path) -> None:
    """The README's first command as a new user runs it (minutes): the detector beats the pixel baseline."""
    assert cli.main(["demo", "--out", str(tmp_path / "demo")]) == 0
    metrics = json.loads((tmp_path / "demo" / "metrics.json").read_text())
    assert metrics["bce"]["ad_auroc"] > max(0.9, metrics["pixel_knn"]["ad_auroc"])
    assert metrics["counterfactual"]["concept_acc"] > 0.5


def test_cli_train_writes_run_and_resumes(tmp_path: Path, mini_glyphs: Path, capsys) -> None:
    config = tmp_path / "job.yaml"  # glyph digits and letters as MNIST and KMNIST files: 25 steps per epoch
    config.write_text(f"dataset: mnist\ndata_root: {mini_glyphs}\nnormal: 3\ndetector: hsc\noe: kmnist\n"
                      "oe_size: 256\nepochs: 2\nbatch_size: 8\n")
    out = tmp_path / "run"
    assert cli.main(["train", str(config), "--epochs", "1", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["ad_auroc"] > 0.6 and 0 <= metrics["score_distance"] <= 1
    assert yaml.safe_load((out / "config.yaml").read_text())["epochs"] == 1  # the flag overrides the file
    for name in ("detector.safetensors", "images/roc.png", "images/scores.png"):
        assert (out / name).is_file(), name
    assert len(list((out / "checkpoints").glob("step_*.safetensors"))) == 1  # one epoch, one checkpoint
    assert cli.main(["train", str(config), "--epochs", "1", "--out", str(out)]) == 0  # resumes: nothing to train
    info = json.loads((out / "run.json").read_text())
    assert len(info["resumed_at"]) == 1 and info["status"] == "completed"


def test_cli_train_rejects_bad_config(tmp_path: Path, capsys) -> None:
    config = tmp_path / "job.yaml"
    config.write_text("dataset: glyphs\nepoch: 3\n")
    assert cli.main(["train", str(config), "--out", str(tmp_path / "r")]) == 2
    assert "unknown setting(s) ['epoch']" in capsys.readouterr().err


def test_cli_train_aexad_on_defects_writes_pixel_metrics(tmp_path: Path) -> None:
    out = tmp_path / "aexad"
    argv = ["train", "--dataset", "synthetic_defects/grid", "--detector", "aexad", "--epochs", "2",
            "--batch-size", "32", "--image-size", "16", "--out", str(out)]
    assert cli.main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0 <= metrics["pixel_auc"] <= 1 and metrics["heatmap"] == "anomaly_map"
    assert set(metrics["thresholds"]) == {"a=1", "a=1.5", "a=2", "a=2.5", "a=3", "a=3.5"}
    assert metrics["co2_g"] >= 0 and "energy_source" in metrics and "tradeoff_pixel_f1" in metrics
    assert "emissions" in json.loads((out / "run.json").read_text())
    assert (out / "images" / "heatmaps.png").stat().st_size > 1000
    assert cli.main(["explain", str(out)]) == 0
    explained = json.loads((out / "explain" / "heatmap" / "metrics.json").read_text())
    assert explained["pixel_auc"] == pytest.approx(metrics["pixel_auc"], abs=1e-6)
    assert (out / "explain" / "heatmap" / "overlays.png").is_file()
    assert "| mean + 1 std |" in (out / "explain" / "heatmap" / "report.md").read_text()
    assert cli.main(["explain", str(tmp_path)]) == 2  # not a run folder: a clear error, no traceback


def test_demo_rejects_a_bad_step_budget_before_training(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["demo", "--steps", "0", "--out", str(tmp_path / "demo")])
    assert exited.value.code == 2 and "Fix: a whole number >= 1" in capsys.readouterr().err
    assert not (tmp_path / "demo").exists()  # nothing was trained or written


def test_demo_steps_flag_sets_the_explainer_budget_and_its_absence_keeps_the_demos_own(tmp_path: Path) -> None:
    from unittest import mock

    from anomalens.demo import DemoConfig

    with mock.patch("anomalens.demo.run_demo") as run_demo:
        assert cli.main(["demo", "--out", str(tmp_path / "a")]) == 0
        assert run_demo.call_args.args[1].explainer_steps == DemoConfig().explainer_steps == 1200
        assert cli.main(["demo", "--steps", "300", "--out", str(tmp_path / "b")]) == 0
        assert run_demo.call_args.args[1].explainer_steps == 300
