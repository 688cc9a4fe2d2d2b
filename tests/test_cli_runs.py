"""The command line end to end on a tiny run: train, Ctrl-C and resume, the counterfactual explainer
(report numbers, user images, a detector file from elsewhere), and bad input that must end in one
line and a non-zero exit with nothing half-written left behind."""

from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from anomalens import cli
from anomalens.detectors.base import Detector
from anomalens.detectors.objectives import HSC

# glyph digits and letters as MNIST and KMNIST files (conftest's mini_glyphs): 200 normal images, 25 steps per epoch
TASK = ["--dataset", "mnist", "--normal", "3", "--detector", "hsc", "--oe", "kmnist", "--oe-size", "256"]


@pytest.fixture(scope="module")
def TRAIN(mini_glyphs) -> list[str]:
    return ["train", *TASK, "--data-root", str(mini_glyphs), "--epochs", "2", "--batch-size", "8"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, TRAIN) -> Path:
    out = tmp_path_factory.mktemp("cli") / "run"
    assert cli.main([*TRAIN, "--out", str(out)]) == 0
    return out


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("anomalens: error:")]
    assert len(lines) == 1, err
    return lines[0]


def test_ctrl_c_during_training_exits_130_and_the_rerun_equals_an_uninterrupted_run(run_dir, TRAIN, tmp_path,
                                                                                      capsys, monkeypatch) -> None:
    original, calls = HSC.loss, {"n": 0}

    def interrupt_in_epoch_2(self, out, y):
        calls["n"] += 1
        if calls["n"] == 30:  # epoch 2 (25 steps per epoch): Ctrl-C, held until the step ends
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, out, y)

    monkeypatch.setattr(HSC, "loss", interrupt_in_epoch_2)
    out = tmp_path / "interrupted"
    assert cli.main([*TRAIN, "--out", str(out)]) == 130
    info = json.loads((out / "run.json").read_text())
    assert info["status"] == "interrupted" and "resume" in info["error"]
    assert not (out / "detector.safetensors").exists()
    assert "interrupted" in capsys.readouterr().err
    monkeypatch.setattr(HSC, "loss", original)
    assert cli.main([*TRAIN, "--out", str(out)]) == 0
    assert json.loads((out / "run.json").read_text())["status"] == "completed"
    resumed, straight = Detector.load(out / "detector.safetensors"), Detector.load(run_dir / "detector.safetensors")
    for name, value in straight.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[name]), name
    first = json.loads((out / "metrics.json").read_text())["train_seconds"]
    assert cli.main([*TRAIN, "--out", str(out)]) == 0  # a finished run: nothing to train, same time reported
    assert json.loads((out / "metrics.json").read_text())["train_seconds"] >= 0.5 * first > 0


def test_explain_counterfactual_from_the_cli_writes_report_numbers_equal_to_metrics(run_dir, capsys) -> None:
    argv = ["explain", str(run_dir), "--method", "counterfactual", "--profile", "tiny", "--steps", "4",
            "--no-sub-auroc", "--oracle-epochs", "1", "--oracle-images", "600", "--max-anomalies", "48"]
    assert cli.main(argv) == 0
    out = run_dir / "explain" / "counterfactual"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 4 and 0 <= metrics["oracle_validity"] <= 1
    # the oracle's own test accuracy stands beside the validity it judges (1 epoch on 600 glyph digits: well above
    # 1/10)
    assert metrics["oracle_accuracy"] == metrics["oracle_accuracy_per_head"]["label"] > 0.3
    assert json.loads((out / "oracle.json").read_text())["test_accuracy"] == metrics["oracle_accuracy_per_head"]
    html = (out / "report.html").read_text()
    for key in ("ad_auroc", "cf_auroc", "concept_acc", "oracle_validity", "oracle_accuracy"):
        row = re.search(rf'<td>{key}</td><td class="num">([^<]*)</td>', html)
        assert row is not None and float(row.group(1)) == pytest.approx(metrics[key], abs=6e-4), key
    assert cli.main([*argv[:7], "6", *argv[8:]]) == 0  # a larger budget continues from the checkpoint
    assert json.loads((out / "metrics.json").read_text())["steps"] == 6
    assert "resumed at step 4" in capsys.readouterr().err


def test_explain_images_writes_one_grid_per_twelve_images_and_their_scores(run_dir, tmp_path) -> None:
    if not (run_dir / "explain" / "counterfactual" / "explainer.safetensors").is_file():
        assert cli.main(["explain", str(run_dir), "--method", "counterfactual", "--profile", "tiny", "--steps", "2",
                         "--no-sub-auroc", "--oracle-epochs", "1", "--oracle-images", "300"]) == 0
    folder = tmp_path / "mine"
    folder.mkdir()
    for i in range(13):
        Image.new("RGB", (40, 40), (0, 15 * i, 200)).save(folder / f"{i:02d}.png")
    assert cli.main(["explain", str(run_dir), "--method", "counterfactual", "--images", str(folder)]) == 0
    written = run_dir / "explain" / "counterfactual" / "images_mine"
    assert sorted(p.name for p in written.glob("*.png")) == ["counterfactuals_000.png", "counterfactuals_001.png"]
    scores = json.loads((written / "scores.json").read_text())
    assert len(scores["input_scores"]) == 13 and all(len(row) == 2 for row in scores["counterfactual_scores"])
    assert all(0 <= s <= 1 for row in scores["counterfactual_scores"] for s in row)
    assert len(set(scores["input_scores"])) > 1  # different images, different scores


def test_a_detector_file_becomes_a_run_but_never_overwrites_one(run_dir, mini_glyphs, tmp_path, capsys,
                                                                 monkeypatch) -> None:
    monkeypatch.setenv("ANOMALENS_DATA", str(mini_glyphs))  # `explain --detector` has no --data-root
    detector = str(run_dir / "detector.safetensors")
    ext = tmp_path / "ext"
    base = ["explain", "--detector", detector, "--dataset", "mnist", "--normal", "3", "--method", "gradient"]
    assert cli.main([*base, "--out", str(ext)]) == 0
    assert (ext / "explain" / "gradient" / "overlays.png").is_file()
    assert cli.main([*base, "--out", str(ext)]) == 0  # the same detector and task again: reused
    config = (run_dir / "config.yaml").read_text()
    assert cli.main([*base[:6], "7", *base[7:], "--out", str(run_dir)]) == 2
    assert "already holds a run" in _one_line_error(capsys) and (run_dir / "config.yaml").read_text() == config


def test_a_typo_leaves_nothing_behind_and_the_corrected_command_runs(TRAIN, tmp_path, capsys) -> None:
    out = tmp_path / "typo"
    bad = [*TRAIN[:2], "mnsit", *TRAIN[3:-2], "--epochs", "1", "--out", str(out)]
    assert cli.main(bad) == 2
    assert "mnsit" in _one_line_error(capsys) and not out.exists()
    assert cli.main([*TRAIN[:-2], "--epochs", "1", "--lr", "1e6", "--out", str(out)]) == 2
    assert "lr must lie in (0, 10]" in _one_line_error(capsys) and not out.exists()
    assert cli.main([*TRAIN[:-2], "--epochs", "1", "--out", str(out)]) == 0


def test_os_errors_are_one_line(TRAIN, tmp_path, capsys, monkeypatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert cli.main([*TRAIN, "--out", str(blocker)]) == 2
    assert "is a file, not a run folder" in _one_line_error(capsys)

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device", str(tmp_path / "full"))

    monkeypatch.setattr("anomalens.atomic.os.fchmod", disk_full)
    assert cli.main([*TRAIN, "--out", str(tmp_path / "full")]) == 2
    line = _one_line_error(capsys)
    assert "No space left on device" in line and "Fix" in line


def test_a_failed_run_is_recorded_and_a_fixed_rerun_completes(TRAIN, tmp_path, monkeypatch) -> None:
    from anomalens.detectors.oe import OEDetector

    def broken(self, data, cfg=None):
        raise RuntimeError("simulated crash")

    out = tmp_path / "crash"
    monkeypatch.setattr(OEDetector, "fit", broken)
    with pytest.raises(RuntimeError):
        cli.main([*TRAIN[:-2], "--epochs", "1", "--out", str(out)])
    info = json.loads((out / "run.json").read_text())
    assert info["status"] == "failed" and "simulated crash" in info["error"]
    monkeypatch.undo()
    assert cli.main([*TRAIN[:-2], "--epochs", "1", "--out", str(out)]) == 0
    info = json.loads((out / "run.json").read_text())
    assert info["status"] == "completed" and info["error"] is None
    assert yaml.safe_load((out / "config.yaml").read_text())["epochs"] == 1


def test_one_oracle_per_dataset_and_seed_is_shared_by_every_scenario(mini_glyphs, tmp_path, monkeypatch) -> None:
    from anomalens.experiments import counterfactual_run
    from anomalens.experiments.training_run import TrainJob

    job = TrainJob(dataset="mnist", normal="3", detector="hsc", data_root=str(mini_glyphs))
    first = counterfactual_run.shared_oracle(job, tmp_path / "a" / "oracle.safetensors", epochs=1, limit=300)
    assert first is not None and first.test_accuracy["label"] > 0.2  # 10 glyph classes: chance is 0.1

    def no_training(*args, **kwargs):
        raise AssertionError("the oracle was trained again")

    monkeypatch.setattr(counterfactual_run, "train_oracle", no_training)
    other_scenario = TrainJob(dataset="mnist", normal="5", detector="bce", data_root=str(mini_glyphs))
    again = counterfactual_run.shared_oracle(other_scenario, tmp_path / "b" / "oracle.safetensors", epochs=1, limit=300)
    assert again.test_accuracy == first.test_accuracy
    assert (tmp_path / "b" / "oracle.safetensors").read_bytes() == (tmp_path / "a" / "oracle.safetensors").read_bytes()
    assert json.loads((tmp_path / "b" / "oracle.json").read_text())["test_accuracy"] == first.test_accuracy
    with pytest.raises(AssertionError, match="trained again"):  # another seed colours and subsamples anew
        counterfactual_run.shared_oracle(TrainJob(dataset="mnist", normal="3", data_root=str(mini_glyphs), seed=1),
                                         tmp_path / "c" / "oracle.safetensors", epochs=1, limit=300)
