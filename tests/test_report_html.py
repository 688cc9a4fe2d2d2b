"""HTML run reports and loss curves: self-contained, escaped, atomically written files."""

from __future__ import annotations

import base64
import io
import os
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from anomalens.report import plots
from anomalens.report.html import MISSING, Report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def write_png(path: Path) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.arange(48, dtype=np.uint8).reshape(4, 4, 3)).save(buffer, format="PNG")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue())
    return buffer.getvalue()


def cells(text: str) -> list[str]:
    return re.findall(r"<t[dh](?:\s[^>]*)?>(.*?)</t[dh]>", text, flags=re.S)


# ------------------------------------------------------------------------------------------ Report


def test_title_subtitle_and_escaped_text(tmp_path: Path) -> None:
    report = Report("AE-XAD on MNIST & friends", subtitle="seed 0")
    report.heading("Results <b>").paragraph("<script>alert(1)</script> & more")
    text = report.write(tmp_path / "report.html").read_text("utf-8")
    assert text.startswith("<!DOCTYPE html>")
    assert "<title>AE-XAD on MNIST &amp; friends</title>" in text
    assert "<h1>AE-XAD on MNIST &amp; friends</h1>" in text and "seed 0" in text
    assert "<h2>Results &lt;b&gt;</h2>" in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; more" in text
    assert "<script" not in text and "<link" not in text and "http" not in text


def test_metrics_table_paper_comparison(tmp_path: Path) -> None:
    rows = [
        {"metric": "cf_auroc", "ours": 0.61234, "paper": 0.56, "target": "<= 0.60"},
        {"metric": "pixel_auroc", "ours": np.float32(0.9), "paper": None, "target": None},
        {"metric": "epochs", "ours": 200, "paper": 200},
    ]
    text = Report("r").metrics_table(rows, caption="vs. paper").write(tmp_path / "r.html").read_text("utf-8")
    assert "<caption>vs. paper</caption>" in text
    assert cells(text) == [
        "metric", "ours", "paper", "target",
        "cf_auroc", "0.612", "0.560", "&lt;= 0.60",
        "pixel_auroc", "0.900", MISSING, MISSING,
        "epochs", "200", "200", MISSING,
    ]
    assert '<td class="num">0.612</td>' in text


def test_metrics_table_explicit_columns_choose_and_order(tmp_path: Path) -> None:
    rows = [{"metric": "auroc", "ours": 0.5, "extra": 1.0}]
    text = Report("r").metrics_table(rows, columns=["ours", "metric", "paper"]).render(tmp_path)
    assert cells(text) == ["ours", "metric", "paper", "0.500", "auroc", MISSING]


def test_key_values_show_exact_values(tmp_path: Path) -> None:
    info = {"seed": 3, "lr": 1e-4, "config": {"b": [1, 2], "a": "x<y"}, "torch": None}
    text = Report("r").key_values(info, caption="run").render(tmp_path)
    assert cells(text) == ["seed", "<code>3</code>", "lr", "<code>0.0001</code>",
                           "config", "<code>{&quot;a&quot;: &quot;x&lt;y&quot;, &quot;b&quot;: [1, 2]}</code>",
                           "torch", f"<code>{MISSING}</code>"]


def test_embedded_image_decodes_to_png_bytes(tmp_path: Path) -> None:
    png = write_png(tmp_path / "run" / "plots" / "roc.png")
    report = Report("r").image(tmp_path / "run" / "plots" / "roc.png", caption="ROC <curve>")
    text = report.write(tmp_path / "elsewhere" / "report.html").read_text("utf-8")
    match = re.search(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert match is not None
    assert base64.b64decode(match.group(1)) == png
    assert "<figcaption>ROC &lt;curve&gt;</figcaption>" in text


def test_linked_image_is_relative_to_report(tmp_path: Path) -> None:
    write_png(tmp_path / "run" / "plots" / "a b.png")
    report = Report("r").image(tmp_path / "run" / "plots" / "a b.png", embed=False)
    text = report.write(tmp_path / "run" / "report.html").read_text("utf-8")
    assert 'src="plots/a%20b.png"' in text and "data:" not in text


@pytest.mark.parametrize("embed", [True, False])
def test_missing_image_gives_note_naming_file(tmp_path: Path, embed: bool) -> None:
    report = Report("r").image(tmp_path / "gone.png", embed=embed).paragraph("still here")
    text = report.write(tmp_path / "report.html").read_text("utf-8")
    assert re.search(r'class="missing">image not found: [^<]*gone\.png</p>', text)
    assert "still here" in text and "<img" not in text


def test_write_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "report.html"
    Report("first").write(path)
    Report("second").write(path)
    assert os.listdir(tmp_path) == ["report.html"]
    assert "<h1>second</h1>" in path.read_text("utf-8")

    def fail(*_args: object) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr("anomalens.atomic.os.replace", fail)
    with pytest.raises(OSError, match="disk gone"):
        Report("third").write(path)
    assert os.listdir(tmp_path) == ["report.html"]
    assert "<h1>second</h1>" in path.read_text("utf-8")


# ------------------------------------------------------------------------------------------ loss curves

HISTORY = [
    {"step": 0, "loss_d": 1.4, "loss_g": 0.7, "loss_rec": 0.5},
    {"step": 10, "loss_d": 1.1, "loss_g": 0.9, "loss_phi": 2.0},
    {"step": 20, "loss_d": 0.9, "loss_con": 0.3, "phase": "warmup"},
    {"step": 30, "loss_d": 0.8, "loss_g": 1.2, "loss_phi": float("nan")},
]


def test_loss_curves_writes_png_with_missing_keys(tmp_path: Path) -> None:
    path = plots.loss_curves(tmp_path / "loss.png", HISTORY, title="training")
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 1000
    assert Image.open(path).size[0] > 100
    assert os.listdir(tmp_path) == ["loss.png"]


def draw(monkeypatch: pytest.MonkeyPatch, history: list[dict], **kwargs):
    """Run loss_curves and return its figure instead of writing it."""
    figures = []
    monkeypatch.setattr(plots, "save_figure", lambda fig, path: figures.append(fig) or Path(path))
    plots.loss_curves("unused.png", history, **kwargs)
    return figures[0].axes[0]


def test_loss_curves_lines_and_log_scale(monkeypatch: pytest.MonkeyPatch) -> None:
    ax = draw(monkeypatch, HISTORY)
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert list(lines) == ["loss_d", "loss_g", "loss_rec", "loss_phi", "loss_con"]
    assert list(lines["loss_g"].get_xdata()) == [0.0, 10.0, 30.0]
    assert list(lines["loss_phi"].get_ydata()) == [2.0]
    assert ax.get_yscale() == "log" and ax.get_xlabel() == "step"


def test_loss_curves_linear_scale_for_non_positive_and_index_x(monkeypatch: pytest.MonkeyPatch) -> None:
    ax = draw(monkeypatch, [{"loss_g": -0.5, "epoch": 1}, {"loss_g": 0.2, "epoch": 2}], x_key="step")
    assert ax.get_yscale() == "linear"
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert list(lines["loss_g"].get_xdata()) == [0.0, 1.0]


def test_loss_curves_empty_history_still_writes(tmp_path: Path) -> None:
    assert plots.loss_curves(tmp_path / "empty.png", []).read_bytes().startswith(PNG_SIGNATURE)


def test_report_with_loss_curves_is_self_contained(tmp_path: Path) -> None:
    png = plots.loss_curves(tmp_path / "run" / "loss.png", HISTORY)
    report = Report("run").image(png, caption="losses")
    out = report.write(tmp_path / "out" / "report.html")
    (tmp_path / "run" / "loss.png").unlink()
    text = out.read_text("utf-8")
    assert "image not found" not in text and "data:image/png;base64," in text
