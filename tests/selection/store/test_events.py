"""The event log (schema version 4): append-only, on every backend, upgraded into old stores, and
``shadow events`` reading it."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import MetaData, create_engine, inspect, select

from selection import ConfigError, Home, Store, StoreError
from selection.records import EventRecord, PromotionRecord
from selection.store import channel_rows, schema
from selection.store import rows as codec
from selection.store.engine import parse_url
from tests.bad_inputs.contract import assert_user_error, run_cli, snapshot
from tests.selection.conftest import T0
from tests.selection.store.test_v2_fixture import _v2_copy

GATE = {"passed": True, "p_value": 0.0123, "checks": [{"check": "mcnemar", "passed": True}]}


def _event(kind: str = "trigger", channel: str = "production", n: int = 0, **fields) -> EventRecord:
    values = {"at": T0 + timedelta(seconds=n), "reason": f"{kind} #{n}",
              "evidence": {"rows_since_sweep": 1000 + n, "threshold": 1000}, **fields}
    return EventRecord(channel=channel, kind=kind, **values)  # type: ignore[arg-type]


def _fill(store: Store) -> list[EventRecord]:
    """Six events on two channels, oldest first, as the store returned them."""
    return [store.append_event(e) for e in (
        _event("trigger", n=0, data_version="fp-1"),
        _event("sweep_started", n=1, data_version="fp-1", sweep_id="sw-1"),
        _event("trigger", channel="canary", n=2),
        _event("gate", n=3, sweep_id="sw-1", candidate_id="c-1", evidence=GATE),
        _event("promotion", n=4, sweep_id="sw-1", candidate_id="c-1", history_id=7,
               reason="the gate passed: 0.81 against 0.77"),
        _event("sweep_finished", n=5, sweep_id="sw-1", evidence={"status": "finished", "ok": 4, "failed": 0}),
    )]


# -- the store contract, on SQLite and PostgreSQL --------------------------------------------


def test_append_assigns_ids_and_round_trips(any_store: Store) -> None:
    record = _event("gate", sweep_id="sw-1", candidate_id="c-1", data_version="fp-9",
                    evidence={"nested": {"a": [1, 2.5, None, True]}, "unicode": "élan"})
    stored = any_store.append_event(record)
    assert stored.event_id is not None and stored.event_id >= 1
    assert stored == dataclasses.replace(record, event_id=stored.event_id)
    assert record.event_id is None  # the record handed in is not mutated
    assert any_store.list_events() == [stored]
    again = any_store.append_event(record)  # the same facts twice are two events
    assert again.event_id is not None and again.event_id > stored.event_id
    assert [e.event_id for e in any_store.list_events()] == [again.event_id, stored.event_id]


def test_list_newest_first_with_every_filter(any_store: Store) -> None:
    events = _fill(any_store)
    ids = [e.event_id for e in events]
    newest = list(reversed(events))
    assert any_store.list_events() == newest
    assert any_store.list_events(channel="canary") == [events[2]]
    assert any_store.list_events(channel="nowhere") == []
    assert any_store.list_events(kinds="trigger") == [events[2], events[0]]
    assert any_store.list_events(kinds=["gate", "promotion"]) == [events[4], events[3]]
    assert any_store.list_events(channel="production", kinds=("trigger",)) == [events[0]]
    assert any_store.list_events(since_id=ids[3]) == [events[5], events[4]]
    assert any_store.list_events(since_id=ids[5]) == []
    assert any_store.list_events(since_id=0) == newest
    assert any_store.list_events(limit=2) == newest[:2]
    assert any_store.list_events(channel="production", kinds=["trigger", "sweep_finished"],
                                 since_id=ids[0], limit=1) == [events[5]]
    # What a person and a script read back: the reason, the evidence, the ids it names.
    promotion = any_store.list_events(kinds="promotion")[0]
    assert (promotion.history_id, promotion.candidate_id, promotion.reason) == (
        7, "c-1", "the gate passed: 0.81 against 0.77")
    assert any_store.list_events(kinds="gate")[0].evidence == GATE
    assert promotion.at == T0 + timedelta(seconds=4) and promotion.at.tzinfo is not None


def test_an_event_commits_with_the_change_it_explains(any_store: Store, any_make) -> None:
    any_make.sweep()
    candidate = any_make.candidate("c-1")
    promotion = PromotionRecord(
        history_id=0, channel="production", action="promote", candidate_id="c-1",
        device="host-cpu", sha256=candidate.onnx_sha256 or "", previous_candidate_id=None,
        previous_sha256=None, at=T0, who="test@host", reason="first model")
    with any_store.transaction() as conn:
        row = channel_rows.append(conn, promotion)
        event = any_store.append_event(
            _event("promotion", candidate_id="c-1", history_id=row.history_id), conn=conn)
        assert any_store.list_events() == []  # another connection does not see it yet
    assert any_store.list_events() == [event]

    # Rolled back together: neither the promotion row nor its event is kept.
    with pytest.raises(RuntimeError, match="crash"):
        with any_store.transaction() as conn:
            channel_rows.append(conn, dataclasses.replace(promotion, reason="second"))
            any_store.append_event(_event("promotion", n=1), conn=conn)
            raise RuntimeError("crash before commit")
    assert any_store.list_events() == [event]
    with any_store.snapshot() as conn:
        assert channel_rows.list_promotions(conn) == [row]


@pytest.mark.parametrize(("change", "fragment"), [
    ({"kind": "nope"}, "event kind must be one of trigger, sweep_started"),
    ({"at": datetime(2024, 5, 1, 12)}, "timezone-aware"),
    ({"evidence": {"ids": {1, 2}}}, "evidence must hold JSON values only"),
    ({"evidence": {"p_value": float("nan")}}, "store NaN as None"),
    ({"evidence": [1, 2]}, "evidence must be a dict of JSON values"),
    ({"reason": "  "}, "event reason"),
    ({"channel": "x" * 65}, "event channel must be a non-empty string of at most 64"),
    ({"sweep_id": ""}, "event sweep_id must be a non-empty string"),
    ({"history_id": True}, "event history_id must be the id of a promotions row"),
    ({"history_id": 0}, "event history_id must be the id of a promotions row"),
    ({"event_id": 3}, "event_id is assigned by the store"),
])
def test_bad_records_are_refused_and_store_nothing(any_store: Store, change: dict, fragment: str) -> None:
    before = _fill(any_store)
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(")):
        any_store.append_event(dataclasses.replace(_event(), **change))
    assert any_store.list_events() == list(reversed(before))


@pytest.mark.parametrize(("query", "fragment"), [
    ({"kinds": ["gate", "nope"]}, "event kind must be one of"),
    ({"kinds": []}, "event kinds must name at least one"),
    ({"limit": 0}, "event limit must be an int >= 1; got 0"),
    ({"limit": -1}, "event limit must be an int >= 1; got -1"),
    ({"since_id": -1}, "event since_id must be an int >= 0"),
    ({"since_id": True}, "event since_id must be an int >= 0; got True"),
    ({"limit": "5"}, "event limit must be an int >= 1; got '5'"),
])
def test_bad_queries_are_refused(any_store: Store, query: dict, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        any_store.list_events(**query)


def test_the_log_is_append_only(any_store: Store) -> None:
    """No call changes or removes an event, and a stored event cannot be appended twice."""
    stored = _fill(any_store)
    assert {n for n in dir(Store) if "event" in n} == {"append_event", "list_events"}
    assert {n for n in dir(channel_rows) if "event" in n and not n.startswith("_")} == {
        "append_event", "list_events"}
    with pytest.raises(ConfigError, match="it was stored"):
        any_store.append_event(stored[0])
    with pytest.raises(dataclasses.FrozenInstanceError):
        stored[0].reason = "rewritten"  # type: ignore[misc]
    read = any_store.list_events()
    read[0].evidence["ok"] = 99  # a returned record is a fresh copy
    assert any_store.list_events() == list(reversed(stored))


# -- upgrading old stores ---------------------------------------------------------------------


def _v3_store(home: Home, backend_url: str | None) -> str:
    """A schema-version-3 database (every table but version 4's) with one sweep; returns its URL."""
    url = backend_url or f"sqlite:///{home.ensure().db_path}"
    v3 = MetaData()
    for table in schema.metadata.sorted_tables:
        if table.name not in schema.V4_TABLES:
            table.to_metadata(v3)
    sweep = {"sweep_id": "sw-old", "name": "old", "dataset": "rainfall", "dataset_fingerprint": "fp-old",
             "holdout_start": 0, "holdout_stop": 10, "holdout_rows_sha256": "a" * 64,
             "holdout_data_sha256": None, "config": "{}", "n_planned": 1,
             "created_at": codec.encode_dt(T0), "status": "finished", "finished_at": None,
             "devices": '["host-cpu"]'}
    engine = create_engine(parse_url(url))
    with engine.begin() as conn:
        v3.create_all(conn)
        conn.execute(schema.schema_version.insert().values(version=3, applied_at=codec.encode_dt(T0)))
        conn.execute(schema.sweeps.insert().values(**sweep))
    engine.dispose()
    return url


def test_a_v3_store_gains_the_event_log_in_place(home: Home, backend_url: str | None) -> None:
    _v3_store(home, backend_url)
    with Store.open(home, url=backend_url, create=False) as store:  # a read-only open upgrades too
        with store.snapshot() as conn:
            versions = sorted(conn.execute(select(schema.schema_version.c.version)).scalars())
            indexes = {i["name"] for i in inspect(conn).get_indexes("events")}
        assert versions == [3, 4]
        assert {"ix_events_channel", "ix_events_channel_kind"} <= indexes
        assert store.get_sweep("sw-old").dataset_fingerprint == "fp-old"  # nothing lost
        assert store.list_events() == []
        stored = store.append_event(_event("controller", reason="controller started"))
        assert store.list_events(kinds="controller") == [stored]
    with Store.open(home, url=backend_url) as again:  # a second open does not migrate twice
        with again.snapshot() as conn:
            assert sorted(conn.execute(select(schema.schema_version.c.version)).scalars()) == [3, 4]
        assert again.list_events() == [stored]


def test_the_v2_fixture_upgrades_to_an_event_log(
    home: Home, backend_url: str | None, capsys: pytest.CaptureFixture[str]
) -> None:
    flags = _v2_copy(home, backend_url)
    with Store.open(home, url=backend_url) as store:
        with store.snapshot() as conn:
            assert sorted(conn.execute(select(schema.schema_version.c.version)).scalars()) == [2, 3, 4]
        assert store.list_events() == []
        gate = store.append_event(_event("gate", sweep_id="sw-new", candidate_id="c-b", evidence=GATE))
    outcome = run_cli(capsys, "events", "--format", "json", *flags)
    assert outcome.code == 0, outcome.stderr
    assert [e["event_id"] for e in json.loads(outcome.stdout)] == [gate.event_id]


def test_an_upgrade_that_meets_a_foreign_events_table_changes_nothing(home: Home) -> None:
    url = _v3_store(home, None)
    engine = create_engine(parse_url(url))
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE events (something TEXT)")
    engine.dispose()
    refused = "(?s)upgrading it to 4 failed.*table events already exists.*nothing was changed"
    with pytest.raises(StoreError, match=refused):
        Store.open(home)
    engine = create_engine(parse_url(url))
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT version FROM schema_version").scalars().all() == [3]
    engine.dispose()


# -- shadow events ------------------------------------------------------------------------------


@pytest.fixture
def logged(store: Store) -> tuple[Home, list[EventRecord]]:
    return store.home, _fill(store)


def test_cli_json_is_every_field_in_full(logged, capsys: pytest.CaptureFixture[str]) -> None:
    home, events = logged
    outcome = run_cli(capsys, "events", "--home", str(home.root), "--format", "json")
    assert outcome.code == 0, outcome.stderr
    rows = json.loads(outcome.stdout)
    assert [r["event_id"] for r in rows] == [e.event_id for e in reversed(events)]
    gate = next(r for r in rows if r["kind"] == "gate")
    assert gate["evidence"] == GATE  # in full, nested
    assert gate["history_id"] is None and gate["data_version"] is None
    promotion = next(r for r in rows if r["kind"] == "promotion")
    assert promotion["history_id"] == 7 and isinstance(promotion["history_id"], int)
    assert datetime.fromisoformat(promotion["at"]) == T0.astimezone(UTC) + timedelta(seconds=4)
    assert set(rows[0]) == set(EventRecord.__dataclass_fields__)


def test_cli_filters_and_table(logged, capsys: pytest.CaptureFixture[str]) -> None:
    home, events = logged
    base = ("events", "--home", str(home.root))
    outcome = run_cli(capsys, *base, "--channel", "production", "--kind", "trigger", "gate",
                      "--kind", "promotion", "--since-id", str(events[0].event_id), "--limit", "1")
    assert outcome.code == 0, outcome.stderr
    lines = outcome.stdout.splitlines()
    assert lines[0].split()[:4] == ["event_id", "at", "channel", "kind"] and len(lines) == 2
    assert "promotion" in lines[1] and "the gate passed: 0.81 against 0.77" in lines[1]
    gate = run_cli(capsys, *base, "--kind", "gate").stdout
    assert 'checks=[{"check":"mcnemar",' in gate
    assert "…" in gate  # the evidence is cut short in the table; json has it whole
    assert "rows_since_sweep=1000 threshold=1000" in run_cli(capsys, *base, "--limit", "9").stdout
    table = run_cli(capsys, *base, "--channel", "nowhere")
    assert (table.code, table.stdout) == (0, "(no rows)\n")
    listed = list(csv.DictReader(io.StringIO(run_cli(capsys, *base, "--format", "csv").stdout)))
    assert len(listed) == 6 and json.loads(listed[0]["evidence"]) == events[5].evidence


def test_cli_help_has_examples(capsys: pytest.CaptureFixture[str]) -> None:
    outcome = run_cli(capsys, "events", "--help")
    assert outcome.code == 0
    assert "examples:" in outcome.stdout and "shadow events --kind trigger gate promotion" in outcome.stdout
    assert "sweep_resumed" in outcome.stdout


@pytest.mark.parametrize(("argv", "fragments"), [
    (("--kind", "nope"), ("argument --kind", "invalid choice: 'nope'")),
    (("--limit", "-1"), ("argument --limit", "must be an int >= 1", "'-1'")),
    (("--limit", "0"), ("argument --limit", "must be an int >= 1")),
    (("--since-id", "x"), ("argument --since-id", "must be an int >= 0")),
    (("--channel", "Bad Name"), ("a channel name must be", "'Bad Name'")),
    (("--format", "yaml"), ("argument --format", "invalid choice")),
])
def test_cli_bad_input_is_one_line_and_changes_nothing(
    logged, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], fragments: tuple[str, ...]
) -> None:
    home, _ = logged
    before = snapshot(home.root)
    outcome = run_cli(capsys, "events", "--home", str(home.root), *argv)
    assert_user_error(outcome, *fragments)
    assert outcome.stdout == ""
    assert snapshot(home.root) == before


def test_cli_on_no_store_is_one_line(tmp_path, capsys: pytest.CaptureFixture[str], monkeypatch) -> None:
    monkeypatch.delenv("SHADOW_STORE", raising=False)
    outcome = run_cli(capsys, "events", "--home", str(tmp_path / "nothing"))
    assert_user_error(outcome, "shadow events: error:")
    assert not (tmp_path / "nothing").exists()  # a read-only verb creates no store
