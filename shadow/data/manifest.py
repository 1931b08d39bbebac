"""Dataset manifests: ``datasets/<name>/dataset.toml`` parsed and validated.

A manifest is data, not code: where the table comes from, which column is the
target, which are features, and that row order is time order. Nothing is read
from the table itself here; see :mod:`shadow.data.loader`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from selection.validation import Param, check_known_keys, parse_table, read_toml
from shadow.data.target_bins import TargetBins
from shadow.errors import ConfigError

_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
_SQL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")

_TOP = [
    Param("name", str),
    Param("title", str, default=""),
    Param("task", str, default="classification", choices=("classification",)),
    Param("target", str),
    Param("features", list, default=None, help="feature columns (tabular data)"),
    Param("input_shape", list, default=None, help="e.g. [1, 28, 28] for images"),
    Param("segment_columns", list, default=[], help="columns slices may segment by"),
    Param("order", str, default="row", choices=("row",), help="row order is time order"),
    Param("time_column", str, default=None,
          help="column holding each row's time: rows (and appended batches) must not go back in it"),
    Param("rows", int, default=None, low=1),
    Param("license", str, default=""),
    Param("citation", str, default=""),
]
_SOURCE_PACKAGE = [
    Param("kind", str, choices=("package",)),
    Param("package", str),
    Param("resource", str),
    Param("index_col", int, default=None, low=0),
]
_SOURCE_CSV = [
    Param("kind", str, choices=("csv",)),
    Param("path", str, help="relative to the manifest's folder"),
    Param("index_col", int, default=None, low=0),
]
_SOURCE_IDX = [
    Param("kind", str, choices=("idx",)),
    Param("images", list, help="IDX image files (gzip ok), concatenated in order"),
    Param("labels", list, help="IDX label files matching 'images'"),
    Param("install_hint", str, default=""),
]
_SOURCE_SKLEARN = [
    Param("kind", str, choices=("sklearn",)),
    Param("loader", str, choices=("load_digits",)),
]
_SOURCE_DIRECTORY = [
    Param("kind", str, choices=("directory",)),
    Param("path", str, help="the folder of batch files, relative to the manifest's folder"),
    Param("pattern", str, default="*",
          help="glob over the file names in the folder (e.g. '*.parquet'); names starting "
               "with '.' are never read"),
    Param("index_col", int, default=None, low=0, help="index column of CSV batch files"),
]
_SOURCE_SQL = [
    Param("kind", str, choices=("sql",)),
    Param("url", str, help="SQLAlchemy URL, e.g. postgresql+psycopg://user@host:5432/db"),
    Param("table", str, help="the table (or schema.table) holding the rows"),
    Param("order_by", str, help="time or id column: rows are read in its order, versions cut on it"),
]
_SOURCE_KINDS = ("package", "csv", "idx", "sklearn", "directory", "sql")
_DRIFT = [Param("from_row", int, default=None, low=0), Param("note", str, default="")]
#: Most earlier labels a row may carry as features.
MAX_LABEL_LAGS = 16
_LAGGED_LABELS = [
    Param("known_before_next_row", bool,
          help="true when each row's label is known before the next row is scored (a "
               "next-day forecast, a sensor checked within the period); required"),
    Param("lags", int, default=1, low=1, high=MAX_LABEL_LAGS,
          help="how many earlier labels each row carries: features label_lag_1 .. label_lag_N"),
]
#: The name of the feature holding the label of the row ``k`` rows earlier.
LABEL_LAG_PREFIX = "label_lag_"


@dataclass(frozen=True)
class DatasetSource:
    """Where the rows come from: a file in a package, a CSV path, array files, a folder of
    batch files (``location`` is the folder) or a SQL table (``location`` is the table)."""

    kind: str
    location: str
    package: str | None = None
    index_col: int | None = None
    images: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()
    install_hint: str = ""
    #: directory: the glob the batch files' names match.
    pattern: str = "*"
    #: sql: the SQLAlchemy URL (``location`` is the table) and the column rows are ordered by.
    url: str = ""
    order_by: str = ""


@dataclass(frozen=True)
class DatasetManifest:
    """A validated ``dataset.toml``."""

    name: str
    title: str
    task: str
    target: str
    features: tuple[str, ...]
    input_shape: tuple[int, ...] | None
    segment_columns: tuple[str, ...]
    order: str
    #: Column whose values must never decrease down the rows (and across appended batches).
    time_column: str | None
    declared_rows: int | None
    license: str
    citation: str
    source: DatasetSource
    drift_from_row: int | None
    drift_note: str
    path: Path
    #: Earlier rows' labels each row carries as features (``[lagged_labels]``; 0: none).
    label_lags: int = 0
    #: The target cut from a numeric column (``[target_bins]``); None: a column of the table.
    target_bins: TargetBins | None = None

    @property
    def label_features(self) -> tuple[str, ...]:
        """The lagged-label features, after the declared ones: ``label_lag_1`` .. ``_N``."""
        return tuple(f"{LABEL_LAG_PREFIX}{k}" for k in range(1, self.label_lags + 1))

    @classmethod
    def from_file(cls, path: Path) -> DatasetManifest:
        """Read and validate a manifest; raise ConfigError naming the file."""
        raw = read_toml(
            path, "dataset manifest",
            "name a catalog dataset (`shadow datasets`) or a dataset.toml path relative to "
            "the sweep config.",
            "name its dataset.toml, or the dataset by name.",
        )
        return cls.from_dict(raw, path)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], path: Path) -> DatasetManifest:
        where = str(path)
        tables = ("source", "drift", "lagged_labels", "target_bins")
        check_known_keys(raw, [p.name for p in _TOP] + list(tables), where)
        top = parse_table({k: v for k, v in raw.items() if k not in tables}, _TOP, where)
        if not _NAME.match(top["name"]):
            raise ConfigError(
                f"{where}: 'name' must be lower-case letters, digits, '-', '_' or '.'; "
                f"got {top['name']!r}."
            )
        source = _parse_source(raw.get("source"), f"{where} [source]", path.parent)
        shape = _parse_shape(top["input_shape"], where)
        features = top["features"]
        if features is None and shape is not None:
            # Image sources name their pixels; the model sees them flattened.
            features = [f"pixel_{i}" for i in range(int(np.prod(shape)))]
        if not features or not all(isinstance(f, str) and f for f in features):
            raise ConfigError(f"{where}: 'features' must be a non-empty list of column names.")
        if len(set(features)) != len(features):
            raise ConfigError(f"{where}: 'features' lists a column twice: {features}.")
        if top["target"] in features:
            raise ConfigError(f"{where}: the target {top['target']!r} is also listed as a feature.")
        if shape is not None and int(np.prod(shape)) != len(features):
            raise ConfigError(
                f"{where}: 'input_shape' {list(shape)} holds {int(np.prod(shape))} values but "
                f"there are {len(features)} features; make them agree."
            )
        segments = top["segment_columns"]
        if not all(isinstance(c, str) and c for c in segments):
            raise ConfigError(f"{where}: 'segment_columns' must be a list of column names.")
        if top["time_column"] is not None and (
                not top["time_column"] or top["time_column"] == top["target"]):
            raise ConfigError(
                f"{where}: 'time_column' must name a column other than the target; got "
                f"{top['time_column']!r}. Name the table's time (or id) column."
            )
        drift = parse_table(raw.get("drift", {}), _DRIFT, f"{where} [drift]")
        label_lags = _parse_lagged_labels(raw.get("lagged_labels"), f"{where} [lagged_labels]",
                                          features, shape)
        bins = None
        if "target_bins" in raw:
            bins = TargetBins.from_table(raw["target_bins"], f"{where} [target_bins]",
                                         target=top["target"], features=features,
                                         segments=segments, source_kind=source.kind)
        return cls(
            name=top["name"],
            title=top["title"],
            task=top["task"],
            target=top["target"],
            features=tuple(features),
            input_shape=shape,
            segment_columns=tuple(segments),
            order=top["order"],
            time_column=top["time_column"],
            declared_rows=top["rows"],
            license=top["license"],
            citation=top["citation"],
            source=source,
            drift_from_row=drift["from_row"],
            drift_note=drift["note"],
            path=path,
            label_lags=label_lags,
            target_bins=bins,
        )


def _parse_lagged_labels(table: Any, where: str, features: list[str],
                         shape: tuple[int, ...] | None) -> int:
    """How many earlier labels each row carries as features (0 without the table)."""
    if table is None:
        return 0
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: must be a table (known_before_next_row = true, lags = N).")
    parsed = parse_table(table, _LAGGED_LABELS, where)
    if not parsed["known_before_next_row"]:
        raise ConfigError(
            f"{where}: earlier labels may be features only when each row's label is known "
            "before the next row is scored; set known_before_next_row = true if that holds "
            "where the model serves, or remove the table.")
    if shape is not None:
        raise ConfigError(f"{where}: an image dataset (input_shape) cannot carry lagged "
                          "labels; remove the table or 'input_shape'.")
    names = [f"{LABEL_LAG_PREFIX}{k}" for k in range(1, parsed["lags"] + 1)]
    clash = [n for n in names if n in features]
    if clash:
        raise ConfigError(f"{where}: the lagged-label features {clash} clash with declared "
                          "features of the same names; rename those columns.")
    return int(parsed["lags"])


def _parse_source(table: Any, where: str, base: Path) -> DatasetSource:
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: missing [source] table (kind = one of "
                          f"{', '.join(repr(k) for k in _SOURCE_KINDS)}).")
    kind = table.get("kind")
    if kind == "package":
        s = parse_table(table, _SOURCE_PACKAGE, where)
        return DatasetSource("package", s["resource"], package=s["package"], index_col=s["index_col"])
    if kind == "csv":
        s = parse_table(table, _SOURCE_CSV, where)
        return DatasetSource("csv", str((base / s["path"]).resolve()), index_col=s["index_col"])
    if kind == "idx":
        s = parse_table(table, _SOURCE_IDX, where)
        if len(s["images"]) != len(s["labels"]) or not s["images"]:
            raise ConfigError(f"{where}: 'images' and 'labels' must list the same number of files.")
        return DatasetSource(
            "idx", s["images"][0],
            images=tuple(str(base / p) for p in s["images"]),
            labels=tuple(str(base / p) for p in s["labels"]),
            install_hint=s["install_hint"],
        )
    if kind == "sklearn":
        s = parse_table(table, _SOURCE_SKLEARN, where)
        return DatasetSource("sklearn", s["loader"], package="sklearn.datasets")
    if kind == "directory":
        s = parse_table(table, _SOURCE_DIRECTORY, where)
        if not s["pattern"] or "/" in s["pattern"]:
            raise ConfigError(f"{where}: 'pattern' must be a glob over file names in the folder "
                              f"(no '/'), e.g. '*.csv'; got {s['pattern']!r}.")
        return DatasetSource("directory", str((base / s["path"]).resolve()),
                             index_col=s["index_col"], pattern=s["pattern"])
    if kind == "sql":
        s = parse_table(table, _SOURCE_SQL, where)
        for key in ("url", "table", "order_by"):
            if not s[key].strip():
                raise ConfigError(f"{where}: '{key}' must not be empty.")
        if not _SQL_NAME.match(s["table"]) or not _SQL_NAME.match(s["order_by"]):
            bad = s["table"] if not _SQL_NAME.match(s["table"]) else s["order_by"]
            raise ConfigError(f"{where}: {bad!r} is not a plain SQL name (letters, digits, '_', "
                              "one '.' for schema.table); name the table and column as they are.")
        return DatasetSource("sql", s["table"], url=s["url"], order_by=s["order_by"])
    raise ConfigError(
        f"{where}: 'kind' must be one of {', '.join(repr(k) for k in _SOURCE_KINDS)}; got {kind!r}."
    )


def _parse_shape(value: list[Any] | None, where: str) -> tuple[int, ...] | None:
    if value is None:
        return None
    if not value or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value):
        raise ConfigError(f"{where}: 'input_shape' must be positive ints such as [1, 28, 28]; got {value!r}.")
    return tuple(value)
