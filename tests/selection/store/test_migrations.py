"""An old (schema version 1) store is upgraded in place, on every backend, not broken."""

from __future__ import annotations

import dataclasses

from sqlalchemy import ForeignKeyConstraint, Index, MetaData, Table, create_engine, inspect, select

from selection import HOST_DEVICE, DeviceResult, Home, Store
from selection.leaderboard.frame import leaderboard
from selection.store import rows as codec
from selection.store import schema
from selection.store.engine import parse_url
from selection.store.migrations import config_devices, v2_first_device

V2_INDEXES = {"ix_device_metrics_board", "ix_candidates_sweep_status"}


def old_metadata(version: int) -> MetaData:
    """The tables exactly as schema version ``version`` (1 or 2) created them."""
    md = MetaData()
    dropped = {name: set(cols) for name, cols in schema.V3_COLUMNS.items()}
    dropped_indexes = set(schema.V3_INDEXES)
    if version < 2:
        dropped["device_metrics"] = set(schema.DEVICE_METRICS_V2)
        dropped_indexes |= V2_INDEXES
    for table in schema.metadata.sorted_tables:
        if table.name in schema.V4_TABLES:  # version 4 created it
            continue
        Table(
            table.name, md,
            *(c._copy() for c in table.c if c.name not in dropped.get(table.name, ())),
            *(constraint._copy() for constraint in table.constraints
              if isinstance(constraint, ForeignKeyConstraint)),
        )
        for index in table.indexes:
            if index.name not in dropped_indexes:
                Index(index.name, *(md.tables[table.name].c[c.name] for c in index.columns),
                      unique=index.unique)
    return md


def old_row(table: str, row: dict, version: int) -> dict:
    """``row`` (as this version writes it) less the columns schema ``version`` lacks."""
    columns = old_metadata(version).tables[table].c
    return {k: v for k, v in row.items() if k in columns}


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
        v1 = old_metadata(1)
        v1.create_all(conn)
        conn.execute(schema.schema_version.insert().values(version=1, applied_at="2024-01-01T00:00:00.000000+00:00"))
        conn.execute(v1.tables["sweeps"].insert(), old_row("sweeps", codec.sweep_to_row(sweep), 1))
        for record in (ok, slow):
            conn.execute(v1.tables["candidates"].insert(),
                         old_row("candidates", codec.candidate_to_row(record), 1))
            for row in codec.device_rows(record):
                conn.execute(v1.tables["device_metrics"].insert().values(**old_row("device_metrics", row, 1)))
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
        assert sorted(versions) == [1, 2, 3, 4]  # every migration since, in one open
        assert set(schema.DEVICE_METRICS_V2) <= columns
        assert "ix_device_metrics_board" in indexes
        assert tuple(backfilled) == ("sw-1", True, True)
        assert store.get_candidate("c-npu") == slow  # nothing lost or changed
        board = leaderboard(store, device="npu")
        assert not board["eligible"][0] and "fall back to the CPU" in board["ineligible_reason"][0]
        assert list(leaderboard(store, device=HOST_DEVICE)["rank"]) == [1, 2]
    with Store.open(home, url=backend_url) as again:  # a second open does not migrate twice
        with again.snapshot() as conn:
            assert sorted(conn.execute(select(schema.schema_version.c.version)).scalars()) == [1, 2, 3, 4]


def _sweep_record(builder):
    from selection import HoldoutRecord, SweepRecord

    return SweepRecord("sw-1", "n", "d", "fp", HoldoutRecord(0, 10, "a" * 64), {}, 2,
                       created_at=builder._next_time())


def test_v2_store_backfills_refits_and_sweep_devices(home: Home, backend_url: str | None) -> None:
    """Migration 3 on the shapes version 2 left: each source of a refit's parent, each device layout."""
    url = parse_url(backend_url) if backend_url else parse_url(f"sqlite:///{home.ensure().db_path}")
    from tests.selection.conftest import Factory

    class _Builder(Factory):
        def __init__(self) -> None:
            self._tick = 0

    builder = _Builder()
    layouts = {"sw-top": {"devices": [{"name": "npu"}, HOST_DEVICE]},  # tables with a name
               "sw-nested": {"sweep": {"devices": ["npu", HOST_DEVICE]}},  # shadow's [sweep]
               "sw-rows": {"seed": 1},  # none: the devices its rows ran on, host first
               "sw-empty": {}}  # no rows either: none
    sweeps = [dataclasses.replace(_sweep_record(builder), sweep_id=sid, config=config)
              for sid, config in layouts.items()]
    npu = DeviceResult("npu", "ok", accuracy=0.5, latency_ms=1.0)
    ordinary = builder.candidate("c-a", sweep_id="sw-rows", store=False,
                                 devices=(DeviceResult(HOST_DEVICE, "ok", accuracy=0.5), npu))
    by_lineage = builder.candidate("c-r1", sweep_id="sw-rows", store=False)
    by_lineage = dataclasses.replace(by_lineage, lineage={"refit": {"of": "c-a", "rows": 3}})
    by_extra = builder.candidate("c-r2", sweep_id="sw-rows", store=False, devices=(
        DeviceResult(HOST_DEVICE, "ok", accuracy=0.9, extra={"refit_of": "c-a"}),))
    unknown = builder.candidate("c-x", sweep_id="sw-rows", store=False)  # NULL sweep, no parent recorded
    engine = create_engine(url)
    with engine.begin() as conn:
        v2 = old_metadata(2)
        v2.create_all(conn)
        conn.execute(schema.schema_version.insert().values(version=2, applied_at="2024-01-01T00:00:00.000000+00:00"))
        for sweep in sweeps:
            conn.execute(v2.tables["sweeps"].insert(), old_row("sweeps", codec.sweep_to_row(sweep), 2))
        for record, unranked in ((ordinary, False), (by_lineage, True), (by_extra, True), (unknown, True)):
            row = codec.candidate_to_row(dataclasses.replace(record, lineage={}))
            row["lineage"] = codec.encode_json(record.lineage, what="lineage")  # as version 2 wrote it
            conn.execute(v2.tables["candidates"].insert(), old_row("candidates", row, 2))
            for metric in codec.device_rows(record):
                metric["sweep_id"] = None if unranked else metric["sweep_id"]  # version 2's trick
                conn.execute(v2.tables["device_metrics"].insert(), old_row("device_metrics", metric, 2))
    engine.dispose()

    with Store.open(home, url=backend_url) as store:
        assert [store.get_candidate(c).refit_of for c in ("c-a", "c-r1", "c-r2", "c-x")] == [
            None, "c-a", "c-a", None]
        assert store.get_candidate("c-r1").refit == {"of": "c-a", "rows": 3}
        assert {s: store.get_sweep(s).devices for s in layouts} == {
            "sw-top": ("npu", HOST_DEVICE), "sw-nested": ("npu", HOST_DEVICE),
            "sw-rows": (HOST_DEVICE, "npu"), "sw-empty": ()}
        with store.snapshot() as conn:
            metrics = schema.device_metrics
            sweep_of = dict(conn.execute(select(metrics.c.candidate_id, metrics.c.sweep_id)
                                         .where(metrics.c.device == HOST_DEVICE)).all())
        # Refits get their sweep back; a row that was off the board for no known reason stays off.
        assert sweep_of == {"c-a": "sw-rows", "c-r1": "sw-rows", "c-r2": "sw-rows", "c-x": None}
        assert list(leaderboard(store, sweep="sw-rows", device=HOST_DEVICE)["candidate_id"]) == ["c-a"]


def test_config_devices_reads_version_2_layouts() -> None:
    assert config_devices({"devices": ["a", {"name": "b"}, "a"]}) == ["a", "b"]
    assert config_devices({"sweep": {"devices": ["npu"]}}) == ["npu"]
    assert config_devices({"devices": []}) is None and config_devices({"sweep": 3}) is None
    assert config_devices(["not", "a", "table"]) is None


def test_v2_first_device_survives_the_upgrade(home: Home, backend_url: str | None) -> None:
    """A sweep that never ran on the host, or whose config's first entry names nothing:
    version 2 listed its early failures on the host, and so does version 3."""
    url = parse_url(backend_url) if backend_url else parse_url(f"sqlite:///{home.ensure().db_path}")
    from tests.selection.conftest import Factory

    class _Builder(Factory):
        def __init__(self) -> None:
            self._tick = 0

    builder = _Builder()
    layouts = {"sw-outside": {"seed": 1},  # an outside producer: rows on the npu only
               "sw-bad-first": {"devices": [{"kind": "npu"}, "npu"]}}  # first entry has no name
    assert [v2_first_device(c) for c in layouts.values()] == [HOST_DEVICE, HOST_DEVICE]
    sweeps = [dataclasses.replace(_sweep_record(builder), sweep_id=sid, config=config)
              for sid, config in layouts.items()]
    npu = DeviceResult("npu", "ok", accuracy=0.5, latency_ms=1.0)
    records = []
    for sid in layouts:
        records.append(builder.candidate(f"{sid}-ok", sweep_id=sid, store=False, devices=(npu,)))
        early = builder.candidate(f"{sid}-early", sweep_id=sid, store=False, devices=())
        records.append(dataclasses.replace(early, status="failed", error="boom"))
    engine = create_engine(url)
    with engine.begin() as conn:
        v2 = old_metadata(2)
        v2.create_all(conn)
        conn.execute(schema.schema_version.insert().values(version=2, applied_at="2024-01-01T00:00:00.000000+00:00"))
        for sweep in sweeps:
            conn.execute(v2.tables["sweeps"].insert(), old_row("sweeps", codec.sweep_to_row(sweep), 2))
        for record in records:
            conn.execute(v2.tables["candidates"].insert(),
                         old_row("candidates", codec.candidate_to_row(record), 2))
            for metric in codec.device_rows(record):
                conn.execute(v2.tables["device_metrics"].insert(), old_row("device_metrics", metric, 2))
    engine.dispose()

    with Store.open(home, url=backend_url) as store:
        assert {s: store.get_sweep(s).devices for s in layouts} == {"sw-outside": (), "sw-bad-first": ()}
        for sid in layouts:
            board = leaderboard(store, sweep=sid)
            where = dict(zip(board["candidate_id"], board["device"]))
            assert where == {f"{sid}-ok": "npu", f"{sid}-early": HOST_DEVICE}, (sid, where)
            assert list(leaderboard(store, sweep=sid, device=HOST_DEVICE)["candidate_id"]) == [
                f"{sid}-early"]
