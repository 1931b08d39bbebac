"""A catalog dataset that grows: `shadow data append`, versions, and what sweeps load.

Real CSV and Parquet files, a real catalog entry and home; the CLI runs in
this process. Every bad batch must be one line, exit 2, and leave the home
exactly as it was (files hashed before and after).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from selection.home import Home
from selection.store import Store
from shadow.data.catalog import find_manifest
from shadow.data.loader import load_dataset
from shadow.data.versions import read_ledger, version_fingerprint
from shadow.errors import ConfigError, DatasetError, IntegrityError
from shadow.sweep.config import config_from_dict
from shadow.sweep.prepare import check_resumable, prepare_sweep, slice_records, sweep_record
from tests.bad_inputs.contract import assert_user_error, run_cli, snapshot
from tests.shadow.conftest import separable_frame, write_dataset


def timed_frame(n: int, start: int = 0, seed: int = 0) -> pd.DataFrame:
    """separable_frame plus an increasing integer time column 't'."""
    frame = separable_frame(n, seed=seed)
    frame.insert(0, "t", np.arange(start, start + n))
    return frame


@pytest.fixture
def timed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Catalog dataset 'timed' (200 rows, t = 0..199) declaring time_column = "t"; returns the home."""
    catalog = tmp_path / "catalog"
    manifest = write_dataset(catalog, timed_frame(200), name="timed", features=["x0", "x1"])
    manifest.write_text('time_column = "t"\n' + manifest.read_text())
    monkeypatch.setenv("SHADOW_CATALOG", str(catalog))
    monkeypatch.chdir(tmp_path)
    return tmp_path / "home"


def append(capsys: pytest.CaptureFixture[str], home: Path, file: Path, name: str = "timed"):
    return run_cli(capsys, "data", "append", name, str(file), "--home", str(home))


def test_append_csv_then_parquet_makes_versions_the_loader_and_cli_agree_on(
    timed: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
):
    home = timed
    first = tmp_path / "november.csv"
    timed_frame(60, start=200, seed=1).to_csv(first, index=False)
    second = tmp_path / "december.parquet"
    timed_frame(40, start=260, seed=2).to_parquet(second)

    base = load_dataset(find_manifest("timed"))
    done = append(capsys, home, first)
    assert done.code == 0 and done.stderr == "", done.stderr
    assert append(capsys, home, second).code == 0

    versions = read_ledger(Home(home), "timed")
    assert [v.version for v in versions] == [1, 2]
    assert [v.rows for v in versions] == [260, 300]
    assert [v.source for v in versions] == ["november.csv", "december.parquet"]
    stored = sorted(p.name for p in (home / "data/timed/batches").iterdir())
    assert [s.split("-")[0] for s in stored] == ["000001", "000002"]
    assert stored[0].endswith(".csv") and stored[1].endswith(".parquet")
    # Stored byte for byte; the fingerprint is the base's plus the batches' hashes, in order.
    assert (home / "data/timed/batches" / stored[0]).read_bytes() == first.read_bytes()
    shas = [b.sha256 for b in versions[1].batches]
    assert versions[1].fingerprint == version_fingerprint(base.fingerprint, shas)
    assert versions[0].fingerprint == version_fingerprint(base.fingerprint, shas[:1])

    grown = load_dataset(find_manifest("timed"), Home(home))
    assert grown.n_rows == 300 and grown.fingerprint == versions[1].fingerprint
    expected = pd.concat([pd.read_csv(find_manifest("timed").source.location),
                          pd.read_csv(first), pd.read_parquet(second)], ignore_index=True)
    np.testing.assert_array_equal(grown.features, expected[["x0", "x1"]].to_numpy(np.float32))
    # Any earlier version loads by its fingerprint (what a refit asks for).
    v1 = load_dataset(find_manifest("timed"), Home(home), versions[0].fingerprint)
    assert v1.n_rows == 260 and v1.fingerprint == versions[0].fingerprint
    again = load_dataset(find_manifest("timed"), Home(home), base.fingerprint)
    assert again.n_rows == 200 and again.fingerprint == base.fingerprint
    # Without a home the catalog's rows alone, as before.
    assert load_dataset(find_manifest("timed")).fingerprint == base.fingerprint

    listed = run_cli(capsys, "data", "versions", "timed", "--home", str(home), "--format", "json")
    assert listed.code == 0
    rows = json.loads(listed.stdout)
    assert [(r["version"], r["rows"], r["batches"]) for r in rows] == [(0, 200, 0), (1, 260, 1), (2, 300, 2)]
    assert [r["fingerprint"] for r in rows] == [base.fingerprint, *(v.fingerprint for v in versions)]
    table = run_cli(capsys, "data", "versions", "timed", "--home", str(home))
    assert table.code == 0 and "december.parquet" in table.stdout
    csv = run_cli(capsys, "data", "versions", "timed", "--home", str(home), "--format", "csv")
    assert csv.stdout.splitlines()[0].startswith("version,fingerprint,rows,batches,created_at")


def test_new_label_values_are_reported_and_recorded(
    timed: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
):
    batch = timed_frame(30, start=200, seed=3)
    batch.loc[[4, 9], "label"] = 2
    path = tmp_path / "new-class.csv"
    batch.to_csv(path, index=False)
    done = append(capsys, timed, path)
    assert done.code == 0
    warning = done.stderr.strip().splitlines()
    assert len(warning) == 1 and "warning" in warning[0] and "'2' (2 rows)" in warning[0]
    assert read_ledger(Home(timed), "timed")[0].new_labels == ("2",)
    assert load_dataset(find_manifest("timed"), Home(timed)).classes == ("0", "1", "2")


def _write(frame: pd.DataFrame, path: Path) -> Path:
    if path.suffix == ".parquet":
        frame.to_parquet(path)
    else:
        frame.to_csv(path, index=False)
    return path


def _bad_batches(tmp: Path) -> dict[str, tuple[Path, tuple[str, ...]]]:
    ok = timed_frame(30, start=300, seed=5)
    nan = ok.copy()
    nan.loc[[3, 7], "x0"] = np.nan
    inf = ok.copy()
    inf.loc[2, "x1"] = np.inf
    text = ok.astype({"x1": str})
    text.loc[1, "x1"] = "cloudy"
    backwards = ok.copy()
    backwards.loc[10, "t"] = 301
    earlier = timed_frame(30, start=250, seed=6)  # before the last stored row (t = 259)
    floats = ok.astype({"label": float})
    (tmp / "garbage.parquet").write_bytes(b"PAR1 this is not parquet")
    (tmp / "header-only.csv").write_text("t,x0,x1,label\n")
    (tmp / "ragged.csv").write_text("t,x0,x1,label\n300,1,2,0\n301,1,2,0,9,9\n")
    (tmp / "notes.txt").write_text("t,x0,x1,label\n300,1,2,0\n")
    return {
        "missing column": (_write(ok.drop(columns="x1"), tmp / "no-x1.csv"), ("lacks column 'x1'",)),
        "extra column": (_write(ok.assign(extra=1.0), tmp / "extra.parquet"),
                         ("has column 'extra' the dataset does not",)),
        "label missing": (_write(ok.drop(columns="label"), tmp / "no-label.csv"),
                          ("lacks column 'label'",)),
        "non-numeric": (_write(text, tmp / "text.csv"), ("'x1' not numeric",)),
        "NaN": (_write(nan, tmp / "nan.parquet"),
                ("'x0' has 2 missing values (first at row 3)",)),
        "infinite": (_write(inf, tmp / "inf.parquet"), ("infinite feature value at row 2",)),
        "empty": (tmp / "header-only.csv", ("has no rows",)),
        "unreadable parquet": (tmp / "garbage.parquet", ("cannot read", "as Parquet")),
        "ragged csv": (tmp / "ragged.csv", ("cannot read", "as CSV")),
        "no such file": (tmp / "absent.csv", ("cannot read", "absent.csv")),
        "a folder": (tmp, ("cannot read",)),
        "unknown suffix": (tmp / "notes.txt", (".csv or .parquet",)),
        "time backwards": (_write(backwards, tmp / "backwards.csv"),
                           ("time column 't' goes backwards at row 10 (301 after 309)",)),
        "time before stored": (_write(earlier, tmp / "earlier.csv"),
                               ("time goes backwards", "t = 250", "(259)")),
        "label kind": (_write(floats, tmp / "floats.csv"), ("label column 'label' holds float",)),
    }


@pytest.mark.parametrize("case", [
    "missing column", "extra column", "label missing", "non-numeric", "NaN", "infinite", "empty",
    "unreadable parquet", "ragged csv", "no such file", "a folder", "unknown suffix",
    "time backwards", "time before stored", "label kind",
])
def test_a_bad_batch_is_one_line_exit_2_and_changes_nothing(
    case: str, timed: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
):
    good = _write(timed_frame(60, start=200, seed=1), tmp_path / "good.csv")
    assert append(capsys, timed, good).code == 0
    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    path, fragments = _bad_batches(bad_dir)[case]
    before = snapshot(timed)
    assert_user_error(append(capsys, timed, path), *fragments)
    assert snapshot(timed) == before


def test_a_bad_first_batch_creates_nothing(timed: Path, tmp_path: Path, capsys):
    path = _write(timed_frame(30, start=200).drop(columns="x0"), tmp_path / "bad.csv")
    assert_user_error(append(capsys, timed, path), "lacks column 'x0'")
    assert not timed.exists()


def test_the_same_file_twice_is_refused(timed: Path, tmp_path: Path, capsys):
    path = _write(timed_frame(30, start=200), tmp_path / "once.parquet")
    assert append(capsys, timed, path).code == 0
    before = snapshot(timed)
    copy = tmp_path / "copy.parquet"
    copy.write_bytes(path.read_bytes())  # same bytes under another name: the same batch
    assert_user_error(append(capsys, timed, copy), "already in dataset 'timed'", "version 1")
    assert snapshot(timed) == before


def test_an_image_dataset_cannot_grow(tmp_path: Path, capsys):
    file = _write(separable_frame(10), tmp_path / "rows.csv")
    assert_user_error(run_cli(capsys, "data", "append", "digits", str(file), "--home",
                              str(tmp_path / "home")), "cannot grow")
    assert not (tmp_path / "home").exists()


def test_data_help_has_examples(capsys):
    shown = run_cli(capsys, "data", "append", "--help")
    assert shown.code == 0 and "shadow data append noaa-weather" in shown.stdout
    assert "--home" in shown.stdout


def test_stored_batches_and_base_are_checked_when_loading(timed: Path, tmp_path: Path, capsys):
    assert append(capsys, timed, _write(timed_frame(30, start=200), tmp_path / "a.csv")).code == 0
    manifest = find_manifest("timed")
    (stored,) = (timed / "data/timed/batches").iterdir()
    original = stored.read_bytes()
    stored.write_bytes(original.replace(b"\n2", b"\n9", 1))
    with pytest.raises(IntegrityError, match="no longer hashes"):
        load_dataset(manifest, Home(timed))
    stored.write_bytes(original)
    table = pd.read_csv(manifest.source.location)
    table.loc[0, "x0"] += 1.0  # the catalog's own data edited after the append
    table.to_csv(manifest.source.location, index=False)
    with pytest.raises(DatasetError, match="the catalog's data changed since batches were appended"):
        load_dataset(find_manifest("timed"), Home(timed))


def test_time_column_is_checked_on_the_catalog_table_too(tmp_path: Path):
    frame = timed_frame(100)
    frame.loc[50, "t"] = 10
    manifest = write_dataset(tmp_path, frame, name="shuffled", features=["x0", "x1"])
    manifest.write_text('time_column = "t"\n' + manifest.read_text())
    with pytest.raises(DatasetError, match="time column 't' goes backwards at row 50"):
        load_dataset(find_manifest(str(manifest)))
    manifest.write_text('time_column = "label"\n' + manifest.read_text().split("\n", 1)[1])
    with pytest.raises(ConfigError, match="'time_column' must name a column other than the target"):
        find_manifest(str(manifest))


def test_a_sweep_prepared_after_an_append_trains_on_the_new_version(
    timed: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
):
    raw = {
        "sweep": {"dataset": "timed"},
        "holdout": {"rows": 50},
        "slices": [{"strategy": "all"}],
        "model": {"family": "mlp", "params": {"width": [4], "epochs": 1}},
    }
    home = Home(timed)
    before = prepare_sweep(config_from_dict(raw), home=home)
    assert before.dataset.n_rows == 200
    with Store.open(timed, create=True) as store:
        store.create_sweep(sweep_record(before), slice_records(before))
        assert append(capsys, timed, _write(timed_frame(80, start=200, seed=9),
                                            tmp_path / "more.csv")).code == 0
        after = prepare_sweep(config_from_dict(raw), home=home)
        assert after.dataset.n_rows == 280
        assert after.holdout.stop == 280  # the holdout is the newest rows: the batch's
        latest = read_ledger(home, "timed")[-1].fingerprint
        assert after.dataset.fingerprint == latest != before.dataset.fingerprint
        assert sweep_record(after).dataset_fingerprint == latest
        # --resume of the sweep started on version 0 refuses version 1, as for any data change.
        resumed = prepare_sweep(config_from_dict(raw), sweep_id=before.sweep_id, home=home)
        with pytest.raises(ConfigError, match="it was started on data version"):
            check_resumable(resumed, store)
        # Asked for the version it started on, it resumes.
        same = prepare_sweep(config_from_dict(raw), sweep_id=before.sweep_id, home=home,
                             data_version=before.dataset.fingerprint)
        assert check_resumable(same, store) == []
