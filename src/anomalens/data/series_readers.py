"""Readers of multivariate time series: any CSV or Parquet table, and SKAB's folder layout.

A table has a time column (optional: without one the rows are taken in file order), feature columns
(default: every other column) and an optional label column (1 = anomalous step). The reader refuses,
naming the file, the line and the fix, everything that would otherwise surface as a wrong model
rather than an error: a missing column, a cell that is not a number (units, a decimal comma, an empty
cell), a label other than 0/1, and time stamps that are not strictly increasing (an unsorted export
would shuffle the steps every window is cut from).

SKAB (Katser & Kozitsin 2020, GPL-3.0: benchmark data, never shipped with anomalens) is read from its
``data/`` folder layout: ``anomaly-free/anomaly-free.csv`` plus labelled experiments in ``valve1/``,
``valve2/`` and ``other/``; the fault type of each file comes from the repository's ``data/README.md``.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

import numpy as np

from anomalens.data.timeseries import Recording
from anomalens.errors import DataFormatError

log = logging.getLogger(__name__)
_SEPARATORS = ",;\t|"
_NUMBER_FIX = ("make every feature cell a plain number (decimal point '.', no units or thousands separators) and "
               "fill or drop rows with missing values")

SKAB_SOURCE = "https://github.com/waico/SKAB"
SKAB_FEATURES = ("Accelerometer1RMS", "Accelerometer2RMS", "Current", "Pressure", "Temperature", "Thermocouple",
                 "Voltage", "Volume Flow RateRMS")
SKAB_GROUPS = ("valve1", "valve2", "other")
# other/N.csv: the experiment of each file (SKAB data/README.md at commit b2c0d46)
SKAB_OTHER_FAULTS = {1: "fluid_leak", 2: "fluid_leak", 3: "fluid_leak", 4: "fluid_leak",
                     5: "rotor_imbalance", 6: "rotor_imbalance", 7: "rotor_imbalance", 8: "rotor_imbalance",
                     9: "rotor_imbalance", 10: "water_level", 11: "water_level", 12: "cavitation", 13: "cavitation",
                     14: "hot_water"}


# ------------------------------------------------------------------------------------ raw tables


def _csv_columns(path: Path) -> tuple[list[str], dict[str, list[str]], Callable[[int], str]]:
    """Header, cells per column and a function row index -> "line N" of a CSV file (separator sniffed)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataFormatError(path, f"not UTF-8 text ({e.reason} at byte {e.start})",
                              "save the table as UTF-8 CSV") from e
    first = text.split("\n", 1)[0]
    sep = max(_SEPARATORS, key=first.count)
    reader = csv.reader(io.StringIO(text), delimiter=sep)
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise DataFormatError(path, "the file is empty", "write a header line and one row per time step") from None
    rows, lines = [], []
    for row in reader:
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != len(header):
            raise DataFormatError(path, f"line {reader.line_num} has {len(row)} fields but the header has "
                                  f"{len(header)} (separator {sep!r})", "give every line one cell per header column")
        rows.append(row)
        lines.append(reader.line_num)
    columns = {name: [r[i].strip() for r in rows] for i, name in enumerate(header)}
    return header, columns, lambda i: f"line {lines[i]}"


def _parquet_columns(path: Path) -> tuple[list[str], dict[str, list], Callable[[int], str]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        try:
            import pandas as pd
        except ImportError:
            raise DataFormatError(path, "reading Parquet needs pyarrow (or pandas with pyarrow)",
                                  "pip install pyarrow, or save the table as CSV") from None
        frame = pd.read_parquet(path)
        return list(map(str, frame.columns)), {str(c): frame[c].tolist() for c in frame.columns}, \
            lambda i: f"row {i}"
    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow raises its own error types for damaged files
        raise DataFormatError(path, f"not a readable Parquet file ({str(e)[:200]})", "re-export the table") from e
    return table.column_names, {n: table.column(n).to_pylist() for n in table.column_names}, lambda i: f"row {i}"


# ----------------------------------------------------------------------------------- cell checks


def _numbers(path: Path, column: str, cells: list, where: Callable[[int], str], fix: str = _NUMBER_FIX) -> np.ndarray:
    try:
        values = np.asarray([np.nan if c is None or c == "" else c for c in cells], dtype=np.float64)
    except (ValueError, TypeError):
        for i, cell in enumerate(cells):
            try:
                float(cell)
            except (ValueError, TypeError):
                raise DataFormatError(path, f"column {column!r} holds the non-numeric cell {cell!r} at {where(i)}",
                                      fix) from None
        raise
    bad = ~np.isfinite(values)
    if bad.any():
        i = int(np.argmax(bad))
        raise DataFormatError(path, f"column {column!r} has {int(bad.sum())} empty or non-finite cells, the first "
                              f"{cells[i]!r} at {where(i)}", fix)
    return values


def _times(path: Path, column: str, cells: list, where: Callable[[int], str]) -> np.ndarray:
    """Time stamps as float seconds (numbers, or ISO date-times such as 2020-03-09 10:14:33)."""
    try:
        times = np.asarray(cells, dtype=np.float64)
    except (ValueError, TypeError):
        times = np.empty(len(cells))
        for i, cell in enumerate(cells):
            try:
                times[i] = (cell if isinstance(cell, datetime) else datetime.fromisoformat(str(cell))).timestamp()
            except ValueError:
                raise DataFormatError(path, f"time column {column!r} holds {cell!r} at {where(i)}, neither a number "
                                      "nor an ISO date-time",
                                      "write times as numbers or as YYYY-MM-DD HH:MM:SS") from None
    back = np.flatnonzero(~(np.diff(times) > 0))
    if len(back):
        i = int(back[0]) + 1
        raise DataFormatError(path, f"time column {column!r} is not strictly increasing: {cells[i]!r} at {where(i)} "
                              f"comes after {cells[i - 1]!r} at {where(i - 1)}",
                              f"sort the rows by {column!r} and drop repeated time stamps (e.g. pandas: "
                              f"df.sort_values({column!r}).drop_duplicates({column!r}))")
    return times


def read_table(path: str | Path, time_column: str | None = None, feature_columns: Sequence[str] = (),
               label_column: str | None = None, name: str | None = None, fault: str = "",
               label_optional: bool = False) -> Recording:
    """One CSV (``,``, ``;``, tab or ``|`` separated, with a header line) or Parquet file as a ``Recording``.
    ``feature_columns`` default to every column but the time and label columns. With ``label_optional``
    a file without the label column is an unlabelled (normal) recording, like SKAB's anomaly-free one."""
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(path, "no such file", "pass the path of a CSV or Parquet file")
    reader = _parquet_columns if path.suffix.lower() in (".parquet", ".pq") else _csv_columns
    header, columns, where = reader(path)
    if label_optional and label_column and label_column not in columns:
        log.info(f"{path}: no label column {label_column!r}; read as a normal recording")
        label_column = None
    wanted = [c for c in (time_column, label_column) if c] + list(feature_columns)
    missing = [c for c in wanted if c not in columns]
    if missing:
        raise DataFormatError(path, f"no column(s) {missing}; the header has {header}",
                              "name the columns exactly as in the header (time_column, feature_columns, "
                              "label_column), or fix the header")
    features = list(feature_columns) or [c for c in header if c not in (time_column, label_column)]
    if not features:
        raise DataFormatError(path, "no feature columns besides time and label", "add the sensor columns")
    if not columns[features[0]]:
        raise DataFormatError(path, "the table has a header but no rows", "export the data rows too")
    if time_column:
        _times(path, time_column, columns[time_column], where)
    values = np.stack([_numbers(path, f, columns[f], where) for f in features], 1)
    labels = None
    if label_column:
        labels = _numbers(path, label_column, columns[label_column], where, "write labels as 0 (normal) or 1 (anomaly)")
        bad = (labels != 0) & (labels != 1)
        if bad.any():
            i = int(np.argmax(bad))
            raise DataFormatError(path, f"label column {label_column!r} holds {columns[label_column][i]!r} at "
                                  f"{where(i)}", "write labels as 0 (normal) or 1 (anomaly)")
    return Recording(name or path.name, values, features, labels, fault=fault, source=path)


# ------------------------------------------------------------------------------------------ SKAB


def skab_fault(group: str, number: int) -> str:
    """The fault of SKAB file ``group/number.csv``: the valve experiments by folder, the others by file."""
    return group if group != "other" else SKAB_OTHER_FAULTS.get(number, "other")


def read_skab(folder: str | Path, group: str | None = None) -> list[Recording]:
    """SKAB's anomaly-free recording plus the labelled files of ``group`` (valve1, valve2, other; None =
    all three), in a stable order (group, then file number)."""
    folder = Path(folder)
    if group is not None and group not in SKAB_GROUPS:
        raise DataFormatError(folder, f"SKAB has no group {group!r}", f"use skab or skab/<{'|'.join(SKAB_GROUPS)}>")
    recordings = [read_table(folder / "anomaly-free" / "anomaly-free.csv", "datetime", SKAB_FEATURES,
                             name="anomaly-free.csv")]
    for name in [group] if group else SKAB_GROUPS:
        files = sorted((folder / name).glob("*.csv"), key=lambda p: (not p.stem.isdigit(), int(p.stem) if
                                                                   p.stem.isdigit() else 0, p.stem))
        if not files:
            raise DataFormatError(folder / name, "holds no CSV files", f"copy SKAB's data/{name}/ from {SKAB_SOURCE}")
        for f in files:
            number = int(f.stem) if f.stem.isdigit() else -1
            recordings.append(read_table(f, "datetime", SKAB_FEATURES, "anomaly", name=f"{name}/{f.name}",
                                         fault=skab_fault(name, number)))
    return recordings
