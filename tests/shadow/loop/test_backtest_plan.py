"""The backtest's plan: where boundaries fall, the simulated clock, and what the settings refuse."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from shadow.data.catalog import find_manifest
from shadow.errors import ConfigError
from shadow.loop.backtest.plan import BacktestSettings, clock, plan_boundaries
from shadow.sweep.config import config_from_dict
from tests.shadow.conftest import separable_frame, write_dataset


def config(dataset: Path, recent: int) -> object:
    return config_from_dict({
        "sweep": {"name": "p", "dataset": str(dataset)}, "holdout": {"rows": 100},
        "slices": [{"strategy": "all"}, {"strategy": "recent", "rows": recent}],
        "model": {"family": "mlp"},
    })


def test_the_first_boundary_is_the_first_where_holdout_and_slices_fit(tmp_path: Path) -> None:
    path = write_dataset(tmp_path, separable_frame(n=1000), name="toy")
    manifest = find_manifest(str(path))
    table = pd.read_csv(path.parent / "data.csv")
    plan = plan_boundaries(config(path, 250), table, manifest, BacktestSettings(period=100))
    # 100 holdout rows + a 250-row window need 350 rows: the first multiple of 100 is 400.
    assert plan == [400, 500, 600, 700, 800, 900]
    later = BacktestSettings(period=100, start=610, periods=2)
    assert plan_boundaries(config(path, 250), table, manifest, later) == [700, 800]
    quick = BacktestSettings(period=100, quick=True)  # no documented drift: from mid-data
    assert plan_boundaries(config(path, 250), table, manifest, quick)[0] == 500
    with pytest.raises(ConfigError, match="lower --period"):
        plan_boundaries(config(path, 950), table, manifest, BacktestSettings(period=100))


def test_the_clock_reads_the_time_column_or_counts_rows() -> None:
    class Timed:
        time_column = "t"

    class Untimed:
        time_column = None

    dates = pd.DataFrame({"t": ["2020-01-01", "2020-01-02", "2020-01-03T12:00:00"]})
    at = clock(dates, Timed, BacktestSettings(period=1))  # type: ignore[arg-type]
    assert at(3) - at(1) == 2.5 * 86400 and at(1) == pd.Timestamp("2020-01-01", tz="UTC").timestamp()
    numbers = pd.DataFrame({"t": [5, 6, 9]})
    assert clock(numbers, Timed, BacktestSettings(period=1))(3) == 9.0  # type: ignore[arg-type]
    rows = clock(numbers, Untimed, BacktestSettings(period=1, row_seconds=60))  # type: ignore[arg-type]
    assert rows(3) == 180.0


@pytest.mark.parametrize("kwargs, fragment", [
    ({"period": 0}, "--period"), ({"period": 10, "periods": 0}, "--periods"),
    ({"period": 10, "start": -1}, "--start"), ({"period": 10, "row_seconds": 0.0}, "--row-seconds"),
    ({"period": 10, "row_seconds": float("nan")}, "--row-seconds"),
])
def test_bad_settings_name_the_flag(kwargs: dict, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        BacktestSettings(**kwargs)
