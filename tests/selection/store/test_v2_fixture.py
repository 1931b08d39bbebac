"""A real schema-version-2 store, written by shadow-sweep 0d679d3, upgraded in place to version 3.

``fixtures/v2_store.db`` and ``fixtures/v2_outputs.json`` come from
``fixtures/make_v2_store.py`` run against that commit (its docstring says how): two sweeps,
candidates on host-cpu and an npu, failures (one before any device ran), a refit of ``c-a``
(``c-r``, stored by version 2 with ``device_metrics.sweep_id = NULL``), three promotions and a
rollback. The upgraded store must print exactly what version 2 printed: ``shadow leaderboard``
and ``shadow history`` as JSON, with no field left out (none is volatile across the upgrade:
every timestamp shown is stored; only history's ``at`` differs between two runs of the
generator, so regenerate the .db and the .json together), and the refit stays off every board.

On PostgreSQL the fixture's rows are copied, as they are, into version-2 tables of a private
schema (``backend_url``), the way ``test_migrations.py`` builds old databases there.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, select

from selection.home import Home
from selection.leaderboard.frame import best_candidate, leaderboard
from selection.records import HOST_DEVICE
from selection.store import Store, schema
from selection.store.engine import parse_url
from shadow.cli.main import main
from tests.selection.store.test_migrations import old_metadata

FIXTURES = Path(__file__).resolve().parent / "fixtures"
REFIT, PARENT = "c-r", "c-a"


def _v2_copy(home: Home, backend_url: str | None) -> list[str]:
    """The fixture as a version-2 store on the backend; returns the CLI's store flags."""
    fixture = parse_url(f"sqlite:///{FIXTURES / 'v2_store.db'}")
    if backend_url is None:
        target = home.ensure().db_path
        shutil.copyfile(FIXTURES / "v2_store.db", target)
        return ["--home", str(home.root)]
    v2 = old_metadata(2)
    source, dest = create_engine(fixture), create_engine(parse_url(backend_url))
    try:
        with source.connect() as read, dest.begin() as write:
            v2.create_all(write)
            for table in v2.sorted_tables:
                query = select(table).order_by(*table.primary_key.columns)  # a reverted row before its rollback
                rows = [dict(r) for r in read.execute(query).mappings()]
                if rows:
                    write.execute(table.insert(), rows)
    finally:
        source.dispose()
        dest.dispose()
    return ["--home", str(home.root), "--store", backend_url]


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> object:
    capsys.readouterr()
    assert main(argv) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


#: Leaderboard columns that came after the fixture was recorded (issue 14's edge columns).
ADDED_COLUMNS = ("numerics", "emulator_agreement", "placement")


def test_the_fixture_is_a_real_version_2_store() -> None:
    """What the upgrade starts from: version 2, no version-3 columns, the refit off the board by NULL."""
    engine = create_engine(parse_url(f"sqlite:///{FIXTURES / 'v2_store.db'}"))
    try:
        with engine.connect() as conn:
            versions = conn.exec_driver_sql("SELECT version FROM schema_version").scalars().all()
            columns = {t: {c["name"] for c in inspect(conn).get_columns(t)} for t in ("sweeps", "candidates")}
            refit_sweeps = conn.exec_driver_sql(
                "SELECT DISTINCT sweep_id FROM device_metrics WHERE candidate_id = ?", (REFIT,)).scalars().all()
    finally:
        engine.dispose()
    assert versions == [2]
    assert "devices" not in columns["sweeps"] and "refit_of" not in columns["candidates"]
    assert refit_sweeps == [None]
    assert (FIXTURES / "v2_store.db").stat().st_size < 200_000


def test_v2_store_upgrades_and_prints_what_version_2_printed(
    home: Home, backend_url: str | None, capsys: pytest.CaptureFixture[str]
) -> None:
    flags = _v2_copy(home, backend_url)
    expected = json.loads((FIXTURES / "v2_outputs.json").read_text())
    for call, before in expected.items():  # the first call upgrades the store
        after = _cli([*call.split(), *flags], capsys)
        if isinstance(after, list) and after and isinstance(after[0], dict):
            # Leaderboard columns added since version 2 (edge numerics, placement): new keys
            # only, empty for a version-2 store; everything version 2 printed is unchanged.
            assert all(row.get(k) is None for row in after for k in ADDED_COLUMNS)
            after = [{k: v for k, v in row.items() if k not in ADDED_COLUMNS} for row in after]
        assert after == before, f"`shadow {call}` changed across the upgrade"
        if call.startswith("leaderboard"):
            assert REFIT not in {row["candidate_id"] for row in after}  # type: ignore[union-attr]
    with Store.open(home, url=backend_url, create=False) as store:
        with store.snapshot() as conn:
            versions = conn.execute(select(schema.schema_version.c.version)).scalars().all()
            metrics = schema.device_metrics
            refit_sweeps = set(conn.execute(select(metrics.c.sweep_id)
                                            .where(metrics.c.candidate_id == REFIT)).scalars())
            indexes = {i["name"] for i in inspect(conn).get_indexes("candidates")}
        refit, parent = store.get_candidate(REFIT), store.get_candidate(PARENT)
        assert sorted(versions) == [2, 3, 4]
        assert "ix_candidates_sweep_refit" in indexes
        # The refit: its parent backfilled from the lineage, its rows given their sweep back.
        assert (refit.refit_of, parent.refit_of) == (PARENT, None)
        assert refit.refit is not None and refit.refit["of"] == PARENT and refit.refit["rows"] == 1100
        assert refit_sweeps == {"sw-new"}
        # Devices as data: sw-new from its config's [sweep] devices, sw-old from its rows (host first).
        assert store.get_sweep("sw-new").devices == ("npu", HOST_DEVICE)
        assert store.get_sweep("sw-old").devices == (HOST_DEVICE, "npu")
        # Still off every ranking: its in-sample 0.97 would be rank 1 on both devices.
        assert best_candidate(store) == "c-b"
        assert best_candidate(store, device="npu") == PARENT
        for view in ({}, {"top": 1}, {"pareto": True}, {"where": "accuracy > 0.95"},
                     {"sweep": "all", "status": "ok"}):
            assert REFIT not in set(leaderboard(store, **view)["candidate_id"])  # type: ignore[arg-type]
        # The candidates a resumed sweep would skip are the ones it planned, not the refit.
        planned = {r.candidate_id for r in store.list_candidates("sw-new") if not r.refit_of}
        assert planned == {"c-a", "c-b", "c-c", "c-d", "c-e"}
    with Store.open(home, url=backend_url, create=False) as again:  # a second open does not migrate
        with again.snapshot() as conn:
            assert sorted(conn.execute(select(schema.schema_version.c.version)).scalars()) == [2, 3, 4]
