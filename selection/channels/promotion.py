"""Promotion, rollback and the audit trail of channels.

A channel (``production`` by default) points at one candidate's model on one
device. A change, under the channel's lock (``channels.channel_lock``: one
change at a time, a second one fails at once with a clear message):

1. verify the artifact against its sha256, refuse a model with external data
   (it would make its loader read other files) and a malformed signature, and
   check the channel's files can be written (``files.check_channel_paths``: no
   plain folder where the link goes, writable folders); nothing changes if any
   is bad;
2. one transaction appends the history row, moves the channel row and builds
   the new version directory (invisible to readers until step 3); any error
   rolls all of it back;
3. after the commit, swap the channel symlink (one atomic rename).

A channel whose candidates' sweeps are tracked in MLflow (``[mlflow]``, or
``$MLFLOW_TRACKING_URI``) also moves the registered model's ``champion`` alias
(:mod:`selection.channels.champion_alias`). Promote registers the version
before step 1 (an unreachable registry refuses the change, nothing changed);
rollback never waits on the registry (it is the way out of a bad model): both
point the alias once the change is made and the lock released, and a registry
that fails then leaves an ``error`` event for ``shadow mlflow sync``.

The database is the source of truth. A SIGKILL before the commit changes
nothing a reader sees (at most an unused version directory is left); one
between the commit and the one-rename swap leaves the old model serving while
the history says new: ``shadow doctor`` reports it and ``--repair`` (or the
next promote/rollback of that channel) makes the files follow the database.

Rollback is an undo stack. A *live* promote is one no rollback row reverts;
a rollback reverts the newest live promote, restoring the model that promote
replaced. Rolling back twice therefore goes two promotions back, and a new
promote after a rollback is undone before older ones.
"""

from __future__ import annotations

import getpass
import socket
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError as SAIntegrityError

from selection.channels import champion_alias
from selection.channels.files import (
    channel_lock,
    channel_target,
    check_channel_paths,
    point_channel,
    prepare_version,
    read_verified_model,
    version_name,
)
from selection.channels.names import check_channel  # noqa: F401  (re-exported: its old home)
from selection.errors import GateVerdict, NotFoundError, PromotionError, StoreError
from selection.records import (
    DEFAULT_CHANNEL,
    HOST_DEVICE,
    CandidateRecord,
    DeviceResult,
    EventRecord,
    PromotionRecord,
    utc_now,
)
from selection.signature import ModelSignature, SignatureError
from selection.signing import KeyPaths, load_signing_key
from selection.store import Store
from selection.store import channel_rows as queries


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


def verify_promotion(
    store: Store, candidate_id: str, *, device: str = HOST_DEVICE, channel: str = DEFAULT_CHANNEL,
) -> tuple[CandidateRecord, DeviceResult, str]:
    """Everything :func:`promote` checks before it changes anything; raises what promote would.

    Returns the candidate, its result on ``device`` and the sha256 of the
    verified model that would ship. ``shadow promote --dry-run`` calls this
    too, so a dry run refuses exactly what the real run refuses.
    """
    check_channel(channel)
    candidate = store.get_candidate(candidate_id)
    result = _promotable(candidate, device)
    # The files the change writes after its commit: their preconditions hold first.
    check_channel_paths(store.home, channel)
    # The version folder is signed with the home's key; a key that exists but cannot
    # be used (readable by others, malformed) refuses here, not inside the transaction.
    keys = KeyPaths.of(store.home.root)
    if keys.private.exists():
        load_signing_key(keys, heal=False)
    sha = artifact_for(candidate, result)
    if sha is None:
        raise PromotionError(
            f"a promoted candidate must have a model artifact; candidate {candidate_id!r} "
            f"records none for device {device!r}; pick another candidate from "
            f"`shadow leaderboard --device {device} --status ok`"
        )
    # Fail before anything is locked or changed: bytes, external data, signature.
    read_verified_model(store.artifacts, sha)
    try:
        ModelSignature.from_lineage(candidate.lineage)
    except SignatureError as exc:
        raise SignatureError(
            f"candidate {candidate_id!r} cannot be promoted: {exc}; the edge app could not "
            "call it; store the candidate again with a valid signature"
        ) from None
    return candidate, result, sha


def promote(
    store: Store,
    candidate_id: str,
    *,
    device: str = HOST_DEVICE,
    channel: str = DEFAULT_CHANNEL,
    who: str | None = None,
    reason: str | None = None,
    decision: GateVerdict | None = None,
    event: Callable[[PromotionRecord], EventRecord] | None = None,
) -> PromotionRecord:
    """Make ``candidate_id``'s model for ``device`` the model of ``channel``.

    Checks, before anything changes: the candidate exists (NotFoundError),
    it ran ok on ``device`` (PromotionError), its artifact verifies
    (IntegrityError), and it is not already the channel's model
    (PromotionError). ``decision``, the gate's ``GateDecision``, is stored
    with the history row as its ``to_json()`` (``{}`` without one: a
    promotion that did not go through the gate). Returns that row.

    ``event``, if given, is called with the new history row (its
    ``history_id`` assigned) and returns the event that explains it (e.g. a
    ``promotion`` event naming that row); the event is appended in the same
    transaction, so the row and its event commit together or not at all.
    """
    candidate, result, sha = verify_promotion(store, candidate_id, device=device, channel=channel)
    record = _new_record(channel, "promote", candidate_id, device, sha, who, reason)
    record = replace(record, decision={} if decision is None else decision.to_json())
    serving = current(store, channel)
    # Registry first (before the lock: it talks to a server): unreachable refuses, nothing changed.
    alias = None
    if serving is None or (serving.candidate_id, serving.sha256) != (candidate_id, sha):
        alias = champion_alias.prepare(store, channel, candidate, device, sha,
                                       outgoing=serving.candidate_id if serving else None)
    with channel_lock(store.home, channel):
        try:
            with store.transaction() as conn:
                now = queries.channel_row(conn, channel, for_update=True)
                if now is not None and (now["candidate_id"], now["sha256"]) == (candidate_id, sha):
                    already = int(now["history_id"])
                else:
                    _check_judged_champion(record.decision, now, channel)
                    already = None
                    if now is not None:
                        record = replace(
                            record,
                            previous_candidate_id=now["candidate_id"],
                            previous_sha256=now["sha256"],
                        )
                    record = queries.append(conn, record)
                    if event is not None:
                        store.append_event(event(record), conn)
                    version = prepare_version(store.home, store.artifacts, record, candidate, result)
        except SAIntegrityError as exc:
            raise _concurrent_change(channel, exc) from None
        if already is not None:
            healed = _sync_unlocked(store, channel)[1]
            raise PromotionError(
                f"candidate {candidate_id!r} on {device!r} (history row {already}) is already "
                f"in {channel}; nothing to do"
                + ("; its files lagged behind the database (an interrupted change) and "
                   "were brought up to date" if healed else "")
            )
        point_channel(store.home, channel, version)
    if alias is not None:  # after the lock: a slow registry must not hold the channel
        alias.apply(store, record)
    return record


def _check_judged_champion(decision: dict[str, Any], now: Any, channel: str) -> None:
    """A gate decision holds only against the champion it judged: refuse if the channel moved.

    The gate judges outside the channel lock (scoring takes seconds, a live join longer), so
    another promotion can land in between; without this check the challenger would replace a
    model it was never compared with.
    """
    if not decision or "champion" not in decision:
        return  # no gate decision (a plain promotion)
    judged = decision.get("champion") or {}
    judged_row = judged.get("history_id")
    current_row = int(now["history_id"]) if now is not None else None
    if judged_row != current_row:
        before = f"history row {judged_row} ({judged.get('candidate_id')})" if judged else "none"
        after = (f"history row {current_row} ({now['candidate_id']})" if now is not None
                 else "none")
        raise PromotionError(
            f"channel {channel!r} changed since the gate judged this challenger: the gate "
            f"compared it with champion {before}, the channel now serves {after}; nothing "
            "changed; run the gate again (e.g. `shadow promote CANDIDATE --dry-run`)")


def rollback(
    store: Store,
    *,
    channel: str = DEFAULT_CHANNEL,
    who: str | None = None,
    reason: str | None = None,
    event: Callable[[PromotionRecord], EventRecord] | None = None,
) -> PromotionRecord:
    """Undo the newest live promotion of ``channel``; returns the rollback row.

    Raises NotFoundError if the channel was never promoted and
    PromotionError if that promotion has no earlier model to return to (a
    channel always keeps a loadable model). ``event``, as for :func:`promote`:
    appended in the rollback's own transaction (a staged rollout's rollback).
    """
    check_channel(channel)
    check_channel_paths(store.home, channel)  # before the lock and the transaction, as promote
    with channel_lock(store.home, channel):
        try:
            with store.transaction() as conn:
                record = _rollback_row(store, conn, channel, who, reason)
                candidate = store.get_candidate(record.candidate_id)
                result = _device_result(store, record, candidate)
                record = queries.append(conn, record)
                if event is not None:
                    store.append_event(event(record), conn)
                # Verifies the restored artifact: a bad one rolls the row back.
                version = prepare_version(store.home, store.artifacts, record, candidate, result)
        except SAIntegrityError as exc:
            raise _concurrent_change(channel, exc) from None
        point_channel(store.home, channel, version)
    # The registry follows once the model is back, never before: a registry that is down is an
    # error event for `shadow mlflow sync`, not a reason to keep serving the bad model.
    champion_alias.follow(store, record)
    return record


def _rollback_row(
    store: Store, conn: Connection, channel: str, who: str | None, reason: str | None,
    *, lock: bool = True,
) -> PromotionRecord:
    """The rollback row to append (not yet stored): it restores the row before the undone one."""
    now = queries.channel_row(conn, channel, for_update=lock)
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
    record = _new_record(
        channel, "rollback", restored.candidate_id, restored.device, restored.sha256, who, reason
    )
    record = replace(
        record,
        previous_candidate_id=now["candidate_id"],
        previous_sha256=now["sha256"],
        reverts_id=undone.history_id,
    )
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


def list_channels(store: Store) -> list[PromotionRecord]:
    """The history row that set each channel's current model, by channel name."""
    with store.snapshot() as conn:
        rows = queries.list_channels(conn)
        found = (queries.get_promotion(conn, int(row["history_id"])) for row in rows)
        return [record for record in found if record is not None]


def in_sync(store: Store, record: PromotionRecord) -> bool:
    """Whether ``channels/<channel>`` points at the version of ``record`` (link only, cheap)."""
    expected = version_name(record.channel, record.history_id, record.sha256)
    return channel_target(store.home, record.channel) == expected


def sync_channel(store: Store, channel: str = DEFAULT_CHANNEL) -> PromotionRecord:
    """Make ``channels/<channel>`` on disk match the database; returns the current row.

    Idempotent: rewrites only what differs (a lagging link, a damaged or
    missing file in the current version). Takes the channel lock
    (PromotionError while another change runs). Raises NotFoundError if the
    channel was never promoted, IntegrityError if its artifact is bad.
    """
    check_channel(channel)
    with channel_lock(store.home, channel):
        return _sync_unlocked(store, channel)[0]


def _sync_unlocked(store: Store, channel: str) -> tuple[PromotionRecord, bool]:
    """:func:`sync_channel` without the lock; also says whether the link had to move."""
    record = current(store, channel)
    if record is None:
        raise NotFoundError(
            f"channel {channel!r} has never been promoted in the store at {store.url}; "
            "promote with `shadow promote CANDIDATE_ID`"
        )
    lagged = not in_sync(store, record)
    candidate = store.get_candidate(record.candidate_id)
    result = _device_result(store, record, candidate)
    version = prepare_version(store.home, store.artifacts, record, candidate, result)
    point_channel(store.home, channel, version)
    return record, lagged


def _device_result(
    store: Store, record: PromotionRecord, candidate: CandidateRecord
) -> DeviceResult:
    """The device result a history row names (StoreError if the store lost it)."""
    result = candidate.device(record.device)
    if result is None:
        raise StoreError(
            f"channel {record.channel!r} history row {record.history_id} names candidate "
            f"{record.candidate_id!r} on device {record.device!r}, which has no result for "
            f"it in the store at {store.url}; run `shadow doctor`"
        )
    return result


def _new_record(
    channel: str,
    action: str,
    candidate_id: str,
    device: str,
    sha: str,
    who: str | None,
    reason: str | None,
) -> PromotionRecord:
    """A history row to append (``history_id`` 0 until the database assigns one)."""
    return PromotionRecord(
        history_id=0,
        channel=channel,
        action=action,  # type: ignore[arg-type]
        candidate_id=candidate_id,
        device=device,
        sha256=sha,
        previous_candidate_id=None,
        previous_sha256=None,
        at=utc_now(),
        who=who or default_who(),
        reason=reason,
    )


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
