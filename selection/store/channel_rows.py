"""Queries on the promotion history and the channel table.

Functions here run inside a connection the caller holds (usually
``Store.transaction()``), so a history row and the channel change it
explains commit together. Policy (what may be promoted, what a rollback
reverts) lives in ``selection.channels.promotion``.
"""

from __future__ import annotations

import dataclasses

from sqlalchemy import Connection, select

from selection.records import PromotionRecord
from selection.store import rows as codec
from selection.store import schema
from selection.store.rows import Row

_P = schema.promotions
_C = schema.channels


def channel_row(
    conn: Connection, channel: str, *, for_update: bool = False
) -> Row | None:
    """The ``channels`` row of ``channel`` (its current model), None if never promoted.

    ``for_update`` locks the row until the transaction ends (PostgreSQL;
    SQLite's ``BEGIN IMMEDIATE`` already serializes writers), so two
    concurrent promotions cannot both record the same "previous" model.
    """
    query = select(_C).where(_C.c.channel == channel)
    if for_update:
        query = query.with_for_update()
    return conn.execute(query).mappings().first()


def get_promotion(conn: Connection, history_id: int) -> PromotionRecord | None:
    """History row ``history_id``, None if absent."""
    row = conn.execute(select(_P).where(_P.c.history_id == history_id)).mappings().first()
    return None if row is None else codec.row_to_promotion(row)


def list_promotions(conn: Connection, channel: str | None = None) -> list[PromotionRecord]:
    """History rows of ``channel`` (every channel if None), newest first."""
    query = select(_P).order_by(_P.c.history_id.desc())
    if channel is not None:
        query = query.where(_P.c.channel == channel)
    return [codec.row_to_promotion(row) for row in conn.execute(query).mappings()]


def newest_live_promote(conn: Connection, channel: str) -> PromotionRecord | None:
    """The newest promote row of ``channel`` that no rollback row reverts."""
    reverted = select(_P.c.reverts_id).where(
        _P.c.channel == channel, _P.c.action == "rollback", _P.c.reverts_id.is_not(None)
    )
    query = (
        select(_P)
        .where(
            _P.c.channel == channel,
            _P.c.action == "promote",
            _P.c.history_id.not_in(reverted),
        )
        .order_by(_P.c.history_id.desc())
        .limit(1)
    )
    row = conn.execute(query).mappings().first()
    return None if row is None else codec.row_to_promotion(row)


def row_before(conn: Connection, channel: str, history_id: int) -> PromotionRecord | None:
    """The history row of ``channel`` just before ``history_id``.

    Every row records the full state it set, so this is the channel's state
    just before row ``history_id`` was applied.
    """
    query = (
        select(_P)
        .where(_P.c.channel == channel, _P.c.history_id < history_id)
        .order_by(_P.c.history_id.desc())
        .limit(1)
    )
    row = conn.execute(query).mappings().first()
    return None if row is None else codec.row_to_promotion(row)


def append(conn: Connection, record: PromotionRecord) -> PromotionRecord:
    """Insert history row ``record`` and point its channel at the state it sets.

    ``record.history_id`` is ignored; the returned copy carries the id the
    database assigned.
    """
    result = conn.execute(_P.insert().values(**codec.promotion_to_row(record)))
    key = result.inserted_primary_key
    assert key is not None  # an INSERT of one row always has one
    history_id = int(key[0])
    values = {
        "candidate_id": record.candidate_id,
        "device": record.device,
        "sha256": record.sha256,
        "history_id": history_id,
        "updated_at": codec.encode_dt(record.at),
    }
    # Update-then-insert instead of a dialect-specific upsert: the caller's
    # transaction holds the write lock (SQLite) or the row lock (PostgreSQL
    # raises a unique violation on a concurrent first insert, rolling back).
    updated = conn.execute(_C.update().where(_C.c.channel == record.channel).values(**values))
    if updated.rowcount == 0:
        conn.execute(_C.insert().values(channel=record.channel, **values))
    return dataclasses.replace(record, history_id=history_id)


def list_channels(conn: Connection) -> list[Row]:
    """Every ``channels`` row (one per channel ever promoted), by channel name."""
    return list(conn.execute(select(_C).order_by(_C.c.channel)).mappings())
