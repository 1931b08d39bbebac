"""The metadata store on SQLite: round trips, refusals and settings."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select

from selection import (
    HOST_DEVICE,
    ConfigError,
    DeviceResult,
    Home,
    IntegrityError,
    NotFoundError,
    Store,
    StoreError,
    sha256_bytes,
)
from selection.store import schema
from selection.store.engine import display_url, parse_url


def _count(store: Store, table: object) -> int:
    with store.snapshot() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())  # type: ignore[arg-type]


def test_sweep_and_slices_round_trip(store: Store, make) -> None:
    sweep = make.sweep("sw-1", config={"devices": ["host-cpu"], "nested": {"b": 1, "a": [1, 2]}})
    got = store.get_sweep("sw-1")
    assert got == sweep
    assert got.created_at.tzinfo is not None
    slices = store.get_slices("sw-1")
    assert [s.slice_id for s in slices] == ["slice-0", "slice-1"]
    assert slices[1].params == {"window": 200} and slices[1].n_rows == 200


def test_candidate_round_trip_with_devices(store: Store, make) -> None:
    make.sweep()
    model = make.fake_onnx("c-1")
    sha = sha256_bytes(model)
    device_results = (
        DeviceResult(device=HOST_DEVICE, status="ok", accuracy=0.91, latency_ms=1.5,
                     host_latency_p50_ms=1.5, host_latency_p99_ms=2.5, size_bytes=2048,
                     artifact_sha256=sha, extra={"threads": 1}),
        DeviceResult(device="hexagon-v73", status="failed", error="op Foo not supported",
                     emulator="cpu-reference"),
        DeviceResult(device="jetson-nano", status="ok", accuracy=0.9, latency_ms=0.7,
                     size_bytes=1024, artifact_sha256=sha, emulator="cpu-reference"),
    )
    candidate = make.candidate("c-1", devices=device_results)
    got = store.get_candidate("c-1")
    assert got == candidate  # devices come back host first, then by name
    assert got.device("hexagon-v73").error == "op Foo not supported"
    assert store.candidate_ids("sw-1") == {"c-1"}
    assert store.candidate_ids("other") == set()
    assert store.artifacts.read_verified(sha) == model


def test_duplicate_candidate_raises_and_changes_nothing(store: Store, make) -> None:
    make.sweep()
    original = make.candidate("c-1", accuracy=0.8)
    changed = dataclasses.replace(
        original,
        family="other",
        devices=(dataclasses.replace(original.devices[0], accuracy=0.99),
                 DeviceResult(device="extra-dev", status="failed")),
    )
    with pytest.raises(StoreError, match="candidate 'c-1' is already in the store"):
        store.add_candidate(changed, {})
    assert store.get_candidate("c-1") == original
    assert _count(store, schema.device_metrics) == 1


def test_get_unknown_candidate_says_how_to_list(store: Store) -> None:
    with pytest.raises(NotFoundError, match=r"no candidate 'c-404' in the store at sqlite:///.*`shadow leaderboard`"):
        store.get_candidate("c-404")


def test_artifact_key_mismatch_stores_nothing(store: Store, make) -> None:
    make.sweep()
    candidate = make.candidate("c-1", store=False)
    with pytest.raises(IntegrityError, match="must hash to their declared sha256"):
        store.add_candidate(candidate, {candidate.onnx_sha256: b"other bytes"})
    assert store.candidate_ids("sw-1") == set()
    assert not store.artifacts.exists(candidate.onnx_sha256)


def test_unstored_artifact_reference_is_refused(store: Store, make) -> None:
    make.sweep()
    candidate = make.candidate("c-1", store=False)
    with pytest.raises(StoreError, match="references artifact .* pass the model bytes"):
        store.add_candidate(candidate, {})
    assert store.candidate_ids("sw-1") == set()


def test_candidate_of_unknown_sweep_is_refused(store: Store, make) -> None:
    candidate = make.candidate("c-1", sweep_id="nope", store=False)
    with pytest.raises(NotFoundError, match="no sweep 'nope'"):
        store.add_candidate(candidate, {})


def test_duplicate_sweep_is_refused(store: Store, make) -> None:
    sweep = make.sweep("sw-1")
    with pytest.raises(StoreError, match="already exists.*--resume sw-1"):
        store.create_sweep(sweep, [])
    assert len(store.list_sweeps()) == 1


def test_list_latest_finish_sweeps(store: Store, make) -> None:
    assert store.latest_sweep_id() is None
    assert store.list_sweeps() == []
    make.sweep("sw-a")
    make.sweep("sw-b")
    assert [s.sweep_id for s in store.list_sweeps()] == ["sw-b", "sw-a"]
    assert store.latest_sweep_id() == "sw-b"
    store.finish_sweep("sw-a", "finished")
    finished = store.get_sweep("sw-a")
    assert finished.status == "finished" and isinstance(finished.finished_at, datetime)
    with pytest.raises(NotFoundError, match="no sweep 'zz'.*--sweep all"):
        store.finish_sweep("zz", "finished")
    with pytest.raises(ConfigError, match="must be one of running, finished"):
        store.finish_sweep("sw-a", "done")  # type: ignore[arg-type]
    with pytest.raises(NotFoundError):
        store.get_slices("zz")


def test_naive_datetime_is_refused(store: Store, make) -> None:
    make.sweep()
    candidate = dataclasses.replace(make.candidate("c-1", store=False), created_at=datetime(2024, 1, 1))
    with pytest.raises(ConfigError, match="timezone-aware"):
        store.add_candidate(candidate, {})


def test_sqlite_runs_in_wal_with_busy_timeout(store: Store) -> None:
    with store.snapshot() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_schema_version_is_recorded(store: Store) -> None:
    with store.snapshot() as conn:
        assert conn.execute(select(schema.schema_version.c.version)).scalars().all() == [
            schema.SCHEMA_VERSION]


def test_newer_schema_is_refused(home: Home, store: Store) -> None:
    with store.transaction() as conn:
        conn.execute(schema.schema_version.insert().values(version=99, applied_at="x"))
    with pytest.raises(StoreError, match="schema version 99.*upgrade shadow-sweep"):
        Store.open(home)


def test_read_only_open_of_missing_home_creates_nothing(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("SHADOW_STORE", raising=False)
    missing = tmp_path / "nowhere"
    with pytest.raises(NotFoundError, match=r"no shadow store at .*nowhere.*`shadow sweep run.*--home"):
        Store.open(missing, create=False)
    assert not missing.exists()


def test_reopen_sees_data_and_env_vars_are_honoured(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SHADOW_HOME", str(tmp_path / "h"))
    monkeypatch.delenv("SHADOW_STORE", raising=False)
    with Store.open() as first:
        assert first.home.root == tmp_path / "h"
        assert first.home.db_path.is_file()
        assert (tmp_path / "h" / "artifacts").is_dir() and (tmp_path / "h" / "channels").is_dir()
    other_db = tmp_path / "elsewhere.db"
    monkeypatch.setenv("SHADOW_STORE", f"sqlite:///{other_db}")
    with Store.open(tmp_path / "h2") as second:
        assert other_db.is_file()
        assert second.url == f"sqlite:///{other_db}"
    with Store.open(tmp_path / "h2", create=False) as third:
        assert third.list_sweeps() == []
    monkeypatch.setenv("SHADOW_STORE", f"sqlite:///{tmp_path / 'absent.db'}")
    with pytest.raises(NotFoundError, match="absent.db"):
        Store.open(tmp_path / "h2", create=False)


def test_url_for_messages_hides_password() -> None:
    shown = display_url(parse_url("postgresql://alice:s3cret@db.example/shadow"))
    assert "s3cret" not in shown and "alice" in shown
    with pytest.raises(ConfigError, match="must be a database URL"):
        parse_url("not a url")


def test_second_writer_waits_instead_of_failing(home: Home, store: Store, make) -> None:
    import threading
    import time

    from selection import HoldoutRecord, SweepRecord

    holding = threading.Event()
    released = threading.Event()

    def hold_write_lock() -> None:
        with store.transaction():
            holding.set()
            time.sleep(0.3)
            released.set()

    thread = threading.Thread(target=hold_write_lock)
    thread.start()
    assert holding.wait(5)
    with Store.open(home) as other:
        other.create_sweep(
            SweepRecord("sw-2", "n", "d", "fp", HoldoutRecord(0, 1, "b" * 64), {}, 1), []
        )
        assert released.is_set()  # it got the lock only after the first writer let go
    thread.join()
    assert store.latest_sweep_id() == "sw-2"
