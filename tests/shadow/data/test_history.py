"""Cutting a dataset's history into a past and batches: the rows read back are the original rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from selection.home import Home
from shadow.data.append import append_batch
from shadow.data.catalog import find_manifest
from shadow.data.history import full_table, write_batch, write_prefix
from shadow.data.loader import load_dataset
from shadow.data.manifest import DatasetManifest
from tests.shadow.conftest import write_dataset
from tests.shadow.data.test_append import timed_frame


def test_prefix_plus_batches_is_the_whole_dataset(tmp_path: Path) -> None:
    catalog = tmp_path / "catalog"
    manifest_path = write_dataset(catalog, timed_frame(300), name="timed", features=["x0", "x1"])
    text = manifest_path.read_text(encoding="utf-8")
    manifest_path.write_text(text.replace('features =', 'time_column = "t"\nfeatures =', 1),
                             encoding="utf-8")
    original = find_manifest(str(manifest_path))
    whole = load_dataset(original)
    table = full_table(original)
    assert list(table.columns)[:1] == [original.target] and "t" in table.columns

    past = write_prefix(original, table, 120, tmp_path / "past", name="timed-past")
    cut = DatasetManifest.from_file(past)
    assert (cut.name, cut.time_column, cut.features) == ("timed-past", "t", original.features)
    home = Home(tmp_path / "home")
    for start, stop in ((120, 200), (200, 300)):
        batch = write_batch(table, start, stop, tmp_path / "batches" / f"{start}.csv")
        append_batch(cut, batch, home)
    grown = load_dataset(cut, home)
    assert grown.n_rows == whole.n_rows
    np.testing.assert_array_equal(grown.features, whole.features)  # exact: floats round-trip
    assert [grown.classes[i] for i in grown.labels] == [whole.classes[i] for i in whole.labels]


def test_out_of_range_cuts_are_refused(tmp_path: Path) -> None:
    manifest_path = write_dataset(tmp_path / "catalog", timed_frame(50), name="timed",
                                  features=["x0", "x1"])
    manifest = find_manifest(str(manifest_path))
    table = full_table(manifest)
    with pytest.raises(ValueError, match="stop must be in"):
        write_prefix(manifest, table, 0, tmp_path / "p")
    with pytest.raises(ValueError, match="start < stop"):
        write_batch(table, 40, 40, tmp_path / "b.csv")
