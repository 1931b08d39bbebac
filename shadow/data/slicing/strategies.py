"""The built-in slice strategies: all, recent, window, expanding, bootstrap, segment.

Each is a small :class:`~shadow.data.slicing.base.SliceStrategy` (the contract);
``shadow/data/slicing/__init__.py`` registers them. Positions are indices into the
pool, the rows before the holdout.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from selection.validation import Param
from shadow.data.slicing.base import (
    MIN_SLICE_ROWS,
    Columns,
    Slice,
    SliceStrategy,
    build_strategy,
)
from shadow.errors import ConfigError


class AllHistory(SliceStrategy):
    """Every row before the holdout."""

    name = "all"
    params: ClassVar[list[Param]] = []

    def slices(self, pool_size: int, columns: Columns) -> list[Slice]:
        return [Slice("all", self.name, {}, np.arange(pool_size, dtype=np.int64))]


class Recent(SliceStrategy):
    """The last ``rows`` rows before the holdout."""

    name = "recent"
    params: ClassVar[list[Param]] = [Param("rows", int, low=MIN_SLICE_ROWS)]

    def slices(self, pool_size: int, columns: Columns) -> list[Slice]:
        size = self.config["rows"]
        self._need(size, pool_size)
        rows = np.arange(pool_size - size, pool_size, dtype=np.int64)
        return [Slice(f"recent-{size}", self.name, dict(self.config), rows)]


class Window(SliceStrategy):
    """Windows of ``size`` rows every ``stride`` rows, aligned to end at the holdout.

    ``count`` keeps only the most recent windows (all when 0).
    """

    name = "window"
    params: ClassVar[list[Param]] = [
        Param("size", int, low=MIN_SLICE_ROWS),
        Param("stride", int, low=1),
        Param("count", int, default=0, low=0),
    ]

    def slices(self, pool_size: int, columns: Columns) -> list[Slice]:
        size, stride, count = self.config["size"], self.config["stride"], self.config["count"]
        self._need(size, pool_size)
        starts = list(range(pool_size - size, -1, -stride))
        if count:
            starts = starts[:count]
        return [
            Slice(
                f"window-{size}@{start}",
                self.name,
                {"size": size, "stride": stride, "start": start},
                np.arange(start, start + size, dtype=np.int64),
            )
            for start in sorted(starts)
        ]


class Bootstrap(SliceStrategy):
    """``n`` resamples, with replacement, of ``fraction`` x pool rows (seeded)."""

    name = "bootstrap"
    params: ClassVar[list[Param]] = [
        Param("n", int, low=1, high=1000),
        Param("fraction", float, default=1.0, low=0.0, high=1.0, low_open=True),
        Param("seed", int, default=0, low=0, high=2**32 - 1),  # what numpy and torch seed with
    ]

    def slices(self, pool_size: int, columns: Columns) -> list[Slice]:
        n, fraction, seed = self.config["n"], self.config["fraction"], self.config["seed"]
        size = int(round(pool_size * fraction))
        self._need(size, pool_size)
        out = []
        for k in range(n):
            # One generator per replicate keyed by (seed, k): replicate k is the
            # same rows whatever n is, so growing n keeps earlier slice ids valid.
            rng = np.random.default_rng([seed, k])
            rows = np.sort(rng.integers(0, pool_size, size=size, dtype=np.int64))
            params = {"fraction": fraction, "seed": seed, "replicate": k}
            out.append(Slice(f"bootstrap-{fraction!r}-s{seed}-{k}", self.name, params, rows))
        return out


class Expanding(SliceStrategy):
    """Growing windows anchored at the oldest row: ``[0, min_rows)``, ``[0, min_rows + step)``, ...

    Each is "everything known up to then"; ``count`` keeps only the most recent
    (largest) ones (all when 0). The last one ends at the holdout.
    """

    name = "expanding"
    params: ClassVar[list[Param]] = [
        Param("min_rows", int, low=MIN_SLICE_ROWS),
        Param("step", int, low=1),
        Param("count", int, default=0, low=0),
    ]

    def slices(self, pool_size: int, columns: Columns) -> list[Slice]:
        first, step, count = self.config["min_rows"], self.config["step"], self.config["count"]
        self._need(first, pool_size)
        ends = list(range(pool_size, first - 1, -step))
        if count:
            ends = ends[:count]
        return [
            Slice(f"expanding-{end}", self.name, {"min_rows": first, "step": step, "end": end},
                  np.arange(end, dtype=np.int64))
            for end in sorted(ends)
        ]


class Segment(SliceStrategy):
    """One slice per value of a segment column (region, device type, ...).

    Values with fewer than ``min_rows`` rows are skipped. ``within`` applies
    another strategy inside each segment, e.g. the recent rows of each region:
    ``within = { strategy = "recent", rows = 500 }``.
    """

    name = "segment"
    params: ClassVar[list[Param]] = [
        Param("column", str),
        Param("min_rows", int, default=MIN_SLICE_ROWS, low=MIN_SLICE_ROWS),
        Param("within", dict, default=None),
    ]

    def __init__(self, config: dict[str, Any], where: str) -> None:
        super().__init__(config, where)
        inner = config["within"]
        if inner is not None and inner.get("strategy") == "segment":
            raise ConfigError(f"{where}: 'within' cannot be another segment; nest at most once.")
        self.inner = build_strategy(inner, f"{where} within") if inner is not None else None

    def slices(self, pool_size: int, columns: Columns) -> list[Slice]:
        column = self.config["column"]
        if column not in columns:
            raise ConfigError(
                f"{self.where}: segment column {column!r} is not a segment column of the "
                f"dataset; it has {', '.join(repr(c) for c in columns) or 'none'}. "
                "List it under 'segment_columns' in the dataset.toml."
            )
        values = np.asarray(columns[column])[:pool_size]
        out: list[Slice] = []
        for value in sorted(set(values.tolist()), key=str):
            rows = np.flatnonzero(values == value).astype(np.int64)
            if len(rows) < self.config["min_rows"]:
                continue
            label = f"segment-{column}={_label(value)}"
            params = {"column": column, "value": value}
            if self.inner is None:
                out.append(Slice(label, self.name, params, rows))
                continue
            inner_columns = {k: np.asarray(v)[:pool_size][rows] for k, v in columns.items()}
            for piece in self.inner.slices(len(rows), inner_columns):
                out.append(Slice(f"{label}/{piece.slice_id}", self.name,
                                 {**params, "within": {"strategy": piece.strategy, **piece.params}},
                                 rows[piece.rows]))
        if not out:
            raise ConfigError(
                f"{self.where}: no value of {column!r} has {self.config['min_rows']} rows before "
                "the holdout; lower 'min_rows'."
            )
        return out


def _label(value: Any) -> str:
    """A segment value as it appears in a slice id (no spaces or slashes)."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in str(value))
