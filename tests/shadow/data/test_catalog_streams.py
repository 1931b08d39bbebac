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
}


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
