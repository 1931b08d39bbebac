"""The leaderboard: one row per candidate x device, ranked, as a pandas frame.

This is the table behind `shadow leaderboard` and `shadow promote --best`;
rendering it (table, CSV, JSON) is the CLI's job.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from selection.errors import ConfigError, NotFoundError
from selection.promotion import artifact_for
from selection.ranking import rank_rows
from selection.records import HOST_DEVICE, CandidateRecord, DeviceResult, SweepRecord
from selection.store import Store
from selection.store.codec import CANDIDATE_STATUSES

#: The leaderboard's columns, in order.
COLUMNS = (
    "rank",
    "candidate_id",
    "sweep_id",
    "slice_id",
    "family",
    "params",
    "device",
    "status",
    "accuracy",
    "latency_ms",
    "size_bytes",
    "host_latency_p50_ms",
    "host_latency_p99_ms",
    "emulator",
    "seed",
    "train_seconds",
    "error",
    "artifact_sha256",
    "created_at",
)
_DTYPES: dict[str, Any] = {
    "rank": "Int64",
    "accuracy": "float64",
    "latency_ms": "float64",
    "size_bytes": "Int64",
    "host_latency_p50_ms": "float64",
    "host_latency_p99_ms": "float64",
    "seed": "Int64",
    "train_seconds": "float64",
    "created_at": "datetime64[us, UTC]",
}


def leaderboard(
    store: Store,
    *,
    sweep: str = "latest",
    device: str | None = None,
    status: str | None = None,
) -> pd.DataFrame:
    """The ranked rows of ``sweep`` ("latest", "all" or a sweep id).

    ``device`` and ``status`` ("ok"/"failed") filter the rows; ranks are
    computed before filtering, per (sweep, device), by
    :func:`selection.ranking.rank_rows`. Rows are sorted newest sweep first,
    then by device, then by rank (unranked last). An empty store gives an
    empty frame with the same columns.
    """
    if status is not None and status not in CANDIDATE_STATUSES:
        raise ConfigError(
            f"--status must be one of {', '.join(CANDIDATE_STATUSES)}; got {status!r}"
        )
    sweeps = _select_sweeps(store, sweep)
    rows: list[dict[str, Any]] = []
    for order, record in enumerate(sweeps):
        for candidate in store.list_candidates(record.sweep_id):
            rows.extend(_rows(candidate, record, order))
    if not rows:
        return _empty()
    frame = pd.DataFrame(rows)
    if device is not None and device not in set(frame["device"]):
        known = ", ".join(sorted(set(frame["device"])))
        raise NotFoundError(
            f"no leaderboard row for device {device!r} in the selected sweeps; "
            f"devices present: {known}; pick one of those with --device"
        )
    frame["rank"] = rank_rows(frame)
    if device is not None:
        frame = frame[frame["device"] == device]
    if status is not None:
        frame = frame[frame["status"] == status]
    frame = frame.sort_values(
        ["_sweep_order", "device", "rank", "candidate_id"],
        na_position="last",
        kind="mergesort",
    )
    return _typed(frame.loc[:, list(COLUMNS)].reset_index(drop=True))


def best_candidate(store: Store, *, sweep: str = "latest", device: str = HOST_DEVICE) -> str:
    """The id of the rank-1 candidate of one sweep on ``device``.

    Raises NotFoundError when no candidate of that sweep ran ok there, and
    ConfigError for ``sweep="all"`` (sweeps use different holdouts, so their
    scores do not compare).
    """
    if sweep == "all":
        raise ConfigError(
            "the best candidate is chosen within one sweep (each sweep scores on its own "
            "holdout); got sweep='all'; pass 'latest' or a sweep id"
        )
    frame = leaderboard(store, sweep=sweep, device=device)
    if frame.empty:
        raise NotFoundError(
            f"no candidates in sweep {sweep!r} of the store at {store.url}; "
            "run `shadow sweep run CONFIG` first"
        )
    best = frame[frame["rank"] == 1]
    if best.empty:
        sweep_id = frame["sweep_id"].iloc[0]
        raise NotFoundError(
            f"no candidate of sweep {sweep_id!r} ran ok on device {device!r} "
            f"({len(frame)} failed); see the errors with "
            f"`shadow leaderboard --sweep {sweep_id} --device {device}`, fix them and "
            f"`shadow sweep run CONFIG --resume {sweep_id}`, or choose another --device"
        )
    return str(best["candidate_id"].iloc[0])


def _select_sweeps(store: Store, sweep: str) -> list[SweepRecord]:
    """The sweeps named by ``sweep``, newest first."""
    if sweep == "all":
        return store.list_sweeps()
    if sweep == "latest":
        latest = store.latest_sweep_id()
        return [] if latest is None else [store.get_sweep(latest)]
    return [store.get_sweep(sweep)]  # NotFoundError says how to list sweeps


def _first_device(sweep: SweepRecord) -> str:
    """Where to list a candidate that failed before any device ran.

    The first entry of the sweep config's ``devices`` list when it names one,
    else the host device every candidate is evaluated on.
    """
    # Producers lay configs out their own way: shadow nests it under [sweep].
    section = sweep.config.get("sweep")
    devices = sweep.config.get("devices")
    if devices is None and isinstance(section, dict):
        devices = section.get("devices")
    if isinstance(devices, list) and devices:
        first = devices[0]
        if isinstance(first, str):
            return first
        if isinstance(first, dict) and isinstance(first.get("name"), str):
            return str(first["name"])
    return HOST_DEVICE


def _rows(candidate: CandidateRecord, sweep: SweepRecord, order: int) -> list[dict[str, Any]]:
    results = candidate.devices or (
        DeviceResult(device=_first_device(sweep), status="failed", error=candidate.error),
    )
    rows = []
    for result in results:
        failed = candidate.status == "failed" or result.status == "failed"
        rows.append(
            {
                "rank": None,
                "candidate_id": candidate.candidate_id,
                "sweep_id": candidate.sweep_id,
                "slice_id": candidate.slice_id,
                "family": candidate.family,
                "params": candidate.params,
                "device": result.device,
                "status": "failed" if failed else "ok",
                "accuracy": result.accuracy,
                "latency_ms": result.latency_ms,
                "size_bytes": result.size_bytes,
                "host_latency_p50_ms": result.host_latency_p50_ms,
                "host_latency_p99_ms": result.host_latency_p99_ms,
                "emulator": result.emulator,
                "seed": candidate.seed,
                "train_seconds": candidate.train_seconds,
                "error": result.error or candidate.error,
                # The model a promotion to this device would ship.
                "artifact_sha256": artifact_for(candidate, result),
                "created_at": candidate.created_at,
                "_sweep_order": order,
            }
        )
    return rows


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with the column dtypes every leaderboard has (empty or not)."""
    for column, dtype in _DTYPES.items():
        frame[column] = frame[column].astype(dtype)
    return frame


def _empty() -> pd.DataFrame:
    frame = pd.DataFrame({column: pd.Series([], dtype=object) for column in COLUMNS})
    return _typed(frame)
