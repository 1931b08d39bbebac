"""The holdout cut and the slice strategies that carve training data from the rest.

The holdout is the most recent rows and is cut *first*; every strategy only ever
sees the rows before it (the "pool"), so no training slice can contain a holdout
row. Each strategy is a small :class:`SliceStrategy` registered by name in
:data:`STRATEGIES`; adding one is adding a class in its own module and one
``STRATEGIES.register`` line in ``shadow/data/slicing/__init__.py`` (where the
built-ins are registered, all in one place).

Slice ids are stable: the same strategy, parameters and pool size give the same
ids and the same rows, so candidate ids derived from them are deterministic.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, TypeAlias

import numpy as np

from selection.registry import Registry
from selection.validation import Param, parse_table
from shadow.errors import ConfigError

#: A training slice needs at least this many rows to be worth a model.
MIN_SLICE_ROWS = 20

#: Segment column name -> its values on the pool rows.
Columns: TypeAlias = Mapping[str, np.ndarray]


@dataclass(frozen=True)
class Holdout:
    """The rows ``[start, stop)`` every candidate is scored on."""

    start: int
    stop: int

    @property
    def rows(self) -> np.ndarray:
        return np.arange(self.start, self.stop, dtype=np.int64)

    @property
    def n_rows(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True)
class Slice:
    """A named set of training rows (indices into the dataset, pool only)."""

    slice_id: str
    strategy: str
    params: dict[str, Any]
    rows: np.ndarray

    @property
    def rows_sha256(self) -> str:
        return rows_sha256(self.rows)


def rows_sha256(rows: np.ndarray) -> str:
    """Hash of a row-index array, the lineage of which rows a slice holds."""
    return hashlib.sha256(np.asarray(rows, dtype="<i8").tobytes()).hexdigest()


HOLDOUT_PARAMS = [
    Param("rows", int, default=None, low=MIN_SLICE_ROWS, help="the last N rows"),
    Param("fraction", float, default=None, low=0.0, high=0.5, low_open=True,
          help="the last fraction of rows"),
]


def cut_holdout(n_rows: int, table: Mapping[str, Any], where: str = "[holdout]") -> Holdout:
    """The most recent rows, by count or fraction; the pool keeps the rest."""
    spec = parse_table(table, HOLDOUT_PARAMS, where)
    if (spec["rows"] is None) == (spec["fraction"] is None):
        raise ConfigError(f"{where}: set exactly one of 'rows' or 'fraction'; got {dict(table)}.")
    size = spec["rows"] if spec["rows"] is not None else int(round(n_rows * spec["fraction"]))
    if size < MIN_SLICE_ROWS or n_rows - size < MIN_SLICE_ROWS:
        raise ConfigError(
            f"{where}: a holdout of {size} rows out of {n_rows} leaves "
            f"{n_rows - size} to train on; both need at least {MIN_SLICE_ROWS}. "
            "Change 'rows'/'fraction'."
        )
    return Holdout(start=n_rows - size, stop=n_rows)


class SliceStrategy(ABC):
    """The contract of a slice strategy: declared params in, slices of the pool out.

    - ``name`` (class attribute) is the ``strategy = ...`` value of a ``[[slices]]``
      table; ``params`` declares every other key it takes. :func:`build_strategy`
      checks the table against ``params`` before ``__init__`` sees it, so
      ``config`` always holds every declared key, defaults filled in.
    - :meth:`slices` sees only the pool (the rows before the holdout): every row
      index it returns is in ``0 .. pool_size - 1``, which is what keeps holdout
      rows out of training.
    - It is deterministic: the same config, pool size and columns give the same
      slice ids and the same rows (candidate ids are derived from them), so any
      randomness is seeded from the config.
    - A slice has at least :data:`MIN_SLICE_ROWS` rows; a config that cannot
      produce one raises ConfigError naming ``where`` and the fix (``_need``).
    - Instances are plain data (they travel to Ray workers inside sweep plans).
    """

    name: ClassVar[str]
    params: ClassVar[list[Param]]

    def __init__(self, config: dict[str, Any], where: str) -> None:
        self.config = config
        self.where = where

    @abstractmethod
    def slices(self, pool_size: int, columns: Columns) -> list[Slice]:
        """Slices of the pool (rows ``0 .. pool_size - 1``).

        ``columns`` maps the dataset's segment columns to their pool values,
        for strategies that cut by value rather than by position.
        """

    def _need(self, size: int, pool_size: int) -> None:
        if size < MIN_SLICE_ROWS or size > pool_size:
            raise ConfigError(
                f"{self.where}: slice of {size} rows does not fit: it needs "
                f"{MIN_SLICE_ROWS} to {pool_size} rows (the rows before the holdout). "
                "Make it smaller or the holdout smaller."
            )


#: Slice strategies by name; the built-ins are registered in ``shadow/data/slicing/__init__.py``.
STRATEGIES: Registry[type[SliceStrategy]] = Registry(
    "slice strategy", fix="Set 'strategy' to one of those names."
)


def build_strategy(table: Mapping[str, Any], where: str) -> SliceStrategy:
    """A strategy instance from one ``[[slices]]`` table (``strategy = name`` plus params)."""
    if not isinstance(table, Mapping) or "strategy" not in table:
        raise ConfigError(
            f"{where}: each [[slices]] entry needs 'strategy', one of {', '.join(STRATEGIES)}."
        )
    name = table["strategy"]
    cls = STRATEGIES.get(name, where)
    params = {k: v for k, v in table.items() if k != "strategy"}
    return cls(parse_table(params, cls.params, f"{where} (strategy {name!r})"), where)


def make_slices(
    strategies: list[SliceStrategy], pool_size: int, columns: Columns | None = None
) -> list[Slice]:
    """All slices of all strategies, each set of rows once.

    Two strategies can name the same rows (``recent`` N and the last ``window``
    of size N); training that twice would only waste a worker, so the first
    name wins.
    """
    by_rows: dict[str, Slice] = {}
    for strategy in strategies:
        for piece in strategy.slices(pool_size, columns or {}):
            by_rows.setdefault(piece.rows_sha256, piece)
    return list(by_rows.values())

