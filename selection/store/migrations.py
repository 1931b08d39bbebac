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
from typing import Any

from sqlalchemy import Connection, bindparam, select, text

from selection.records import HOST_DEVICE, utc_now
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
        if index.name not in schema.V3_INDEXES:  # its column comes with version 3
            index.create(conn, checkfirst=True)


def config_devices(config: Any) -> list[str] | None:
    """The device names a version-2 sweep config lists, None if it names none.

    What version 2's leaderboard read to learn a sweep's first device: a
    ``devices`` list at the top or under ``[sweep]`` (shadow's layout), of
    names or of tables with a ``name``. Version 3 stores the list as data
    (``sweeps.devices``), so only this migration knows config layouts.
    """
    if not isinstance(config, dict):
        return None
    devices = config.get("devices")
    section = config.get("sweep")
    if devices is None and isinstance(section, dict):
        devices = section.get("devices")
    if not isinstance(devices, list):
        return None
    names: list[str] = []
    for entry in devices:
        name = entry.get("name") if isinstance(entry, dict) else entry
        if isinstance(name, str) and name and name not in names:
            names.append(name)
    return names or None


def v2_first_device(config: Any) -> str:
    """Where version 2's leaderboard listed a sweep's candidates that failed before any device ran.

    Its rule exactly: the first entry of the config's ``devices`` list when
    that entry names a device, else the host (an empty name, which no device
    has, counts as none).
    """
    devices = config.get("devices") if isinstance(config, dict) else None
    section = config.get("sweep") if isinstance(config, dict) else None
    if devices is None and isinstance(section, dict):
        devices = section.get("devices")
    if isinstance(devices, list) and devices:
        entry = devices[0]
        name = entry.get("name") if isinstance(entry, dict) else entry
        if isinstance(name, str) and name:
            return name
    return HOST_DEVICE


def _to_v3(conn: Connection) -> None:
    """``candidates.refit_of`` and ``sweeps.devices``, backfilled from what version 2 recorded.

    Version 2 kept a refit off the board by writing ``device_metrics.sweep_id =
    NULL``; its parent is in ``lineage["refit"]["of"]`` (and in each device
    row's ``extra["refit_of"]``). Its rows get their sweep back, and ranking
    leaves refits out by ``refit_of``. A row with a NULL sweep whose candidate
    records no parent keeps it: what was off the board stays off.
    """
    for table, names in schema.V3_COLUMNS.items():
        for name in names:
            _add_column(conn, table, name)
    candidates, metrics, sweeps = schema.candidates, schema.device_metrics, schema.sweeps
    # Only lineages that mention "refit" are decoded (canonical JSON spells a key
    # '"refit":'), so a 100,000-candidate store is not read into Python.
    parents: dict[str, str] = {}
    for cid, lineage in conn.execute(
        select(candidates.c.candidate_id, candidates.c.lineage)
        .where(candidates.c.lineage.like('%"refit"%'))
    ):
        parent = codec.lineage_refit_of(codec.decode_json(lineage))
        if parent is not None:
            parents[cid] = parent
    for cid, extra in conn.execute(
        select(metrics.c.candidate_id, metrics.c.extra).where(metrics.c.sweep_id.is_(None))
    ):
        parent = codec.decode_json(extra).get("refit_of")
        if isinstance(parent, str) and parent and cid not in parents:
            parents[cid] = parent
    if parents:
        conn.execute(
            candidates.update().where(candidates.c.candidate_id == bindparam("b_candidate_id"))
            .values(refit_of=bindparam("b_refit_of")),
            [{"b_candidate_id": cid, "b_refit_of": parent} for cid, parent in sorted(parents.items())],
        )
        conn.execute(
            text(
                "UPDATE device_metrics SET sweep_id = (SELECT sweep_id FROM candidates "
                "WHERE candidates.candidate_id = device_metrics.candidate_id) "
                "WHERE sweep_id IS NULL AND candidate_id IN "
                "(SELECT candidate_id FROM candidates WHERE refit_of IS NOT NULL)"
            )
        )
    # Devices: the config's list where it has one (its order), else the devices
    # the sweep's rows ran on, host first; either only if its first device is
    # the one version 2 chose (v2_first_device), else an empty list, which the
    # leaderboard reads as the host, as version 2 did.
    ran: dict[str, list[str]] = {}
    for sweep_id, device in conn.execute(
        select(metrics.c.sweep_id, metrics.c.device).where(metrics.c.sweep_id.is_not(None)).distinct()
    ):
        ran.setdefault(sweep_id, []).append(device)
    updates = []
    for sweep_id, config in conn.execute(select(sweeps.c.sweep_id, sweeps.c.config)):
        decoded = codec.decode_json(config)
        first = v2_first_device(decoded)
        choices = (config_devices(decoded) or [],
                   sorted(ran.get(sweep_id, []), key=lambda d: codec.device_order(d, HOST_DEVICE)))
        devices = next((c for c in choices if c and c[0] == first), [])
        updates.append({"b_sweep_id": sweep_id,
                        "b_devices": codec.encode_json(devices, what=f"sweep {sweep_id!r} devices")})
    if updates:
        conn.execute(
            sweeps.update().where(sweeps.c.sweep_id == bindparam("b_sweep_id"))
            .values(devices=bindparam("b_devices")),
            updates,
        )
    for index in schema.candidates.indexes:
        if index.name in schema.V3_INDEXES:
            index.create(conn, checkfirst=True)


def _to_v4(conn: Connection) -> None:
    """The append-only ``events`` table and its indexes (nothing to backfill: no event predates it).

    Created without ``checkfirst``: a version-3 database holding a table of that
    name is not one this code wrote, and the upgrade refuses it, changing nothing.
    """
    for name in schema.V4_TABLES:
        schema.metadata.tables[name].create(conn)


#: Target version -> the migration that produces it from the version before.
MIGRATIONS: dict[int, Migration] = {2: _to_v2, 3: _to_v3, 4: _to_v4}


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
