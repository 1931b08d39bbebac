"""A dataset that is a PostgreSQL table ordered by a time column: versions, the ledger, bad sources.

A real PostgreSQL (127.0.0.1:5432, database ``test``), one table per test with
a unique name, dropped afterwards. Refusals through the CLI are one line,
exit 2, with the home unchanged.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from selection.home import Home
from shadow.data.catalog import find_manifest
from shadow.data.loader import list_versions, load_dataset, record_version
from shadow.data.sql_source import ledger_path
from shadow.errors import DatasetError, IntegrityError
from tests.bad_inputs.contract import assert_user_error, run_cli, snapshot
from tests.shadow.data.test_directory_source import timed_frame

PG = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture
def table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, sa.Engine]]:
    """A fresh table of 100 rows (t = 0..99, inserted shuffled) and a catalog entry 'pg' over it."""
    engine = sa.create_engine(PG.replace("postgresql://", "postgresql+psycopg://"))
    name = f"shadow_src_{uuid.uuid4().hex[:12]}"
    rows = timed_frame(100).sample(frac=1.0, random_state=0)  # the table's own order is no order
    try:
        rows.to_sql(name, engine, index=False)
    except sa.exc.OperationalError as exc:
        engine.dispose()
        message = f"PostgreSQL is not reachable at 127.0.0.1:5432 ({exc.__class__.__name__})"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    write_sql_dataset(tmp_path / "catalog", name)
    monkeypatch.setenv("SHADOW_CATALOG", str(tmp_path / "catalog"))
    monkeypatch.chdir(tmp_path)
    try:
        yield name, engine
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {name}"))
        engine.dispose()


def write_sql_dataset(catalog: Path, table: str, *, url: str = PG, order_by: str = "t",
                      extra: str = "") -> Path:
    entry = catalog / "pg"
    entry.mkdir(parents=True, exist_ok=True)
    path = entry / "dataset.toml"
    path.write_text(
        'name = "pg"\ntarget = "label"\nfeatures = ["x0", "x1"]\ntime_column = "t"\n'
        f'[source]\nkind = "sql"\nurl = "{url}"\ntable = "{table}"\norder_by = "{order_by}"\n{extra}'
    )
    return path


def versions_cli(capsys: pytest.CaptureFixture[str], home: Path):
    return run_cli(capsys, "data", "versions", "pg", "--home", str(home), "--format", "json")


def test_rows_read_in_order_and_new_rows_are_the_next_version(
    table: tuple[str, sa.Engine], tmp_path: Path, capsys: pytest.CaptureFixture[str],
):
    name, engine = table
    home = tmp_path / "home"
    manifest = find_manifest("pg")
    first = load_dataset(manifest, Home(home))
    expected = timed_frame(100)
    np.testing.assert_array_equal(first.features, expected[["x0", "x1"]].to_numpy(np.float32))
    assert not home.exists()  # loading records nothing

    listed = versions_cli(capsys, home)
    assert listed.code == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert [(r["version"], r["rows"], r["fingerprint"]) for r in rows] == [(1, 100, first.fingerprint)]
    assert rows[0]["source"] == "t <= 99" and rows[0]["created_at"]

    timed_frame(30, 100, seed=1).to_sql(name, engine, index=False, if_exists="append")
    grown = load_dataset(manifest, Home(home))
    assert grown.n_rows == 130 and grown.fingerprint != first.fingerprint
    again = load_dataset(manifest, Home(home), "1")  # the recorded version, rows up to t = 99
    assert again.fingerprint == first.fingerprint and again.n_rows == 100
    np.testing.assert_array_equal(again.features, first.features)
    record_version(grown, Home(home))
    listed = list_versions(manifest, Home(home))
    assert [(v.version, v.rows) for v in listed] == [(1, 100), (2, 130)]
    assert json.loads(ledger_path(Home(home), "pg").read_text())["versions"][1]["watermark"] == "129"


@pytest.mark.parametrize("edit", [
    "UPDATE {t} SET x0 = 42 WHERE t = 10",
    "DELETE FROM {t} WHERE t = 50",
    "INSERT INTO {t} (t, x0, x1, label) VALUES (20, 0.5, 0.5, 1)",
])
def test_a_recorded_version_whose_rows_changed_is_refused_with_home_unchanged(
    table: tuple[str, sa.Engine], tmp_path: Path, capsys: pytest.CaptureFixture[str], edit: str,
):
    name, engine = table
    home = tmp_path / "home"
    assert versions_cli(capsys, home).code == 0  # pins version 1
    with engine.begin() as conn:
        conn.execute(sa.text(edit.format(t=name)))
    before = snapshot(home)
    assert_user_error(versions_cli(capsys, home), f"table {name!r}", "changed since version 1",
                      "t = 99", "restore them")
    with pytest.raises(IntegrityError):
        load_dataset(find_manifest("pg"), Home(home), "1")
    assert snapshot(home) == before


def test_unreachable_database_missing_table_or_order_column(
    table: tuple[str, sa.Engine], tmp_path: Path, capsys: pytest.CaptureFixture[str],
):
    name, _ = table
    home = tmp_path / "home"
    catalog = tmp_path / "catalog"
    write_sql_dataset(catalog, name, url="postgresql://postgres@127.0.0.1:1/test")
    assert_user_error(versions_cli(capsys, home), "cannot read table",
                      "postgresql+psycopg://postgres@127.0.0.1:1/test", "database is running")
    write_sql_dataset(catalog, name, order_by="arrived_at")
    assert_user_error(versions_cli(capsys, home), "order_by column 'arrived_at' is not in table",
                      "it has 't', 'x0', 'x1', 'label'")
    write_sql_dataset(catalog, "no_such_table_here")
    assert_user_error(versions_cli(capsys, home), "table 'no_such_table_here' does not exist")
    write_sql_dataset(catalog, name, extra='query = "select 1"\n')
    assert_user_error(versions_cli(capsys, home), "unknown key 'query'",
                      "known keys: kind, url, table, order_by")
    write_sql_dataset(catalog, "x; drop table y")
    assert_user_error(versions_cli(capsys, home), "is not a plain SQL name")
    assert not home.exists()


def test_a_password_in_the_url_is_never_shown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    write_sql_dataset(tmp_path / "catalog", "t", url="postgresql://u:s3cret@127.0.0.1:1/test")
    monkeypatch.setenv("SHADOW_CATALOG", str(tmp_path / "catalog"))
    with pytest.raises(DatasetError) as caught:
        load_dataset(find_manifest("pg"))
    assert "s3cret" not in str(caught.value) and "***" in str(caught.value)


def test_append_to_a_table_dataset_says_to_insert_the_rows(
    table: tuple[str, sa.Engine], tmp_path: Path, capsys: pytest.CaptureFixture[str],
):
    batch = tmp_path / "new.csv"
    pd.DataFrame(timed_frame(5, 100)).to_csv(batch, index=False)
    out = run_cli(capsys, "data", "append", "pg", str(batch), "--home", str(tmp_path / "home"))
    assert_user_error(out, f"reads table {table[0]!r}", "insert the new rows into that table")
    assert not (tmp_path / "home").exists()


def test_a_timestamp_order_column_and_a_sqlite_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Order by a real timestamp column (PostgreSQL timestamptz), and the same rows from SQLite."""
    frame = timed_frame(80)
    frame["t"] = pd.Timestamp("2026-01-01", tz="UTC") + pd.to_timedelta(frame["t"], unit="h")
    engine = sa.create_engine(PG.replace("postgresql://", "postgresql+psycopg://"))
    name = f"shadow_src_{uuid.uuid4().hex[:12]}"
    frame.sample(frac=1.0, random_state=1).to_sql(name, engine, index=False)
    lite = tmp_path / "rows.db"
    frame.assign(t=frame["t"].dt.strftime("%Y-%m-%dT%H:%M:%S")).to_sql(
        name, sa.create_engine(f"sqlite:///{lite}"), index=False)
    monkeypatch.setenv("SHADOW_CATALOG", str(tmp_path / "catalog"))
    try:
        write_sql_dataset(tmp_path / "catalog", name)
        home = Home(tmp_path / "home")
        first = load_dataset(find_manifest("pg"), home)
        record_version(first, home)
        watermark = json.loads(ledger_path(home, "pg").read_text())["versions"][0]["watermark"]
        assert watermark == "2026-01-04 07:00:00+00:00"
        np.testing.assert_array_equal(first.features, frame[["x0", "x1"]].to_numpy(np.float32))
        assert load_dataset(find_manifest("pg"), home, first.fingerprint[:10]).n_rows == 80
        write_sql_dataset(tmp_path / "catalog", name, url=f"sqlite:///{lite}")
        from_sqlite = load_dataset(find_manifest("pg"))
        np.testing.assert_array_equal(from_sqlite.features, first.features)
        np.testing.assert_array_equal(from_sqlite.labels, first.labels)
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {name}"))
        engine.dispose()


def test_a_version_loaded_before_rows_arrived_is_still_pinned_as_loaded(
    table: tuple[str, sa.Engine], tmp_path: Path,
):
    name, engine = table
    home = Home(tmp_path / "home")
    loaded = load_dataset(find_manifest("pg"), home)  # what a sweep planned on
    timed_frame(30, 100, seed=2).to_sql(name, engine, index=False, if_exists="append")
    # The controller then plans the sweep on the version it saw: rows came in between.
    planned = load_dataset(find_manifest("pg"), home, loaded.fingerprint)
    assert planned.n_rows == 100 and planned.fingerprint == loaded.fingerprint
    np.testing.assert_array_equal(planned.features, loaded.features)
    record_version(planned, home)  # and the sweep pins it once Ray is up
    recorded = json.loads(ledger_path(home, "pg").read_text())["versions"]
    assert [(v["version"], v["rows"], v["fingerprint"]) for v in recorded] == [
        (1, 100, loaded.fingerprint)]
    assert [(v.version, v.rows) for v in list_versions(find_manifest("pg"), home)] == [(1, 100),
                                                                                       (2, 130)]
