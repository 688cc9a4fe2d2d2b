"""Time-series datasets by name or path: what ``anomalens train --dataset ...`` resolves for series.

``skab`` / ``skab/valve1`` and ``synthetic_series`` come from the catalog; a path to a CSV or Parquet
file, or a folder holding such files (searched recursively, each file one recording), is read with
the column names given (``series_readers.read_table``); in a folder, a file without the label column
is a normal recording. The recordings become a windowed task by the
split rule of ``timeseries.series_task``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from anomalens.data import catalog
from anomalens.data.series_readers import read_table
from anomalens.data.timeseries import DEFAULT_WINDOW, Recording, SeriesData, series_task
from anomalens.errors import DataFormatError

SUFFIXES = (".csv", ".parquet", ".pq")


def table_files(folder: Path) -> list[Path]:
    """The CSV/Parquet files under ``folder``, sorted."""
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in SUFFIXES and p.is_file())


def is_series_dataset(dataset: str) -> bool:
    """Whether ``dataset`` names a time series: a series dataset of the catalog, a CSV/Parquet file path,
    or a folder holding such files."""
    path = Path(dataset).expanduser()
    if path.suffix.lower() in SUFFIXES or (path.is_dir() and table_files(path)):
        return True
    try:
        return catalog.get_spec(dataset).kind == "series"
    except FileNotFoundError:
        return False


def load_recordings(dataset: str, data_root: str | Path | None = None, seed: int = 0,
                    time_column: str | None = None, feature_columns: Sequence[str] = (),
                    label_column: str | None = None) -> list[Recording]:
    """The recordings of ``dataset`` (see ``is_series_dataset``); the column options apply to files."""
    path = Path(dataset).expanduser()
    if path.suffix.lower() in SUFFIXES or path.is_dir():
        files = [path] if path.is_file() else table_files(path) if path.is_dir() else []
        if not files:
            raise DataFormatError(path, "no such CSV/Parquet file, nor a folder holding any",
                                  "pass a .csv or .parquet file, or a folder holding them")
        return [read_table(f, time_column, feature_columns, label_column,
                           name=str(f.relative_to(path)) if path.is_dir() else f.name, label_optional=len(files) > 1)
                for f in files]
    return catalog.load_series(dataset, data_root, seed)


def build_series(dataset: str, window: int = DEFAULT_WINDOW, stride: int = 10, train_fraction: float = 0.5,
                 data_root: str | Path | None = None, seed: int = 0, time_column: str | None = None,
                 feature_columns: Sequence[str] = (), label_column: str | None = None,
                 normalise: str = "recording") -> SeriesData:
    """A windowed task from a dataset name or path: ``build_series("skab/valve1")``,
    ``build_series("synthetic_series")``, ``build_series("logs/", time_column="time", label_column="fault")``."""
    recordings = load_recordings(dataset, data_root, seed, time_column, feature_columns, label_column)
    return series_task(recordings, window, stride, train_fraction, normalise,
                       name=f"{dataset} (window {window}, stride {stride})")
