"""A class target cut from a numeric column by thresholds: a manifest's ``[target_bins]``.

Some real streams carry a measurement where the task is a class: the next day's return
where the question is "up or down". Rewriting the file a package ships is not an option
(the catalog reads it where it is), so the manifest declares the bins and every table read
from the source, the catalog's file and each batch appended to it, gets its class column
computed here, before any table rule is checked. One module holds the rule (right-closed
bins, like ``pandas.cut``'s default) so the catalog file and its batches can never be cut
two ways; it is validated where the manifest is loaded, and the numeric column is refused
as a feature, since a feature it is derived from would hand the model its label.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from selection.validation import Param, parse_table
from shadow.errors import ConfigError, DatasetError

#: Most classes one column may be cut into (more is a regression task in disguise).
MAX_BINS = 64
#: The sources whose tables pass through :func:`with_target` (see ``from_table``).
BINNED_SOURCES = ("package", "csv")

_PARAMS = [
    Param("column", str, help="the numeric column cut into classes; never also a feature"),
    Param("edges", list, help="ascending thresholds: N edges make N + 1 classes"),
    Param("labels", list, help="one class name per bin, lowest values first"),
]


@dataclass(frozen=True)
class TargetBins:
    """The target as the bin each row's ``column`` value falls in.

    Bin ``i`` holds the values in ``(edges[i - 1], edges[i]]``; the first bin has no lower
    end and the last no upper one, so a value equal to an edge belongs to the bin below it
    (``edges = [0.0]``: 0.0 is the lower class, only a positive value the upper one).
    """

    column: str
    edges: tuple[float, ...]
    labels: tuple[str, ...]

    @classmethod
    def from_table(cls, table: Any, where: str, *, target: str, features: list[str],
                   segments: list[str], source_kind: str) -> TargetBins:
        """Validate ``[target_bins]``; ``target`` names the column it creates."""
        parsed = parse_table(table, _PARAMS, where)
        column = parsed["column"]
        if not column:
            raise ConfigError(f"{where}: 'column' must name the numeric column to cut into "
                              "classes; got ''.")
        if column == target:
            raise ConfigError(f"{where}: 'column' {column!r} is also the manifest's 'target'; "
                              "name the class column 'target' creates something else, e.g. "
                              f"'{column}_class'.")
        if column in features:
            raise ConfigError(f"{where}: 'column' {column!r} is also a feature, so the model "
                              "would be shown its own label; remove it from 'features'.")
        if column in segments:
            raise ConfigError(f"{where}: 'column' {column!r} is also a segment column, so "
                              "slices would be cut by the label; remove it from "
                              "'segment_columns'.")
        if source_kind not in BINNED_SOURCES:
            raise ConfigError(f"{where}: derived targets work on {' and '.join(BINNED_SOURCES)} "
                              f"sources, not kind = {source_kind!r}; write the class column into "
                              "the data (a SQL view, or the batch files) and name it as 'target'.")
        edges = parsed["edges"]
        if not edges or len(edges) >= MAX_BINS or not all(
                isinstance(e, (int, float)) and not isinstance(e, bool) and math.isfinite(e)
                for e in edges):
            raise ConfigError(f"{where}: 'edges' must be 1 to {MAX_BINS - 1} finite numbers, "
                              f"e.g. [0.0]; got {edges!r}.")
        if any(b <= a for a, b in zip(edges, edges[1:])):
            raise ConfigError(f"{where}: 'edges' must rise strictly (each above the one before); "
                              f"got {edges!r}. Sort them and drop repeats.")
        labels = parsed["labels"]
        if len(labels) != len(edges) + 1:
            raise ConfigError(f"{where}: {len(edges)} edge{'s' if len(edges) > 1 else ''} make "
                              f"{len(edges) + 1} classes, so 'labels' needs {len(edges) + 1} "
                              f"names; got {len(labels)} ({labels!r}).")
        if not all(isinstance(label, str) and label for label in labels):
            raise ConfigError(f"{where}: 'labels' must be non-empty strings; got {labels!r}.")
        if len(set(labels)) != len(labels):
            raise ConfigError(f"{where}: 'labels' names a class twice: {labels!r}; give each "
                              "bin its own name.")
        return cls(column, tuple(float(e) for e in edges), tuple(labels))

    def classify(self, values: np.ndarray) -> np.ndarray:
        """The label of each value (finite numbers; see :func:`with_target`)."""
        # side="left": the index of the first edge >= value, i.e. right-closed bins.
        index = np.searchsorted(np.asarray(self.edges), values, side="left")
        return np.asarray(self.labels, dtype=object)[index]


def with_target(frame: pd.DataFrame, bins: TargetBins, target: str, where: str) -> pd.DataFrame:
    """``frame`` with the ``target`` column cut from ``bins.column`` (a new frame).

    Raises DatasetError, naming the column and the fix, when the column is missing, not
    numeric or has gaps, or when the table already has a column named as the target (which
    the derived one would silently replace).
    """
    columns = [str(c) for c in frame.columns]
    if target in columns:
        fix = (f"drop {target!r} from the batch: its class is cut from {bins.column!r}, as for "
               "the catalog's file" if where.startswith("batch ") else
               "rename 'target' in the manifest, or remove [target_bins] to use that column as "
               "it is")
        raise DatasetError(f"{where}: the table already has a column {target!r}, which "
                           f"[target_bins] would replace with classes of {bins.column!r}; "
                           f"{fix}.")
    if bins.column not in columns:
        raise DatasetError(f"{where}: column {bins.column!r} ([target_bins] column) is not in "
                           f"the table; it has {', '.join(repr(c) for c in columns)}. Fix "
                           "[target_bins] column in the manifest.")
    source = frame[bins.column]
    if not pd.api.types.is_numeric_dtype(source) or pd.api.types.is_bool_dtype(source):
        raise DatasetError(f"{where}: column {bins.column!r} ([target_bins] column) is not "
                           f"numeric (dtype {source.dtype}); bins cut numbers: name a numeric "
                           "column.")
    values = source.to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        row = int(np.argmax(bad))
        raise DatasetError(f"{where}: column {bins.column!r} ([target_bins] column) has "
                           f"{int(bad.sum())} missing or infinite value"
                           f"{'s' if bad.sum() > 1 else ''} (first at row {row}), which fall "
                           "in no bin; fill or drop those rows first.")
    out = frame.copy(deep=False)
    out[target] = bins.classify(values)
    return out
