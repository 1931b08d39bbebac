"""The catalog's real time-ordered streams: each loads offline from the package that ships it,
with the rows and classes its manifest declares, in time order, and its example sweep fits.

These read the real files (no network: the packages carry them), so a package upgrade that
changes the data fails here, not in a user's sweep.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from shadow.data.catalog import find_manifest
from shadow.data.frames import time_values
from shadow.data.loader import load_dataset, read_table
from shadow.data.slicing.base import cut_holdout, make_slices
from shadow.sweep import load_config

DATASETS = Path(__file__).parents[3] / "datasets"

# name -> (rows, classes, time column, first time, last time)
STREAMS = {
    "seattle-weather": (1461, ("drizzle", "fog", "rain", "snow", "sun"), "date",
                        "2012-01-01", "2015-12-31"),
    "sp500-direction": (1257, ("down", "up"), "date", "2013-02-11", "2018-02-06"),
}
TICKERS = ["AAPL", "AMZN", "IBM", "INTC", "JNJ", "JPM", "KO", "MSFT", "WMT", "XOM"]


@pytest.mark.parametrize("name", sorted(STREAMS))
def test_stream_loads_with_the_rows_and_classes_its_manifest_declares(name: str) -> None:
    rows, classes, _, _, _ = STREAMS[name]
    manifest = find_manifest(name)
    assert manifest.source.kind == "package" and manifest.order == "row"
    assert manifest.license and manifest.citation
    ds = load_dataset(manifest)
    assert ds.n_rows == rows == manifest.declared_rows
    assert ds.classes == classes
    assert ds.features.shape == (rows, len(manifest.features))
    assert ds.features.dtype == np.float32 and np.isfinite(ds.features).all()
    # Every class occurs: none is a typo of another in the manifest's eyes.
    assert set(np.unique(ds.labels)) == set(range(len(classes)))


@pytest.mark.parametrize("name", sorted(STREAMS))
def test_stream_rows_are_in_time_order(name: str) -> None:
    _, _, column, first, last = STREAMS[name]
    manifest = find_manifest(name)
    assert manifest.time_column == column
    times = time_values(read_table(manifest)[column], name, column)
    assert times.is_monotonic_increasing
    assert times.iloc[0] == pd.Timestamp(first, tz="UTC")
    assert times.iloc[-1] == pd.Timestamp(last, tz="UTC")


def test_seattle_label_shift_is_what_its_manifest_says() -> None:
    """The counts quoted in datasets/seattle-weather/dataset.toml, recounted from the data."""
    table = read_table(find_manifest("seattle-weather"))
    year = table["date"].str[:4]
    counts = pd.crosstab(year, table["weather"])
    assert counts.loc["2012"].to_dict() == {"drizzle": 31, "fog": 5, "rain": 191, "snow": 21, "sun": 118}
    assert counts.loc["2014"].to_dict() == {"drizzle": 0, "fog": 151, "rain": 3, "snow": 0, "sun": 211}
    # The features keep their seasons: wet days stay common while the label 'rain' vanishes.
    wet = (table["precipitation"] > 0).groupby(year).sum()
    assert wet["2014"] > 100 and wet["2012"] > 100


@pytest.mark.parametrize("name", sorted(STREAMS))
def test_example_sweep_fits_the_stream(name: str) -> None:
    config = load_config(DATASETS / name / "sweep.toml")
    assert config.dataset == name
    assert list(config.devices) == ["host-cpu"]
    holdout = cut_holdout(STREAMS[name][0], config.holdout)
    slices = make_slices(list(config.slices), holdout.start)
    assert len(slices) >= 3  # distinct row sets: more than one past to choose from
    assert all(int(s.rows.max()) < holdout.start for s in slices)


def test_sp500_features_are_that_days_returns_and_the_label_the_next_days_direction() -> None:
    """No leakage: the model sees a day's ten returns; its label is the sign of the NEXT
    day's equal-weighted return, which is in no feature of that row."""
    manifest = find_manifest("sp500-direction")
    assert list(manifest.features) == TICKERS
    assert manifest.target_bins is not None and manifest.target_bins.column == "next_day_return"
    assert "next_day_return" not in manifest.features
    table = read_table(manifest)
    ds = load_dataset(manifest)
    assert np.array_equal(ds.features, table[TICKERS].to_numpy(np.float32))
    up = ds.labels == ds.classes.index("up")
    assert up.tolist() == (table["next_day_return"] > 0).tolist()
    # The label of day t is the direction of day t + 1's portfolio (the next row's features),
    # never of day t's own: the file's column is the next row's mean return (to 1e-6).
    next_mean = ds.features[1:].astype(np.float64).mean(axis=1)
    assert np.allclose(table["next_day_return"].to_numpy()[:-1], next_mean, atol=1e-5)
    assert np.array_equal(up[:-1], next_mean > 0)
    today = ds.features.astype(np.float64).mean(axis=1) > 0
    assert (today == up).mean() < 0.5  # the same day's direction is not the label


def test_sp500_drift_is_what_its_manifest_says() -> None:
    """The counts quoted in datasets/sp500-direction/dataset.toml, recounted from the data."""
    table = read_table(find_manifest("sp500-direction"))
    year = table["date"].str[:4]
    up = (table["next_day_direction"] == "up").groupby(year).agg(["sum", "size"])
    assert {y: (int(r["sum"]), int(r["size"])) for y, r in up.iterrows()} == {
        "2013": (126, 225), "2014": (136, 252), "2015": (128, 252), "2016": (137, 252),
        "2017": (138, 251), "2018": (13, 25)}
    volatility = table["next_day_return"].groupby(year).std().round(2)
    assert volatility.to_dict() == {"2013": 0.67, "2014": 0.72, "2015": 1.04, "2016": 0.83,
                                    "2017": 0.47, "2018": 1.21}
    portfolio = table[TICKERS].mean(axis=1)
    assert table["date"][portfolio.idxmax()] == "2015-08-26" and portfolio.idxmax() == 640
    assert table["date"][637] == "2015-08-21" and portfolio[637] < -3.5
    assert table["date"][1255] == "2018-02-05" and portfolio[1255] < -4
