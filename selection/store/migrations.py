"""Schema migrations: how a database written by an older shadow-sweep is upgraded.

Each migration takes a connection inside the write transaction that
``engine.init_schema`` holds and moves the schema from version ``n - 1`` to
``n``; it must run on SQLite and PostgreSQL alike (plain ``ALTER TABLE ADD
COLUMN``, portable ``UPDATE`` statements, indexes from ``schema.py``). The
transaction makes an upgrade all or nothing: a failed migration leaves the
old database as it was. Adding a schema change is: bump
``schema.SCHEMA_VERSION``, add ``_to_vN`` here and register it in
:data:`MIGRATIONS`.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Connection, bindparam, select, text

from selection.records import utc_now
from selection.store import rows as codec
from selection.store import schema

Migration = Callable[[Connection], None]


def _add_column(conn: Connection, table: str, name: str) -> None:
    column = schema.metadata.tables[table].c[name]
    sql_type = column.type.compile(dialect=conn.dialect)
    conn.execute(text(f"ALTER TABLE {table} ADD COLUMN {name} {sql_type}"))


def _to_v2(conn: Connection) -> None:
    """Leaderboard columns on ``device_metrics``: sweep_id and the device extras ranking reads."""
    for name in schema.DEVICE_METRICS_V2:
        _add_column(conn, "device_metrics", name)
    metrics = schema.device_metrics
    for column, value in (("sweep_id", "candidates.sweep_id"),
                          ("candidate_ok", "candidates.status = 'ok'")):
        conn.execute(
            text(
                f"UPDATE device_metrics SET {column} = (SELECT {value} FROM candidates "
                "WHERE candidates.candidate_id = device_metrics.candidate_id)"
            )
        )
    # Extras are JSON text: decode them here, in Python, so the same code runs
    # on both backends (their JSON functions differ).
    rows = conn.execute(select(metrics.c.candidate_id, metrics.c.device, metrics.c.extra)).all()
    updates = [
        {"b_candidate_id": cid, "b_device": device, **codec.extra_columns(codec.decode_json(extra))}
        for cid, device, extra in rows
    ]
    if updates:
        statement = (
            metrics.update()
            .where(metrics.c.candidate_id == bindparam("b_candidate_id"))
            .where(metrics.c.device == bindparam("b_device"))
            .values({name: bindparam(name) for name in schema.DEVICE_METRICS_V2[2:]})
        )
        conn.execute(statement, updates)
    for index in (*metrics.indexes, *schema.candidates.indexes):
        index.create(conn, checkfirst=True)


#: Target version -> the migration that produces it from the version before.
MIGRATIONS: dict[int, Migration] = {2: _to_v2}


def upgrade(conn: Connection, from_version: int, to_version: int) -> list[int]:
    """Run every migration after ``from_version`` up to ``to_version``; returns the versions applied.

    Each applied version gets its own ``schema_version`` row, so the table
    also tells when a database was upgraded.
    """
    applied = []
    for version in range(from_version + 1, to_version + 1):
        MIGRATIONS[version](conn)
        conn.execute(
            schema.schema_version.insert().values(
                version=version, applied_at=codec.encode_dt(utc_now())
            )
        )
        applied.append(version)
    return applied
