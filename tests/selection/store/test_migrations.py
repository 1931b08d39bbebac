"""An old (schema version 1) store is upgraded in place, on every backend, not broken."""

from __future__ import annotations

from sqlalchemy import ForeignKeyConstraint, MetaData, Table, create_engine, inspect, select

from selection import HOST_DEVICE, DeviceResult, Home, Store
from selection.leaderboard.frame import leaderboard
from selection.store import rows as codec
from selection.store import schema
from selection.store.engine import parse_url

V2_INDEXES = {"ix_device_metrics_board", "ix_candidates_sweep_status"}


def _v1_metadata() -> MetaData:
    """The tables exactly as shadow-sweep 0.1 (schema version 1) created them."""
    md = MetaData()
    for table in schema.metadata.sorted_tables:
        if table.name == "device_metrics":
            continue
        copy = table.to_metadata(md)
        for index in list(copy.indexes):
            if index.name in V2_INDEXES:
                copy.indexes.discard(index)
    Table(
        "device_metrics", md,
        *(c._copy() for c in schema.device_metrics.c if c.name not in schema.DEVICE_METRICS_V2),
        ForeignKeyConstraint(["candidate_id"], ["candidates.candidate_id"]),
    )
    return md


def test_v1_store_is_upgraded_and_keeps_its_rows(home: Home, backend_url: str | None) -> None:
    url = parse_url(backend_url) if backend_url else parse_url(f"sqlite:///{home.ensure().db_path}")
    engine = create_engine(url)
    # A version-1 database with one sweep and two candidates, written row by row.
    from tests.selection.conftest import Factory

    class _Builder(Factory):
        def __init__(self) -> None:
            self._tick = 0

    builder = _Builder()
    sweep = _sweep_record(builder)
    fallback = {"has_fallback": True, "peak_activation_bytes": 9, "memory_budget_bytes": 10,
                "eligible": True}
    ok = builder.candidate("c-ok", store=False)
    slow = builder.candidate("c-npu", store=False, devices=(
        DeviceResult(HOST_DEVICE, "ok", accuracy=0.5, latency_ms=1.0),
        DeviceResult("npu", "ok", accuracy=0.95, latency_ms=1.0, extra=fallback),
    ))
    with engine.begin() as conn:
        _v1_metadata().create_all(conn)
        conn.execute(schema.schema_version.insert().values(version=1, applied_at="2024-01-01T00:00:00.000000+00:00"))
        conn.execute(schema.sweeps.insert(), codec.sweep_to_row(sweep))
        for record in (ok, slow):
            conn.execute(schema.candidates.insert(), codec.candidate_to_row(record))
            for row in codec.device_rows(record):
                v1_row = {k: v for k, v in row.items() if k not in schema.DEVICE_METRICS_V2}
                conn.execute(schema.device_metrics.insert().values(**v1_row))
    engine.dispose()

    with Store.open(home, url=backend_url) as store:  # the upgrade happens here
        with store.snapshot() as conn:
            versions = conn.execute(select(schema.schema_version.c.version)).scalars().all()
            columns = {c["name"] for c in inspect(conn).get_columns("device_metrics")}
            indexes = {i["name"] for i in inspect(conn).get_indexes("device_metrics")}
            backfilled = conn.execute(select(schema.device_metrics.c.sweep_id,
                                             schema.device_metrics.c.has_fallback,
                                             schema.device_metrics.c.candidate_ok)
                                      .where(schema.device_metrics.c.device == "npu")).one()
        assert sorted(versions) == [1, 2]
        assert set(schema.DEVICE_METRICS_V2) <= columns
        assert "ix_device_metrics_board" in indexes
        assert tuple(backfilled) == ("sw-1", True, True)
        assert store.get_candidate("c-npu") == slow  # nothing lost or changed
        board = leaderboard(store, device="npu")
        assert not board["eligible"][0] and "fall back to the CPU" in board["ineligible_reason"][0]
        assert list(leaderboard(store, device=HOST_DEVICE)["rank"]) == [1, 2]
    with Store.open(home, url=backend_url) as again:  # a second open does not migrate twice
        with again.snapshot() as conn:
            assert sorted(conn.execute(select(schema.schema_version.c.version)).scalars()) == [1, 2]


def _sweep_record(builder):
    from selection import HoldoutRecord, SweepRecord

    return SweepRecord("sw-1", "n", "d", "fp", HoldoutRecord(0, 10, "a" * 64), {}, 2,
                       created_at=builder._next_time())
