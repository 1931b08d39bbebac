"""The rows visible at a period boundary, as a catalog dataset the product loads.

The sweep API takes a dataset by catalog name or ``dataset.toml`` path, not
arrays, so the replay writes the past (rows ``[0, stop)``) as a CSV plus a
manifest with ``[source] kind = "csv"``: exactly what a user with their own data
does. Nothing after ``stop`` is written, so no sweep can peek at the future.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from shadow.data.loader import read_table
from shadow.data.manifest import DatasetManifest
from shadow.data.sources import ARRAY_SOURCES, read_arrays


def full_table(manifest: DatasetManifest) -> pd.DataFrame:
    """The dataset's columns the product uses (target, features, segments), rows in time order.

    Array sources (images) become one column per flattened value, named as the
    manifest names them, so the same CSV path serves every catalog entry.
    """
    if manifest.source.kind in ARRAY_SOURCES:
        features, target = read_arrays(manifest)
        frame = pd.DataFrame(np.asarray(features, dtype=np.float64), columns=list(manifest.features))
        frame[manifest.target] = target
        return frame
    columns = [manifest.target, *manifest.features, *manifest.segment_columns]
    return read_table(manifest).loc[:, columns].reset_index(drop=True)


def _toml(value: str | list[str]) -> str:
    # JSON strings and arrays of strings are valid TOML basic strings and arrays.
    return json.dumps(value, ensure_ascii=False)


def write_visible(manifest: DatasetManifest, table: pd.DataFrame, stop: int, folder: Path) -> Path:
    """Write rows ``[0, stop)`` as ``folder/dataset.toml`` + ``data.csv``; returns the manifest path."""
    folder.mkdir(parents=True, exist_ok=True)
    # pandas writes floats with repr precision, so the CSV round-trips the values exactly.
    table.iloc[:stop].to_csv(folder / "data.csv", index=False)
    lines = [
        f"name = {_toml(f'{manifest.name}-upto-{stop}')}",
        f"title = {_toml(f'{manifest.title or manifest.name}: rows 0 to {stop - 1} (drift replay)')}",
        f"target = {_toml(manifest.target)}",
        f"features = {_toml(list(manifest.features))}",
        f"segment_columns = {_toml(list(manifest.segment_columns))}",
        f"rows = {stop}",
        "",
        "[source]",
        'kind = "csv"',
        'path = "data.csv"',
    ]
    path = folder / "dataset.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
