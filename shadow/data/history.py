"""Cutting a dataset's history into what arrives over time: the past as a dataset, later rows as batches.

A backtest (and a live end-to-end run) plays a time-ordered dataset forward: the loop starts on
rows ``[0, start)`` and each later period arrives as a batch file appended with the product's own
:func:`shadow.data.append.append_batch`, exactly as a user's new data would. The past is written as
a plain CSV dataset (``[source] kind = "csv"``) with the manifest's columns and time column, so
nothing after ``start`` can leak into a sweep: the rows simply are not in any file yet.

Floats are written with ``repr`` precision by pandas, so every value round-trips exactly and the
rows a sweep reads back are the rows of the original dataset. Labels are parsed back from CSV
(text such as ``"01"`` reads as the number 1): whoever scores models trained on the cut dataset
must read its truth the same way, e.g. from the whole table written with :func:`write_prefix`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from shadow.data.loader import read_table
from shadow.data.manifest import DatasetManifest
from shadow.data.sources import ARRAY_SOURCES, read_arrays

__all__ = ["full_table", "write_batch", "write_prefix"]


def full_table(manifest: DatasetManifest) -> pd.DataFrame:
    """The dataset's columns the product uses (target, features, segments, time), rows in order.

    Array sources (images) become one column per flattened value, named as the manifest names
    them, so one CSV layout serves every catalog entry.
    """
    if manifest.source.kind in ARRAY_SOURCES:
        features, target = read_arrays(manifest)
        frame = pd.DataFrame(np.asarray(features, dtype=np.float64), columns=list(manifest.features))
        frame[manifest.target] = target
        return frame
    columns = list(dict.fromkeys([manifest.target, *manifest.features, *manifest.segment_columns,
                                  *([manifest.time_column] if manifest.time_column else [])]))
    return read_table(manifest).loc[:, columns].reset_index(drop=True)


def _toml(value: str | list[str]) -> str:
    # JSON strings and arrays of strings are valid TOML basic strings and arrays.
    return json.dumps(value, ensure_ascii=False)


def write_prefix(manifest: DatasetManifest, table: pd.DataFrame, stop: int, folder: Path, *,
                 name: str | None = None) -> Path:
    """Write rows ``[0, stop)`` of ``table`` as ``folder/dataset.toml`` + ``data.csv``.

    ``name``: the new dataset's catalog name (default ``<name>-upto-<stop>``). Returns the
    manifest's path. The manifest keeps the original's target, features, segment and time
    columns, so batches cut from the same table append to it.
    """
    if not 0 < stop <= len(table):
        raise ValueError(f"write_prefix: stop must be in [1, {len(table)}]; got {stop}")
    folder.mkdir(parents=True, exist_ok=True)
    table.iloc[:stop].to_csv(folder / "data.csv", index=False)
    name = name or f"{manifest.name}-upto-{stop}"
    lines = [
        f"name = {_toml(name)}",
        f"title = {_toml(f'{manifest.title or manifest.name}: rows 0 to {stop - 1}')}",
        f"target = {_toml(manifest.target)}",
        f"features = {_toml(list(manifest.features))}",
        f"segment_columns = {_toml(list(manifest.segment_columns))}",
    ]
    if manifest.time_column:
        lines.append(f"time_column = {_toml(manifest.time_column)}")
    if manifest.input_shape:  # images: the flattened columns keep the model's input shape
        lines.append(f"input_shape = {list(manifest.input_shape)}")
    if manifest.license:
        lines.append(f"license = {_toml(manifest.license)}")
    lines += ["", "[source]", 'kind = "csv"', 'path = "data.csv"']
    if manifest.label_lags:  # the same promise, so the same features are derived from the rows
        lines += ["", "[lagged_labels]", "known_before_next_row = true",
                  f"lags = {manifest.label_lags}"]
    path = folder / "dataset.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_batch(table: pd.DataFrame, start: int, stop: int, path: Path) -> Path:
    """Write rows ``[start, stop)`` of ``table`` as a CSV batch file at ``path``; returns it."""
    if not 0 <= start < stop <= len(table):
        raise ValueError(f"write_batch: need 0 <= start < stop <= {len(table)}; got "
                         f"[{start}, {stop})")
    path.parent.mkdir(parents=True, exist_ok=True)
    table.iloc[start:stop].to_csv(path, index=False)
    return path
