"""Self-contained HTML run reports: one file per run that a user can open or send without the run folder.

Images are embedded as base64 data URIs and the CSS is inline, so the file needs no other assets, network
or JavaScript. It is written atomically, so a crash never leaves half a report behind.
"""

from __future__ import annotations

import base64
import html
import json
import mimetypes
import numbers
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from anomalens.atomic import atomic_write_text

MISSING = "—"

CSS = """
body { font: 15px/1.5 system-ui, sans-serif; color: #222; max-width: 60rem; margin: 2rem auto; padding: 0 1rem; }
h1 { margin-bottom: 0; } .subtitle { color: #666; margin-top: .2rem; }
h2 { border-bottom: 1px solid #ddd; padding-bottom: .2rem; margin-top: 2rem; }
table { border-collapse: collapse; margin: 1rem 0; }
caption { text-align: left; color: #555; padding-bottom: .3rem; }
th, td { border: 1px solid #ddd; padding: .25rem .6rem; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
table.kv th { white-space: nowrap; } code { font-size: 13px; white-space: pre-wrap; word-break: break-word; }
figure { margin: 1rem 0; } img { max-width: 100%; } figcaption { color: #555; font-size: 14px; }
.missing { color: #a40000; background: #fff0f0; border: 1px solid #e0b0b0; padding: .4rem .6rem; }
""".strip()


def format_cell(value: Any) -> str:
    """Table text for one metric: floats to 3 decimals so columns line up, None as a dash."""
    if value is None:
        return MISSING
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
        return f"{float(value):.3f}"
    return str(value)


class Report:
    """Builds a report block by block; ``write`` renders it to one HTML file."""

    def __init__(self, title: str, subtitle: str = "") -> None:
        self.title = title
        self.subtitle = subtitle
        # Blocks render at write time: relative image links depend on where the report goes.
        self._blocks: list[Callable[[Path], str]] = []

    def _add(self, fragment: str) -> Report:
        self._blocks.append(lambda _folder: fragment)
        return self

    def heading(self, text: str) -> Report:
        return self._add(f"<h2>{html.escape(text)}</h2>")

    def paragraph(self, text: str) -> Report:
        return self._add(f"<p>{html.escape(text)}</p>")

    def metrics_table(self, rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None,
                      caption: str = "") -> Report:
        """A table of metric rows, e.g. {"metric": "cf_auroc", "ours": 0.61, "paper": 0.56, "target": "<= 0.60"}.

        Columns default to every key in order of first appearance; a key missing from a row shows as a dash.
        """
        if columns is None:
            columns = list(dict.fromkeys(key for row in rows for key in row))
        head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
        body = "".join("<tr>" + "".join(_td(row.get(c)) for c in columns) + "</tr>\n" for row in rows)
        return self._add(f"<table>{_caption(caption)}<thead><tr>{head}</tr></thead>\n<tbody>\n{body}</tbody></table>")

    def key_values(self, values: Mapping[str, Any], caption: str = "") -> Report:
        """Run info (config, seed, versions); values are shown exactly, since rounding a learning rate misleads."""
        body = "".join(f"<tr><th>{html.escape(str(k))}</th><td><code>{html.escape(_exact(v))}</code></td></tr>\n"
                       for k, v in values.items())
        return self._add(f'<table class="kv">{_caption(caption)}<tbody>\n{body}</tbody></table>')

    def image(self, path: str | Path, caption: str = "", embed: bool = True) -> Report:
        """An image read at write time: embedded as a data URI, or linked relative to the report.

        A missing file becomes a visible note in the report, so one absent plot does not lose the whole report.
        """
        path = Path(path)

        def render(folder: Path) -> str:
            if not path.is_file():
                return f'<p class="missing">image not found: {html.escape(str(path))}</p>'
            if embed:
                mime = mimetypes.guess_type(path.name)[0] or "image/png"
                src = f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"
            else:
                src = quote(Path(os.path.relpath(path.resolve(), folder.resolve())).as_posix())
            alt = html.escape(caption or path.name)
            text = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
            return f'<figure><img src="{src}" alt="{alt}">{text}</figure>'

        self._blocks.append(render)
        return self

    def render(self, folder: str | Path = ".") -> str:
        """The whole HTML document; ``folder`` is where it will live, for relative image links."""
        title = html.escape(self.title)
        subtitle = f'<p class="subtitle">{html.escape(self.subtitle)}</p>\n' if self.subtitle else ""
        body = "\n".join(block(Path(folder)) for block in self._blocks)
        return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
                f'<meta name="viewport" content="width=device-width, initial-scale=1">\n<title>{title}</title>\n'
                f"<style>\n{CSS}\n</style>\n</head>\n<body>\n<h1>{title}</h1>\n{subtitle}{body}\n</body>\n</html>\n")

    def write(self, path: str | Path) -> Path:
        path = Path(path)
        return atomic_write_text(path, self.render(path.parent))


def _td(value: Any) -> str:
    numeric = isinstance(value, numbers.Real) and not isinstance(value, bool)
    attribute = ' class="num"' if numeric else ""
    return f"<td{attribute}>{html.escape(format_cell(value))}</td>"


def _caption(text: str) -> str:
    return f"<caption>{html.escape(text)}</caption>" if text else ""


def _exact(value: Any) -> str:
    if value is None:
        return MISSING
    if isinstance(value, (Mapping, list, tuple)):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)
