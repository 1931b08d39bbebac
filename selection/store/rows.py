"""Conversion between the records in ``selection.records`` and table rows.

The only place that knows how a Python value is spelled in the database (see
``schema.py`` for the conventions). Encoders validate what a producer hands
in (statuses, timezone-aware datetimes, JSON-able values) and raise
ConfigError; decoders trust the database.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, get_args

from selection.errors import ConfigError
from selection.records import (
    CandidateRecord,
    CandidateStatus,
    DeviceResult,
    EventKind,
    EventRecord,
    HoldoutRecord,
    PromotionAction,
    PromotionRecord,
    SliceRecord,
    SweepRecord,
    SweepStatus,
)

#: A database row as SQLAlchemy returns it: its RowMapping is keyed by name or by column.
Row = Mapping[Any, Any]

CANDIDATE_STATUSES: tuple[str, ...] = get_args(CandidateStatus)
SWEEP_STATUSES: tuple[str, ...] = get_args(SweepStatus)
PROMOTION_ACTIONS: tuple[str, ...] = get_args(PromotionAction)
EVENT_KINDS: tuple[str, ...] = get_args(EventKind)


def encode_dt(value: datetime) -> str:
    """A timezone-aware datetime as fixed-width ISO-8601 UTC text."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ConfigError(
            f"datetimes stored in the shadow store must be timezone-aware; got naive {value!r}; "
            "build it with `selection.records.utc_now()` or `datetime.now(timezone.utc)`"
        )
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def decode_dt(text: str) -> datetime:
    """Inverse of :func:`encode_dt` (always returns an aware UTC datetime)."""
    value = datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def encode_json(value: Any, *, what: str) -> str:
    """``value`` as canonical JSON text; ``what`` names it in the error."""
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"{what} must hold JSON values only (str, int, float, bool, None, list, dict); "
            f"{exc}; convert numpy scalars and other objects with int()/float()/str() first"
        ) from None


def decode_json(text: str | None) -> Any:
    """Inverse of :func:`encode_json`; NULL decodes to an empty dict."""
    return {} if text is None else json.loads(text)


def check_choice(value: str, choices: tuple[str, ...], what: str) -> str:
    """Return ``value`` if it is one of ``choices``, else raise ConfigError."""
    if value not in choices:
        raise ConfigError(f"{what} must be one of {', '.join(choices)}; got {value!r}")
    return value


def _opt_float(value: Any) -> float | None:
    # NaN is stored as NULL by SQLite but as NaN by PostgreSQL; map it to
    # NULL everywhere so both backends rank the same way.
    if value is None:
        return None
    number = float(value)
    return None if math.isnan(number) else number


def _opt_dt(text: str | None) -> datetime | None:
    return None if text is None else decode_dt(text)


# -- sweeps and slices ------------------------------------------------------


def sweep_to_row(sweep: SweepRecord) -> dict[str, Any]:
    """The ``sweeps`` row of ``sweep``."""
    check_choice(sweep.status, SWEEP_STATUSES, f"sweep {sweep.sweep_id!r} status")
    return {
        "sweep_id": sweep.sweep_id,
        "name": sweep.name,
        "dataset": sweep.dataset,
        "dataset_fingerprint": sweep.dataset_fingerprint,
        "holdout_start": sweep.holdout.start,
        "holdout_stop": sweep.holdout.stop,
        "holdout_rows_sha256": sweep.holdout.rows_sha256,
        "holdout_data_sha256": sweep.holdout.data_sha256,
        "config": encode_json(sweep.config, what=f"sweep {sweep.sweep_id!r} config"),
        "n_planned": sweep.n_planned,
        "created_at": encode_dt(sweep.created_at),
        "status": sweep.status,
        "finished_at": None if sweep.finished_at is None else encode_dt(sweep.finished_at),
        "devices": encode_json(check_devices(sweep), what=f"sweep {sweep.sweep_id!r} devices"),
    }


def check_devices(sweep: SweepRecord) -> list[str]:
    """``sweep.devices`` as a list, or ConfigError unless it is a sequence of distinct names."""
    devices = sweep.devices
    if (isinstance(devices, (str, bytes)) or not isinstance(devices, (tuple, list))
            or not all(isinstance(d, str) and d for d in devices) or len(set(devices)) != len(devices)):
        raise ConfigError(
            f"sweep {sweep.sweep_id!r} devices must be a tuple of distinct device names, in the "
            f"order the sweep runs them, such as ('host-cpu',); got {devices!r}"
        )
    return list(devices)


def row_to_sweep(row: Row) -> SweepRecord:
    """The SweepRecord of a ``sweeps`` row."""
    return SweepRecord(
        sweep_id=row["sweep_id"],
        name=row["name"],
        dataset=row["dataset"],
        dataset_fingerprint=row["dataset_fingerprint"],
        holdout=HoldoutRecord(
            start=int(row["holdout_start"]),
            stop=int(row["holdout_stop"]),
            rows_sha256=row["holdout_rows_sha256"],
            data_sha256=row["holdout_data_sha256"],
        ),
        config=decode_json(row["config"]),
        n_planned=int(row["n_planned"]),
        created_at=decode_dt(row["created_at"]),
        status=row["status"],
        finished_at=_opt_dt(row["finished_at"]),
        devices=tuple(json.loads(row["devices"])) if row["devices"] is not None else (),
    )


def slice_to_row(record: SliceRecord) -> dict[str, Any]:
    """The ``slices`` row of ``record``."""
    return {
        "sweep_id": record.sweep_id,
        "slice_id": record.slice_id,
        "strategy": record.strategy,
        "params": encode_json(record.params, what=f"slice {record.slice_id!r} params"),
        "n_rows": record.n_rows,
        "rows_sha256": record.rows_sha256,
    }


def row_to_slice(row: Row) -> SliceRecord:
    """The SliceRecord of a ``slices`` row."""
    return SliceRecord(
        sweep_id=row["sweep_id"],
        slice_id=row["slice_id"],
        strategy=row["strategy"],
        params=decode_json(row["params"]),
        n_rows=int(row["n_rows"]),
        rows_sha256=row["rows_sha256"],
    )


# -- candidates and their device results ------------------------------------


def candidate_to_row(candidate: CandidateRecord) -> dict[str, Any]:
    """The ``candidates`` row of ``candidate`` (devices go to :func:`device_rows`)."""
    cid = candidate.candidate_id
    check_choice(candidate.status, CANDIDATE_STATUSES, f"candidate {cid!r} status")
    recorded = lineage_refit_of(candidate.lineage)
    if recorded is not None and recorded != candidate.refit_of:
        # Before schema version 3 the lineage alone said "refit": a record that
        # still says so only there would be ranked on its in-sample scores.
        raise ConfigError(
            f"candidate {cid!r} has lineage['refit']['of'] = {recorded!r} but refit_of = "
            f"{candidate.refit_of!r}; a refit must say so in CandidateRecord.refit_of (that is "
            f"what keeps it off the leaderboard): build it with refit_of={recorded!r}"
        )
    if candidate.refit_of is not None and (not isinstance(candidate.refit_of, str)
                                           or candidate.refit_of in ("", cid)):
        raise ConfigError(
            f"candidate {cid!r} refit_of must be the id of another candidate or None; "
            f"got {candidate.refit_of!r}"
        )
    return {
        "candidate_id": cid,
        "sweep_id": candidate.sweep_id,
        "slice_id": candidate.slice_id,
        "family": candidate.family,
        "params": encode_json(candidate.params, what=f"candidate {cid!r} params"),
        "seed": int(candidate.seed),
        "status": candidate.status,
        "error": candidate.error,
        "train_seconds": _opt_float(candidate.train_seconds),
        "onnx_sha256": candidate.onnx_sha256,
        "lineage": encode_json(candidate.lineage, what=f"candidate {cid!r} lineage"),
        "created_at": encode_dt(candidate.created_at),
        "refit_of": candidate.refit_of,
    }


def lineage_refit_of(lineage: Any) -> str | None:
    """The parent id a refit's lineage records (``lineage["refit"]["of"]``), None if none."""
    refit = lineage.get("refit") if isinstance(lineage, dict) else None
    parent = refit.get("of") if isinstance(refit, dict) else None
    return str(parent) if parent else None


def device_rows(candidate: CandidateRecord) -> list[dict[str, Any]]:
    """The ``device_metrics`` rows of ``candidate``, one per device."""
    cid = candidate.candidate_id
    seen: set[str] = set()
    rows = []
    for result in candidate.devices:
        if result.device in seen:
            raise ConfigError(
                f"a candidate has at most one result per device; candidate {cid!r} has "
                f"two for {result.device!r}; merge them into one DeviceResult"
            )
        seen.add(result.device)
        check_choice(result.status, CANDIDATE_STATUSES, f"candidate {cid!r} {result.device} status")
        rows.append(
            {
                "candidate_id": cid,
                "device": result.device,
                "status": result.status,
                "error": result.error,
                "accuracy": _opt_float(result.accuracy),
                "latency_ms": _opt_float(result.latency_ms),
                "host_latency_p50_ms": _opt_float(result.host_latency_p50_ms),
                "host_latency_p99_ms": _opt_float(result.host_latency_p99_ms),
                "size_bytes": None if result.size_bytes is None else int(result.size_bytes),
                "artifact_sha256": result.artifact_sha256,
                "emulator": result.emulator,
                "predictions_sha256": result.predictions_sha256,
                "extra": encode_json(result.extra, what=f"candidate {cid!r} {result.device} extra"),
                # The candidate's sweep, a refit's too: ranking queries leave
                # refits out by candidates.refit_of, not by this column.
                "sweep_id": candidate.sweep_id,
                "candidate_ok": candidate.status == "ok",
                **extra_columns(result.extra),
            }
        )
    return rows


def _opt_int(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _opt_bool(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def extra_columns(extra: Mapping[str, Any]) -> dict[str, Any]:
    """The schema-v2 columns derived from a device result's ``extra``.

    Keys are the ones edge devices write; a missing or mistyped key becomes
    NULL (host rows have none), which ranking reads as "no fallback, within
    budget, eligible". The JSON in ``extra`` stays the record of truth.
    """
    reason = extra.get("ineligible_reason")
    return {
        "has_fallback": _opt_bool(extra.get("has_fallback")),
        "peak_activation_bytes": _opt_int(extra.get("peak_activation_bytes")),
        "memory_budget_bytes": _opt_int(extra.get("memory_budget_bytes")),
        "device_eligible": _opt_bool(extra.get("eligible")),
        "ineligible_reason": reason if isinstance(reason, str) else None,
    }


def row_to_device(row: Row) -> DeviceResult:
    """The DeviceResult of a ``device_metrics`` row."""
    return DeviceResult(
        device=row["device"],
        status=row["status"],
        error=row["error"],
        accuracy=_opt_float(row["accuracy"]),
        latency_ms=_opt_float(row["latency_ms"]),
        host_latency_p50_ms=_opt_float(row["host_latency_p50_ms"]),
        host_latency_p99_ms=_opt_float(row["host_latency_p99_ms"]),
        size_bytes=None if row["size_bytes"] is None else int(row["size_bytes"]),
        artifact_sha256=row["artifact_sha256"],
        emulator=row["emulator"],
        predictions_sha256=row["predictions_sha256"],
        extra=decode_json(row["extra"]),
    )


def device_order(device: str, host_device: str) -> tuple[bool, str]:
    """Sort key for a candidate's devices: the host first, then by name.

    SQL keeps no insertion order, so records read back list devices this way.
    """
    return (device != host_device, device)


def row_to_candidate(row: Row, devices: Iterable[DeviceResult]) -> CandidateRecord:
    """The CandidateRecord of a ``candidates`` row with its device results."""
    return CandidateRecord(
        candidate_id=row["candidate_id"],
        sweep_id=row["sweep_id"],
        slice_id=row["slice_id"],
        family=row["family"],
        params=decode_json(row["params"]),
        seed=int(row["seed"]),
        status=row["status"],
        error=row["error"],
        train_seconds=_opt_float(row["train_seconds"]),
        onnx_sha256=row["onnx_sha256"],
        lineage=decode_json(row["lineage"]),
        devices=tuple(devices),
        created_at=decode_dt(row["created_at"]),
        refit_of=row["refit_of"],
    )


# -- promotion history --------------------------------------------------------


def promotion_to_row(record: PromotionRecord) -> dict[str, Any]:
    """The ``promotions`` row of ``record``, without ``history_id`` (the database assigns it)."""
    check_choice(record.action, PROMOTION_ACTIONS, "promotion action")
    return {
        "channel": record.channel,
        "action": record.action,
        "candidate_id": record.candidate_id,
        "device": record.device,
        "sha256": record.sha256,
        "previous_candidate_id": record.previous_candidate_id,
        "previous_sha256": record.previous_sha256,
        "at": encode_dt(record.at),
        "who": record.who,
        "reason": record.reason,
        "reverts_id": record.reverts_id,
        "decision": encode_json(record.decision, what="promotion decision"),
    }


def row_to_promotion(row: Row) -> PromotionRecord:
    """The PromotionRecord of a ``promotions`` row."""
    return PromotionRecord(
        history_id=int(row["history_id"]),
        channel=row["channel"],
        action=row["action"],
        candidate_id=row["candidate_id"],
        device=row["device"],
        sha256=row["sha256"],
        previous_candidate_id=row["previous_candidate_id"],
        previous_sha256=row["previous_sha256"],
        at=decode_dt(row["at"]),
        who=row["who"],
        reason=row["reason"],
        reverts_id=None if row["reverts_id"] is None else int(row["reverts_id"]),
        decision=decode_json(row["decision"]),
    )


# -- the event log --------------------------------------------------------------

#: Column widths the event row's strings must fit (schema.events).
_CHANNEL_MAX, _ID_MAX = 64, 200


def _check_text(value: Any, what: str, *, limit: int | None, optional: bool) -> None:
    if value is None and optional:
        return
    if not isinstance(value, str) or not value.strip() or (limit is not None and len(value) > limit):
        size = f" of at most {limit} characters" if limit is not None else ""
        none = " or None" if optional else ""
        raise ConfigError(f"event {what} must be a non-empty string{size}{none}; got {value!r}")


def event_to_row(record: EventRecord) -> dict[str, Any]:
    """The ``events`` row of ``record``, without ``event_id`` (the database assigns it).

    A record that already carries an ``event_id`` is refused: it was stored
    once, and appending it again would log the same event twice.
    """
    if record.event_id is not None:
        raise ConfigError(
            f"an event's event_id is assigned by the store; this one already has "
            f"{record.event_id!r} (it was stored); append a new EventRecord built with event_id=None"
        )
    check_choice(record.kind, EVENT_KINDS, "event kind")
    # The channel's naming rule is selection.channels' (check_channel); the log,
    # below it, only keeps what the column can hold.
    _check_text(record.channel, "channel", limit=_CHANNEL_MAX, optional=False)
    _check_text(record.reason, "reason (why it happened, for a person)", limit=None, optional=False)
    _check_text(record.data_version, "data_version", limit=None, optional=True)
    _check_text(record.sweep_id, "sweep_id", limit=_ID_MAX, optional=True)
    _check_text(record.candidate_id, "candidate_id", limit=_ID_MAX, optional=True)
    history_id = record.history_id
    if history_id is not None and (isinstance(history_id, bool) or not isinstance(history_id, int)
                                   or not 1 <= history_id < 2**31):
        raise ConfigError(
            f"event history_id must be the id of a promotions row (an int >= 1) or None; got {history_id!r}"
        )
    if not isinstance(record.evidence, dict):
        raise ConfigError(
            f"event evidence must be a dict of JSON values, such as {{'rows_since_sweep': 1200}}; "
            f"got {type(record.evidence).__name__} {record.evidence!r:.80}"
        )
    try:
        # No NaN or infinity: `shadow events --format json` must stay valid JSON.
        evidence = json.dumps(record.evidence, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"event evidence must hold JSON values only (str, int, finite float, bool, None, list, "
            f"dict); {exc}; convert numpy scalars with int()/float(), and store NaN as None"
        ) from None
    return {
        "channel": record.channel,
        "kind": record.kind,
        "at": encode_dt(record.at),
        "data_version": record.data_version,
        "sweep_id": record.sweep_id,
        "candidate_id": record.candidate_id,
        "history_id": history_id,
        "reason": record.reason,
        "evidence": evidence,
    }


def row_to_event(row: Row) -> EventRecord:
    """The EventRecord of an ``events`` row."""
    return EventRecord(
        event_id=int(row["event_id"]),
        channel=row["channel"],
        kind=row["kind"],
        at=decode_dt(row["at"]),
        data_version=row["data_version"],
        sweep_id=row["sweep_id"],
        candidate_id=row["candidate_id"],
        history_id=None if row["history_id"] is None else int(row["history_id"]),
        reason=row["reason"],
        evidence=decode_json(row["evidence"]),
    )
