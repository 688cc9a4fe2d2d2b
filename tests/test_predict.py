"""``anomalens predict`` on a folder of the user's own images, the automatic threshold, and the
comparison report, on one tiny run (fcdd on synthetic stripes, 32 px, with a 5-step counterfactual
explainer and a 5-step repair model) built once and shared with test_serve.py."""

from __future__ import annotations

import argparse
import contextlib
import csv
import html
import json
import logging
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from anomalens.cli_serve import add_commands, run_command
from anomalens.detectors.base import Detector
from anomalens.errors import AnomalensError, ConfigError, DataFormatError
from anomalens.experiments.calibration import CALIBRATION_FILE, load_normal_scores
from anomalens.experiments.compare_run import compare_run
from anomalens.experiments.counterfactual_run import explain_counterfactuals
from anomalens.experiments.predict import predict
from anomalens.experiments.repair_run import explain_repairs
from anomalens.experiments.run_explainers import RunExplainers
from anomalens.experiments.training_run import TrainJob, build_data, run_training
from anomalens.explain.counterfactual import CEConfig
from anomalens.explain.heatmap import HeatmapExplainer
from anomalens.explain.repair import RepairConfig
from anomalens.metrics.detection import auroc
from anomalens.metrics.properties import conformal_threshold

TINY_JOB = dict(dataset="synthetic_defects/stripes", detector="fcdd", image_size=32, epochs=1, batch_size=16)


def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run folder with a counterfactual explainer and a repair model; built once per session
    (test_serve.py asks for the same folder)."""
    run = tmp_path_factory.getbasetemp() / "tiny-run"
    if (run / "done").is_file():
        return run
    shutil.rmtree(run, ignore_errors=True)
    run_training(TrainJob(**TINY_JOB), run, progress=False)
    explain_counterfactuals(run, CEConfig.recipe("cpu", profile="tiny", steps=5, warmup_steps=2, sample_every=0,
                                                 batch_size=16, bf16=False, progress=False),
                            with_sub_auroc=False, max_anomalies=16)
    explain_repairs(run, RepairConfig(steps=5, diffusion={"profile": "tiny", "steps": 5}, progress=False),
                    max_anomalies=2, baseline=False)
    (run / "done").write_text("")
    return run


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return tiny_run(tmp_path_factory)


@pytest.fixture(scope="module")
def data():
    return build_data(TrainJob(**TINY_JOB))


def save_png(path: Path, image: torch.Tensor, size: int | None = None, rgb: bool = False) -> Path:
    """A (1, H, W) tensor in [0, 1] as an 8-bit PNG, optionally resized and/or made RGB."""
    path.parent.mkdir(parents=True, exist_ok=True)
    picture = Image.fromarray((image[0].numpy() * 255).round().astype(np.uint8), "L")
    if rgb:
        picture = picture.convert("RGB")
    if size:
        picture = picture.resize((size, size), Image.BICUBIC)
    picture.save(path)
    return path


@contextlib.contextmanager
def captured(caplog):
    """The library's log records, whether or not the CLI's handler stopped their propagation."""
    logger = logging.getLogger("anomalens")
    logger.addHandler(caplog.handler)
    old = logger.level
    logger.setLevel(logging.INFO)
    try:
        yield caplog
    finally:
        logger.removeHandler(caplog.handler)
        logger.setLevel(old)


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_training_stores_the_held_out_normal_scores(run, data):
    detector = Detector.load(run / "detector.safetensors")
    stored = load_normal_scores(run)
    expected = detector.scores(data.test_x[data.test_y == 0]).numpy()
    assert stored is not None and np.allclose(stored, expected, atol=1e-6)
    assert "normal test images" in json.loads((run / CALIBRATION_FILE).read_text())["source"]


def test_predict_class_folders(run, data, tmp_path, caplog):
    normal, anomalous = data.test_x[data.test_y == 0][:6], data.test_x[data.test_y == 1][:6]
    folder = tmp_path / "parts"
    for i, x in enumerate(normal):
        save_png(folder / "good" / f"{i}.png", x)
    for i, x in enumerate(anomalous):
        save_png(folder / "scratch" / f"{i}.png", x)
    save_png(folder / "scratch" / "big_rgb.png", anomalous[0], size=48, rgb=True)  # converted, with a warning
    with captured(caplog):
        summary = predict(run, folder, tmp_path / "out")
    assert "scratch/big_rgb.png" in caplog.text and "resized from 48x48 to 32x32" in caplog.text
    assert "converted to grayscale" in caplog.text

    rows = read_csv(tmp_path / "out" / "predictions.csv")
    assert [r["file"] for r in rows] == [f"good/{i}.png" for i in range(6)] + ["scratch/0.png", "scratch/1.png",
                                                                             "scratch/2.png", "scratch/3.png",
                                                                             "scratch/4.png", "scratch/5.png",
                                                                             "scratch/big_rgb.png"]
    detector = Detector.load(run / "detector.safetensors")
    x = (torch.cat([normal, anomalous]) * 255).round() / 255  # what the 8-bit PNGs hold
    raw, bounded = detector.scores(x).numpy(), detector.scores(x, raw=False).numpy()
    got_raw = np.array([float(r["raw_score"]) for r in rows[:12]])
    assert np.allclose(got_raw, raw, atol=1e-5)
    assert np.allclose([float(r["score"]) for r in rows[:12]], bounded, atol=1e-5)
    threshold = conformal_threshold(torch.from_numpy(load_normal_scores(run)), 0.95)
    assert all(float(r["threshold"]) == pytest.approx(threshold) for r in rows)
    assert all("split-conformal" in r["threshold_rule"] and "0.05" in r["threshold_rule"] for r in rows)
    assert all(r["verdict"] == ("anomalous" if float(r["raw_score"]) > threshold else "normal") for r in rows)
    assert rows[-1]["note"] and not rows[0]["note"] and rows[-1]["class"] == "scratch"

    maps = HeatmapExplainer().fit(detector).explain(x).maps
    saved = np.load(tmp_path / "out" / rows[7]["map"])
    assert saved.shape == (32, 32) and saved.dtype == np.float32 and np.allclose(saved, maps[7].numpy(), atol=1e-5)
    assert rows[0]["heatmap"] == "anomaly_map"  # fcdd's own map, not a gradient
    with Image.open(tmp_path / "out" / rows[0]["overlay"]) as overlay:
        assert overlay.mode == "RGB" and overlay.size[0] >= 128

    labels = np.array([0] * 6 + [1] * 7)
    assert summary["ad_auroc"] == pytest.approx(auroc(labels, [float(r["raw_score"]) for r in rows]))
    assert summary["images"] == 13 and summary["converted"] == 1 and summary["normal_classes"] == ["good"]
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["ad_auroc"] == summary["ad_auroc"]


def test_predict_flat_folder_with_a_given_threshold(run, data, tmp_path):
    folder = tmp_path / "flat"
    for i, x in enumerate(data.test_x[:4]):
        save_png(folder / f"img{i}.png", x)
    save_png(folder / "photo.jpg", data.test_x[4], size=40)
    (folder / "readme.txt").write_text("not an image: skipped by suffix")
    summary = predict(run, folder, threshold="0.2")
    rows = read_csv(run / "predict" / "flat" / "predictions.csv")  # the default --out
    assert len(rows) == 5 and {r["class"] for r in rows} == {""}
    assert all(r["verdict"] == ("anomalous" if float(r["raw_score"]) > 0.2 else "normal") for r in rows)
    assert rows[0]["threshold_rule"] == "given by the user (raw score)"
    assert (run / "predict" / "flat" / "overlays" / "photo.jpg.png").is_file()
    assert "ad_auroc" not in summary


def test_an_older_run_without_stored_scores_recomputes_them(run, data, tmp_path):
    old = tmp_path / "old-run"
    old.mkdir()
    for name in ("config.yaml", "detector.safetensors"):
        shutil.copy(run / name, old / name)
    folder = tmp_path / "few"
    save_png(folder / "a.png", data.test_x[0])
    with pytest.raises(ConfigError, match=r"predates it\). Fix: pass --threshold VALUE"):
        from anomalens.experiments.calibration import resolve_threshold

        resolve_threshold(old)
    predict(old, folder)
    assert np.allclose(load_normal_scores(old), load_normal_scores(run), atol=1e-6)


def test_bad_inputs_give_named_errors(run, data, tmp_path):
    folder = tmp_path / "imgs"
    save_png(folder / "ok.png", data.test_x[0])
    with pytest.raises(ConfigError, match=r"detector.safetensors is missing. Fix: pass the folder of a finished"):
        predict(tmp_path, folder)
    with pytest.raises(DataFormatError, match=r"missing.*is not a folder.*Fix"):
        predict(run, tmp_path / "missing")
    with pytest.raises(DataFormatError, match="holds no image files"):
        (tmp_path / "empty").mkdir()
        predict(run, tmp_path / "empty")
    with pytest.raises(ConfigError, match="neither 'auto' nor a number"):
        predict(run, folder, threshold="high")
    with pytest.raises(ConfigError, match=r"--fpr 2.0 must lie in \(0, 1\)"):
        predict(run, folder, fpr=2.0)
    with pytest.raises(ConfigError, match="too few .* Fix: pass a larger --fpr"):
        predict(run, folder, fpr=0.001)  # 60 held-out scores cannot give a 0.1% threshold

    broken = tmp_path / "broken"
    save_png(broken / "ok.png", data.test_x[0])
    (broken / "truncated.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(DataFormatError, match=r"truncated.png: cannot be read as an image.*Fix"):
        predict(run, broken)
    wide = tmp_path / "wide"
    wide.mkdir()
    Image.new("L", (200, 20)).save(wide / "strip.png")
    with pytest.raises(DataFormatError, match=r"strip.png: image is 200x20 .* distort .*Fix: crop it"):
        predict(run, wide)
    mixed = tmp_path / "mixed"
    save_png(mixed / "loose.png", data.test_x[0])
    save_png(mixed / "good" / "a.png", data.test_x[0])
    with pytest.raises(DataFormatError, match="both images and sub-folders"):
        predict(run, mixed)


def _table_numbers(page: str) -> list[str]:
    return re.findall(r'<td class="num">([^<]+)</td>', page)


def test_comparison_report_shows_every_explanation_with_the_stored_numbers(run, data):
    path = compare_run(run, shown=2)
    page = path.read_text()
    assert path == run / "explain" / "compare" / "report.html"
    assert "http://" not in page and "https://" not in page and page.count("data:image/png;base64,") == 2
    numbers = _table_numbers(page)
    metrics = json.loads((run / "metrics.json").read_text())
    cf_metrics = json.loads((run / "explain" / "counterfactual" / "metrics.json").read_text())
    for value in (metrics["ad_auroc"], metrics["pixel_auc"], cf_metrics["cf_auroc"], cf_metrics["concept_acc"]):
        assert f"{value:.3f}" in numbers

    # the scores shown equal a fresh run of each explainer on the same anomalies
    explainers = RunExplainers.load(run)
    x = data.test_x[data.test_y == 1][:2]
    cf = explainers.counterfactual.explain(x, alpha=0.0)
    repair = explainers.repair.explain(x)
    stored = json.loads((run / "explain" / "compare" / "compare.json").read_text())["anomalies"]
    for i, anomaly in enumerate(stored):
        panels = {p["caption"]: p for p in anomaly["panels"]}
        assert list(panels) == ["input", "heatmap (anomaly_map)", "concept 1", "concept 2", "repair"]
        assert panels["input"]["score"] == pytest.approx(float(cf.score_before[i]), abs=1e-6)
        for k in range(2):
            assert panels[f"concept {k + 1}"]["score"] == pytest.approx(float(cf.score_after[i, k]), abs=1e-6)
        assert panels["repair"]["score"] == pytest.approx(float(repair.score_after[i, 0]), abs=1e-6)
        assert set(panels["repair"]["checks"]) >= {"P1", "P2", "P3", "P4", "M_s", "M_d"}
        for caption in ("input", "concept 1", "concept 2", "repair"):
            assert f"{panels[caption]['score']:.3f}" in numbers
    sections = re.findall(r"<h2>(.*?)</h2>", page)
    assert sections[0] == "Metrics of the run" and len([s for s in sections if s.startswith("Test anomaly")]) == 2
    assert ">P1</th>" in page and html.escape("heatmap (anomaly_map)") in page


def test_commands_through_argparse(run, data, tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="anomalens")
    add_commands(parser.add_subparsers(dest="command", required=True))
    folder = tmp_path / "imgs"
    save_png(folder / "a.png", data.test_x[0])
    assert run_command(parser.parse_args(["predict", str(run), "--images", str(folder), "--out", str(tmp_path / "o"),
                                          "--fpr", "0.1"]))
    assert capsys.readouterr().out.strip() == str(tmp_path / "o" / "predictions.csv")
    assert "false-positive rate <= 0.1 " in read_csv(tmp_path / "o" / "predictions.csv")[0]["threshold_rule"]
    args = parser.parse_args(["serve", str(run)])
    assert (args.host, args.port) == ("127.0.0.1", 8000)  # this machine only, unless --host says otherwise
    with pytest.raises(AnomalensError, match="--shown 0 must be >= 1"):
        run_command(parser.parse_args(["report", str(run), "--shown", "0"]))
    assert not run_command(argparse.Namespace(command="train"))
