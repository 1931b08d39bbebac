"""Queries on the promotion history, the channel table and the event log.

Functions here run inside a connection the caller holds (usually
``Store.transaction()``), so a history row and the channel change it
explains commit together, and so does an event and the change it records. Policy (what may be promoted, what a rollback
reverts) lives in ``selection.channels.promotion``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from sqlalchemy import Connection, select

from selection.errors import ConfigError
from selection.records import EventRecord, PromotionRecord
from selection.store import rows as codec
from selection.store import schema
from selection.store.rows import Row

_P = schema.promotions
_C = schema.channels
_E = schema.events


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


# -- the event log (append-only: there is no update or delete here) ---------------


def append_event(conn: Connection, record: EventRecord) -> EventRecord:
    """Insert event ``record``; returns the stored copy, carrying the id the database assigned.

    Run it inside the transaction of the change the event explains (a
    promotion, a proposal settled) so both commit or neither does.
    """
    result = conn.execute(_E.insert().values(**codec.event_to_row(record)))
    key = result.inserted_primary_key
    assert key is not None  # an INSERT of one row always has one
    return dataclasses.replace(record, event_id=int(key[0]))


def list_events(
    conn: Connection,
    channel: str | None = None,
    kinds: Iterable[str] | str | None = None,
    since_id: int | None = None,
    limit: int | None = None,
) -> list[EventRecord]:
    """Events newest first: of ``channel`` (every channel if None), of ``kinds`` (a kind or
    several; every kind if None), with an id above ``since_id``, at most ``limit`` of them.

    Ids grow in commit order where one writer appends a channel's events (one
    controller per channel), so polling with ``since_id`` = the newest id seen
    misses nothing of that channel.
    """
    query = select(_E).order_by(_E.c.event_id.desc())
    if channel is not None:
        query = query.where(_E.c.channel == channel)
    if kinds is not None:
        wanted = [kinds] if isinstance(kinds, str) else list(kinds)
        for kind in wanted:
            codec.check_choice(kind, codec.EVENT_KINDS, "event kind")
        if not wanted:
            raise ConfigError(f"event kinds must name at least one of {', '.join(codec.EVENT_KINDS)}, "
                              "or be None for every kind; got an empty list")
        query = query.where(_E.c.kind.in_(sorted(set(wanted))))
    if since_id is not None:
        query = query.where(_E.c.event_id > _count(since_id, "since_id", low=0))
    if limit is not None:
        query = query.limit(_count(limit, "limit", low=1))
    return [codec.row_to_event(row) for row in conn.execute(query).mappings()]


def _count(value: object, what: str, *, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= 2**63 - 1:
        raise ConfigError(f"event {what} must be an int >= {low}; got {value!r}; e.g. {what}={max(low, 10)}")
    return value
