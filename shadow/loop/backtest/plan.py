"""What a backtest walks: its settings, the period boundaries, and the clock it runs on.

A boundary is a row count: at boundary ``b`` the rows ``[0, b)`` have arrived and the next
period ``[b, b + period)`` is what every approach is scored on. Boundaries are multiples of the
period, so runs with different ``--start`` line up, and each has a whole unseen period after it.
The first one is the earliest where the sweep file's holdout and slices all fit (each strategy is
asked, as a sweep asks it), so every sweep of the backtest offers the same slices.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from shadow.data.manifest import DatasetManifest
from shadow.data.slicing.base import cut_holdout, make_slices
from shadow.errors import ConfigError, ShadowError
from shadow.sweep.config import SweepConfig

#: --quick starts this many periods before the manifest's documented drift (or at mid-data).
QUICK_LEAD_PERIODS = 4


@dataclass(frozen=True)
class BacktestSettings:
    """How a backtest walks the history (the sweep file says what each pass does)."""

    #: Rows that arrive at each boundary (one batch each).
    period: int
    #: First boundary row (rounded up to a period); None: the earliest that fits (--quick: later).
    start: int | None = None
    #: Score at most this many periods.
    periods: int | None = None
    #: Fewer boundaries (from a few periods before the documented drift) and 1 trial per slice.
    quick: bool = False
    #: Simulated seconds per row when the dataset has no time column (the schedule trigger's clock).
    row_seconds: float = 1.0
    #: Rows of the recent window the retrain-recent rule deploys; None: the middle recent slice.
    recent_rows: int | None = None
    #: Seed of river's online learners.
    seed: int = 0
    #: Run river's ARF and Hoeffding tree prequentially beside the system (minutes on big data).
    online: bool = True
    #: Also gate each challenger into the ablation channels (strict gate with and without refit).
    ablations: bool = True

    def __post_init__(self) -> None:
        for name in ("period", "periods"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ConfigError(f"backtest --{name} must be a positive integer; got {value!r}")
        if self.start is not None and self.start < 0:
            raise ConfigError(f"backtest --start must be a row number >= 0; got {self.start}")
        if not (math.isfinite(self.row_seconds) and self.row_seconds > 0):
            raise ConfigError(f"backtest --row-seconds must be a positive number; got "
                              f"{self.row_seconds!r}")


def quick_start(manifest: DatasetManifest, n_rows: int, period: int) -> int:
    """A few periods before the documented drift (mid-data without one): before and after."""
    if manifest.drift_from_row is not None:
        return max(0, manifest.drift_from_row - QUICK_LEAD_PERIODS * period)
    return n_rows // 2


def _fits(config: SweepConfig, rows: int, segments: dict[str, np.ndarray]) -> bool:
    """Whether a sweep of ``config`` over the first ``rows`` rows can cut its holdout and slices."""
    try:
        holdout = cut_holdout(rows, config.holdout, "backtest")
        make_slices(list(config.slices), holdout.start,
                    {name: values[:holdout.start] for name, values in segments.items()})
    except ShadowError:
        return False
    return True


def plan_boundaries(config: SweepConfig, table: pd.DataFrame, manifest: DatasetManifest,
                    settings: BacktestSettings) -> list[int]:
    """The boundaries to walk; ConfigError if not one fits (the message says what to change)."""
    n_rows, period = len(table), settings.period
    segments = {c: table[c].to_numpy() for c in manifest.segment_columns if c in table}
    wanted = settings.start
    if wanted is None and settings.quick:
        wanted = quick_start(manifest, n_rows, period)
    first = max(period, -(-(wanted or 0) // period) * period)
    candidates = range(first, n_rows - period + 1, period)
    start = next((b for b in candidates if _fits(config, b, segments)), None)
    if start is None:
        raise ConfigError(
            f"dataset {manifest.name!r} ({n_rows} rows) has no boundary from row {first} with a "
            f"whole period of {period} rows after it where the sweep file's holdout and slices "
            "fit; lower --period or --start, or use smaller slices")
    boundaries = list(range(start, n_rows - period + 1, period))
    return boundaries[:settings.periods] if settings.periods else boundaries


def clock(table: pd.DataFrame, manifest: DatasetManifest,
          settings: BacktestSettings) -> Callable[[int], float]:
    """Simulated seconds at each boundary: the time column's value at the last arrived row.

    Without a time column (or one that is neither numeric nor a date), rows are the clock:
    ``rows * row_seconds``. The controller's schedule trigger reads this clock.
    """
    column = manifest.time_column
    times: np.ndarray | None = None
    if column and column in table:
        values = table[column]
        if pd.api.types.is_numeric_dtype(values):
            times = values.to_numpy(dtype=np.float64)
        else:
            parsed = pd.to_datetime(values, errors="coerce", utc=True, format="mixed")
            if not parsed.isna().any():
                epoch = pd.Timestamp("1970-01-01", tz="UTC")
                times = ((parsed - epoch) / pd.Timedelta(seconds=1)).to_numpy(dtype=np.float64)

    def at(boundary: int) -> float:
        if times is not None:
            return float(times[boundary - 1])
        return boundary * settings.row_seconds
    return at
