"""Promotion, rollback and the audit trail of channels.

A channel (``production`` by default) points at one candidate's model on one
device. Every change is one transaction that appends a history row and moves
the channel row; only after the commit are the files swapped
(``channels.materialize``). The database is the source of truth: if the
process dies between the commit and the swap, :func:`sync_channel` (run by
every promote/rollback and by ``shadow doctor``) makes the files match again.

Rollback is an undo stack. A *live* promote is one no rollback row reverts;
a rollback reverts the newest live promote, restoring the model that promote
replaced. Rolling back twice therefore goes two promotions back, and a new
promote after a rollback is undone before older ones.
"""

from __future__ import annotations

import getpass
import re
import socket
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from sqlalchemy.exc import IntegrityError as SAIntegrityError

from selection.channels import materialize
from selection.errors import ConfigError, NotFoundError, PromotionError, StoreError
from selection.records import (
    DEFAULT_CHANNEL,
    HOST_DEVICE,
    CandidateRecord,
    DeviceResult,
    PromotionRecord,
    utc_now,
)
from selection.store import Store
from selection.store import history as queries

_CHANNEL_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


def check_channel(channel: str) -> str:
    """Return ``channel`` if it is a valid channel name, else raise ConfigError.

    Names become directory names, so they are restricted to a safe alphabet.
    """
    if not isinstance(channel, str) or not _CHANNEL_RE.match(channel):
        raise ConfigError(
            "a channel name must be 1-64 characters of lowercase letters, digits, '_' or '-', "
            f"starting with a letter or digit; got {channel!r}; e.g. 'production' or 'canary-eu'"
        )
    return channel


def default_who() -> str:
    """``user@host`` of this process, recorded as who made a change."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError):  # no login name (some containers)
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def artifact_for(candidate: CandidateRecord, result: DeviceResult) -> str | None:
    """The sha256 of the model a promotion of ``candidate`` to ``result.device`` ships.

    The device's own artifact (quantized/compiled for it) if it has one,
    else the candidate's exported fp32 ONNX.
    """
    return result.artifact_sha256 or candidate.onnx_sha256


def promote(
    store: Store,
    candidate_id: str,
    *,
    device: str = HOST_DEVICE,
    channel: str = DEFAULT_CHANNEL,
    who: str | None = None,
    reason: str | None = None,
    decision: Mapping[str, Any] | None = None,
) -> PromotionRecord:
    """Make ``candidate_id``'s model for ``device`` the model of ``channel``.

    Checks, before anything changes: the candidate exists (NotFoundError),
    it ran ok on ``device`` (PromotionError), its artifact verifies
    (IntegrityError), and it is not already the channel's model
    (PromotionError). ``decision`` (e.g. the gate's verdict) is stored with
    the history row. Returns that row.
    """
    check_channel(channel)
    candidate = store.get_candidate(candidate_id)
    result = _promotable(candidate, device)
    sha = artifact_for(candidate, result)
    if sha is None:
        raise PromotionError(
            f"a promoted candidate must have a model artifact; candidate {candidate_id!r} "
            f"records none for device {device!r}; pick another candidate from "
            f"`shadow leaderboard --device {device} --status ok`"
        )
    store.artifacts.read_verified(sha)  # fail before the database changes
    record = PromotionRecord(
        history_id=0,
        channel=channel,
        action="promote",
        candidate_id=candidate_id,
        device=device,
        sha256=sha,
        previous_candidate_id=None,
        previous_sha256=None,
        at=utc_now(),
        who=who or default_who(),
        reason=reason,
        decision=dict(decision or {}),
    )
    try:
        with store.transaction() as conn:
            now = queries.channel_row(conn, channel, for_update=True)
            if now is not None:
                if now["candidate_id"] == candidate_id and now["sha256"] == sha:
                    raise PromotionError(
                        f"candidate {candidate_id!r} on {device!r} (history row "
                        f"{now['history_id']}) is already in {channel}; nothing to do"
                    )
                record = replace(
                    record, previous_candidate_id=now["candidate_id"], previous_sha256=now["sha256"]
                )
            record = queries.append(conn, record)
    except SAIntegrityError as exc:
        raise _concurrent_change(channel, exc) from None
    sync_channel(store, channel)
    return record


def rollback(
    store: Store,
    *,
    channel: str = DEFAULT_CHANNEL,
    who: str | None = None,
    reason: str | None = None,
) -> PromotionRecord:
    """Undo the newest live promotion of ``channel``; returns the rollback row.

    Raises NotFoundError if the channel was never promoted and
    PromotionError if that promotion has no earlier model to return to (a
    channel always keeps a loadable model).
    """
    check_channel(channel)
    try:
        with store.transaction() as conn:
            now = queries.channel_row(conn, channel, for_update=True)
            if now is None:
                raise NotFoundError(
                    f"channel {channel!r} has never been promoted in the store at {store.url}; "
                    "there is nothing to roll back; promote with `shadow promote CANDIDATE_ID`"
                )
            undone = queries.newest_live_promote(conn, channel)
            if undone is None or undone.previous_candidate_id is None:
                raise PromotionError(
                    f"nothing earlier to roll back to: {channel} serves candidate "
                    f"{now['candidate_id']!r}, its first promotion; a channel always keeps a "
                    "loadable model, so promote another candidate instead"
                )
            restored = queries.row_before(conn, channel, undone.history_id)
            if restored is None or (restored.candidate_id, restored.sha256) != (
                undone.previous_candidate_id,
                undone.previous_sha256,
            ):
                raise StoreError(
                    f"the history of channel {channel!r} is inconsistent around row "
                    f"{undone.history_id} in the store at {store.url}; run `shadow doctor`"
                )
            store.artifacts.read_verified(restored.sha256)  # still loadable?
            record = PromotionRecord(
                history_id=0,
                channel=channel,
                action="rollback",
                candidate_id=restored.candidate_id,
                device=restored.device,
                sha256=restored.sha256,
                previous_candidate_id=now["candidate_id"],
                previous_sha256=now["sha256"],
                at=utc_now(),
                who=who or default_who(),
                reason=reason,
                reverts_id=undone.history_id,
            )
            record = queries.append(conn, record)
    except SAIntegrityError as exc:
        raise _concurrent_change(channel, exc) from None
    sync_channel(store, channel)
    return record


def history(store: Store, *, channel: str | None = None) -> list[PromotionRecord]:
    """Every promote/rollback row (of ``channel`` if given), newest first."""
    if channel is not None:
        check_channel(channel)
    with store.snapshot() as conn:
        return queries.list_promotions(conn, channel)


def current(store: Store, channel: str = DEFAULT_CHANNEL) -> PromotionRecord | None:
    """The history row that set ``channel``'s current model, None if never promoted."""
    check_channel(channel)
    with store.snapshot() as conn:
        now = queries.channel_row(conn, channel)
        return None if now is None else queries.get_promotion(conn, int(now["history_id"]))


def sync_channel(store: Store, channel: str = DEFAULT_CHANNEL) -> PromotionRecord:
    """Make ``channels/<channel>`` on disk match the database; returns the current row.

    Idempotent: does nothing when the files already match. Raises
    NotFoundError if the channel was never promoted.
    """
    record = current(store, channel)
    if record is None:
        raise NotFoundError(
            f"channel {channel!r} has never been promoted in the store at {store.url}; "
            "promote with `shadow promote CANDIDATE_ID`"
        )
    candidate = store.get_candidate(record.candidate_id)
    result = candidate.device(record.device)
    if result is None:
        raise StoreError(
            f"channel {channel!r} points at candidate {record.candidate_id!r} on device "
            f"{record.device!r}, which has no result for it in the store at {store.url}; "
            "run `shadow doctor`"
        )
    materialize(store.home, store.artifacts, record, candidate, result)
    return record


def _promotable(candidate: CandidateRecord, device: str) -> DeviceResult:
    """``candidate``'s result on ``device`` if it may be promoted, else PromotionError."""
    cid = candidate.candidate_id
    hint = f"pick another candidate from `shadow leaderboard --device {device} --status ok`"
    result = candidate.device(device)
    if result is None:
        ran = ", ".join(d.device for d in candidate.devices) or "none"
        raise PromotionError(
            f"a candidate is promoted for a device it ran on; candidate {cid!r} has no "
            f"result for device {device!r} (devices: {ran}); pass one of those with "
            f"--device, or {hint}"
        )
    if candidate.status != "ok" or result.status != "ok":
        error = result.error or candidate.error or "no error recorded"
        raise PromotionError(
            f"only a candidate that ran ok can be promoted; candidate {cid!r} has status "
            f"'failed' on device {device!r} ({error}); {hint}"
        )
    return result


def _concurrent_change(channel: str, exc: SAIntegrityError) -> PromotionError:
    return PromotionError(
        f"channel {channel!r} was changed by another process at the same time "
        f"({exc.orig}); nothing was changed by this command; check `shadow history` and retry"
    )
