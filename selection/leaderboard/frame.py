"""The leaderboard: one row per candidate x device, ranked, as a pandas frame.

This is the table behind `shadow leaderboard`, `shadow promote --best` and
`shadow report`; rendering it is the CLI's job. Filtering, eligibility and
ranking run in SQL (``selection.leaderboard.sql``); this module picks the sweeps and
the policy, explains ineligible rows and types the frame.
"""

from __future__ import annotations

import functools
import gc
from collections.abc import Callable, Sequence
from typing import Any, ParamSpec, TypeVar

import numpy as np
import pandas as pd

from selection.errors import ConfigError, NotFoundError
from selection.leaderboard.sql import better_counts, check_where, devices_of, metric_points, query_sweep
from selection.ranking.eligibility import violations
from selection.ranking.pareto import pareto_mask
from selection.ranking.policies import RankingPolicy, get_policy, policy_from_config
from selection.records import HOST_DEVICE, SweepRecord
from selection.store import Store
from selection.store.rows import CANDIDATE_STATUSES, decode_json

P = ParamSpec("P")
R = TypeVar("R")

#: The leaderboard's columns, in order.
COLUMNS = (
    "rank", "candidate_id", "sweep_id", "slice_id", "family", "params", "device", "status",
    "accuracy", "latency_ms", "size_bytes", "host_latency_p50_ms", "host_latency_p99_ms",
    "emulator", "seed", "train_seconds", "error", "artifact_sha256", "created_at",
    "eligible", "ineligible_reason", "has_fallback", "peak_activation_bytes",
    "memory_budget_bytes", "device_eligible", "device_ineligible_reason", "policy",
    "numerics", "emulator_agreement", "placement",
)
_DTYPES: dict[str, Any] = {
    "rank": "Int64", "accuracy": "float64", "latency_ms": "float64", "size_bytes": "Int64",
    "host_latency_p50_ms": "float64", "host_latency_p99_ms": "float64", "seed": "Int64",
    "train_seconds": "float64", "created_at": "datetime64[us, UTC]", "eligible": "bool",
    "has_fallback": "boolean", "peak_activation_bytes": "Int64",
    "memory_budget_bytes": "Int64", "device_eligible": "boolean", "emulator_agreement": "float64",
}


def sweep_policy(sweep: SweepRecord, policy: RankingPolicy | str | None = None) -> RankingPolicy:
    """The policy that ranks ``sweep``: ``policy`` if given, else its config's [ranking], else "default"."""
    if policy is not None:
        return get_policy(policy)
    table = sweep.config.get("ranking") if isinstance(sweep.config, dict) else None
    if table is None:
        return get_policy(None)
    return policy_from_config(table, f"[ranking] of sweep {sweep.sweep_id!r}")


def _cycle_collection_paused(read: Callable[P, R]) -> Callable[P, R]:
    """``read`` with Python's cyclic garbage collector held off while it runs.

    Reading a board makes tens of thousands of short-lived row tuples and arrays, none of
    them in a reference cycle (reference counting frees them). They trip the collector's
    young generations several times per call, and every tenth of those or so a full
    collection runs in the middle of the read and walks them all: in a process holding
    pandas and SQLAlchemy, 40-55 ms added to a 50 ms query (measured at 100,000 candidates,
    the calls with a full collection were exactly the slow ones: 109 ms against 52). Once
    the call is done the collector is as the caller had it (an application that turned it
    off keeps it off); threads that overlap only delay it.
    """
    @functools.wraps(read)
    def paused(*args: P.args, **kwargs: P.kwargs) -> R:
        enabled = gc.isenabled()
        gc.disable()
        try:
            return read(*args, **kwargs)
        finally:
            if enabled:
                gc.enable()
    return paused


@_cycle_collection_paused
def leaderboard(
    store: Store,
    *,
    sweep: str = "latest",
    device: str | None = None,
    status: str | None = None,
    slice_id: str | None = None,
    family: str | None = None,
    where: str | Sequence[str] = (),
    top: int | None = None,
    pareto: bool = False,
    policy: RankingPolicy | str | None = None,
    sort: str | Sequence[str] | None = None,
) -> pd.DataFrame:
    """The ranked rows of ``sweep`` ("latest", "all" or a sweep id).

    Ranks are per (sweep, device) under the sweep's policy (see
    :func:`sweep_policy`) and do not depend on the filters: ``device``,
    ``status``, ``slice_id``, ``family`` and ``where`` (expressions such as
    ``"latency_ms < 2"``, ANDed) only choose which rows are shown. ``top``
    keeps rows ranked 1..top per device; ``pareto`` keeps the eligible rows on
    the accuracy/latency/size Pareto front of their device. Rows are sorted
    newest sweep first, then by device, then by rank (unranked last), unless
    ``sort`` names columns (prefix ``-`` for descending). An empty store
    gives an empty frame with the same columns.
    """
    if status is not None and status not in CANDIDATE_STATUSES:
        raise ConfigError(
            f"--status must be one of {', '.join(CANDIDATE_STATUSES)}; got {status!r}"
        )
    if top is not None and (isinstance(top, bool) or not isinstance(top, int) or top < 1):
        raise ConfigError(f"--top must be an int >= 1; got {top!r}")
    where = [where] if isinstance(where, str) else list(where)
    check_where(where)
    sort_keys = _sort_keys(sort)
    if policy is not None:
        get_policy(policy)  # a bad name fails even on an empty store
    frames = []
    with store.snapshot() as conn:
        sweeps = _select_sweeps(store, sweep)
        # Where a candidate that failed before any device ran is listed: the
        # sweep's first device as its record names them, else the host.
        first = {r.sweep_id: (r.devices or (HOST_DEVICE,))[0] for r in sweeps}
        on: dict[str, list[str]] = {}
        for record in sweeps:
            found = devices_of(conn, record.sweep_id)
            on[record.sweep_id] = found if device is None else [d for d in found if d == device]
        if device is not None and sweeps and not any(on.values()) and device not in first.values():
            present = sorted({d for r in sweeps for d in devices_of(conn, r.sweep_id)}
                             | set(first.values()))
            raise NotFoundError(
                f"no leaderboard row for device {device!r} in the selected sweeps; "
                f"devices present: {', '.join(present)}; pick one of those with --device"
            )
        filters = {"status": status, "slice_id": slice_id, "family": family}
        for record in sweeps:
            chosen = sweep_policy(record, policy)
            ids = _pareto_ids(conn, record, on[record.sweep_id], chosen) if pareto else None
            rows = query_sweep(
                conn, record.sweep_id, policy=chosen, first_device=first[record.sweep_id],
                devices=on[record.sweep_id], filters=filters, where=where, top=top, only_ids=ids,
                include_early=device in (None, first[record.sweep_id]),
            )
            if rows:
                frames.append(_frame(rows, chosen))
    if not frames:
        return _empty()
    frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    frame = _typed(frame.loc[:, list(COLUMNS)])
    if sort_keys:
        frame = frame.sort_values(
            [k for k, _ in sort_keys], ascending=[a for _, a in sort_keys],
            na_position="last", kind="mergesort",
        )
    return frame.reset_index(drop=True)


def best_candidate(
    store: Store, *, sweep: str = "latest", device: str = HOST_DEVICE,
    policy: RankingPolicy | str | None = None,
) -> str:
    """The id of the rank-1 candidate of one sweep on ``device``.

    Raises NotFoundError when no candidate of that sweep is eligible there,
    and ConfigError for ``sweep="all"`` (sweeps use different holdouts, so
    their scores do not compare).
    """
    if sweep == "all":
        raise ConfigError(
            "the best candidate is chosen within one sweep (each sweep scores on its own "
            "holdout); got sweep='all'; pass 'latest' or a sweep id"
        )
    quick = leaderboard(store, sweep=sweep, device=device, policy=policy, top=1)
    if not quick.empty:
        return str(quick["candidate_id"].iloc[0])
    # No rank 1: read every row once, to say why.
    frame = leaderboard(store, sweep=sweep, device=device, policy=policy)
    if frame.empty:
        raise NotFoundError(
            f"no candidates in sweep {sweep!r} of the store at {store.url}; "
            "run `shadow sweep run CONFIG` first"
        )
    best = frame[frame["rank"] == 1]
    if best.empty:
        sweep_id = frame["sweep_id"].iloc[0]
        failed = int((frame["status"] == "failed").sum())
        if failed == len(frame):
            raise NotFoundError(
                f"no candidate of sweep {sweep_id!r} ran ok on device {device!r} "
                f"({failed} failed); see the errors with "
                f"`shadow leaderboard --sweep {sweep_id} --device {device}`, fix them and "
                f"`shadow sweep run CONFIG --resume {sweep_id}`, or choose another --device"
            )
        why = frame["ineligible_reason"].dropna().iloc[0]
        raise NotFoundError(
            f"no candidate of sweep {sweep_id!r} on device {device!r} meets the ranking "
            f"policy {frame['policy'].iloc[0]!r} ({len(frame)} rows, e.g. {why}); see "
            f"`shadow leaderboard --sweep {sweep_id} --device {device}`, relax the policy "
            "(--policy or [ranking] in the sweep file), or promote a candidate by id with --force"
        )
    return str(best["candidate_id"].iloc[0])


#: Anchors for the Pareto front: the front of this many best rows by
#: accuracy, at most this many of its points (each is one more SQL test per row).
_ANCHOR_ROWS, _MAX_ANCHORS = 1000, 16


def _pareto_ids(
    conn: Any, sweep: SweepRecord, devices: list[str], policy: RankingPolicy
) -> dict[str, dict[str, int]]:
    """Per device, the front's candidate ids with their ranks (computed here, not in SQL)."""
    out: dict[str, dict[str, int]] = {}
    for name in devices:
        if policy.order[0][0] == "accuracy":  # the board index leads with accuracy
            out[name] = _indexed_front(conn, sweep.sweep_id, name, policy)
            continue
        ids, values = metric_points(conn, sweep.sweep_id, name, policy)
        front = _front(values)
        out[name] = dict(zip([ids[i] for i in front], _ranks_of(front, ids, values, policy)))
    return out


#: The front's metrics, the maximised one first.
_FRONT_METRICS = ("accuracy", "latency_ms", "size_bytes")


def _front(values: dict[str, np.ndarray]) -> np.ndarray:
    """Positions of the rows on the accuracy/latency/size Pareto front."""
    return np.flatnonzero(pareto_mask(*(values[m] for m in _FRONT_METRICS)))


def _indexed_front(conn: Any, sweep_id: str, device: str, policy: RankingPolicy) -> dict[str, int]:
    """The front of one device with its ranks, without reading every row into Python.

    For policies whose objective is accuracy, the first column of the board
    index after sweep and device. The front of the best rows by accuracy
    gives anchors: a row an anchor dominates is not on the front (an anchor
    is an eligible row), so the database drops those, most rows, as it reads.
    A front row's rank counts the rows with a strictly better objective (in
    SQL, index ranges) plus those tied with it on the objective that sort
    before it (read and ordered here). The front's rows, and their ids, come
    from that last read: a row with exactly a front point's metrics is on it.
    """
    _, best = metric_points(conn, sweep_id, device, policy, top=_ANCHOR_ROWS, ids=False)
    points = _front(best)
    # Least accurate first: those are the cheap, fast points that dominate most rows.
    points = points[np.argsort(best["accuracy"][points], kind="stable")]
    if len(points) > _MAX_ANCHORS:
        points = points[np.linspace(0, len(points) - 1, _MAX_ANCHORS).round().astype(int)]
    anchors = [(float(best["accuracy"][i]), float(best["latency_ms"][i]), int(best["size_bytes"][i]))
               for i in points]
    _, values = metric_points(conn, sweep_id, device, policy, complete=True, beaten_by=anchors, ids=False)
    front = _front(values)
    if not front.size:
        return {}
    objective, ascending = policy.order[0]
    wanted = sorted(set(values[objective][front].tolist()), reverse=not ascending)  # best first
    better = dict(zip(wanted, better_counts(conn, sweep_id, device, policy, wanted)))
    tie_ids, ties = metric_points(conn, sweep_id, device, policy, objective_in=wanted)
    key = _order_key(policy, tie_ids, ties)
    groups: dict[float, list[int]] = {}
    for j, value in enumerate(ties[objective].tolist()):
        groups.setdefault(value, []).append(j)
    place: dict[str, int] = {}
    for members in groups.values():
        for k, j in enumerate(sorted(members, key=key)):
            place[tie_ids[j]] = k
    on_front = set(zip(*(values[m][front].tolist() for m in _FRONT_METRICS)))
    rows = (j for j, point in enumerate(zip(*(ties[m].tolist() for m in _FRONT_METRICS)))
            if point in on_front)
    return {tie_ids[j]: better[float(ties[objective][j])] + place[tie_ids[j]] + 1 for j in rows}


def _order_key(policy: RankingPolicy, ids: list[str], values: dict[str, np.ndarray]) -> Any:
    """Row position -> sort key on the policy's columns after the objective, then the id.

    The SQL ranking's order: NULL (NaN) last whichever the direction.
    """
    columns = [(name, up) for name, up in policy.order[1:] if name != "candidate_id"]

    def key(i: int) -> tuple[Any, ...]:
        parts: list[Any] = []
        for name, up in columns:
            v = float(values[name][i])
            parts.append((1, 0.0) if np.isnan(v) else (0, v if up else -v))
        return (*parts, ids[i])

    return key


def _ranks_of(
    chosen: np.ndarray, ids: list[str], values: dict[str, np.ndarray], policy: RankingPolicy
) -> list[int]:
    """The ranks of rows ``chosen`` among all rows, in the SQL ranking's order.

    That order is the policy's columns (NULL/NaN last) with candidate_id as
    the last key. Rather than sorting every row for a few ranks, count the
    rows whose first key is strictly better (one argsort of one float
    column, then binary search) and order only the rows that tie with a
    chosen one on that key, in Python with the full key.
    """
    if not len(chosen):
        return []
    first, ascending = policy.order[0]
    key = values[first] if ascending else -values[first]  # NaN stays NaN: last either way
    order = np.argsort(key, kind="stable")
    ordered = key[order]
    wanted = key[chosen]
    # numpy sorts and searches NaN as the largest value, like NULLS LAST.
    lows = np.searchsorted(ordered, wanted, side="left")
    highs = np.searchsorted(ordered, wanted, side="right")
    tie_key = _order_key(policy, ids, values)
    within: dict[int, dict[int, int]] = {}  # tie group (by its start) -> row -> place in it
    ranks = []
    for i, low, high in zip(chosen.tolist(), lows.tolist(), highs.tolist()):
        if high - low == 1:
            ranks.append(low + 1)
            continue
        if low not in within:
            group = sorted(order[low:high].tolist(), key=tie_key)
            within[low] = {row: place for place, row in enumerate(group)}
        ranks.append(low + within[low][i] + 1)
    return ranks


def _sort_keys(sort: str | Sequence[str] | None) -> list[tuple[str, bool]]:
    if sort is None:
        return []
    names = [sort] if isinstance(sort, str) else list(sort)
    keys = []
    for raw in (part.strip() for name in names for part in name.split(",")):
        column = raw.lstrip("-")
        if column not in COLUMNS or column == "params":
            raise ConfigError(
                f"--sort must name leaderboard columns (prefix - for descending); got {raw!r}; "
                f"known columns: {', '.join(c for c in COLUMNS if c != 'params')}"
            )
        keys.append((column, not raw.startswith("-")))
    return keys


def _select_sweeps(store: Store, sweep: str) -> list[SweepRecord]:
    """The sweeps named by ``sweep``, newest first."""
    if sweep == "all":
        return store.list_sweeps()
    if sweep == "latest":
        latest = store.latest_sweep_id()
        return [] if latest is None else [store.get_sweep(latest)]
    return [store.get_sweep(sweep)]  # NotFoundError says how to list sweeps


def _frame(rows: list[Any], policy: RankingPolicy) -> pd.DataFrame:
    frame = pd.DataFrame([dict(row) for row in rows])
    frame["params"] = [decode_json(p) for p in frame["params"]]
    frame["created_at"] = pd.to_datetime(frame["created_at"], utc=True, format="ISO8601")
    frame["eligible"] = frame["eligible"].astype(bool)
    reasons = violations(frame, policy)
    frame["ineligible_reason"] = pd.Series(
        [None if ok else why for ok, why in zip(frame["eligible"], reasons)],
        index=frame.index, dtype=object,
    )
    frame["policy"] = policy.name
    device = [_device_columns(decode_json(e) if e else {}) for e in frame.pop("extra")]
    for column in ("numerics", "emulator_agreement", "placement"):
        frame[column] = pd.Series([d[column] for d in device], index=frame.index, dtype=object)
    return frame


def _device_columns(extra: Any) -> dict[str, Any]:
    """What a device reported about its numerics, the emulator and op placement, as three cells.

    ``placement`` reads "npu" (every op on the accelerator), "npu+cpu: Erf" (those ops
    fell back) or "cpu"; None for a device that does not place ops (the host).
    """
    extra = extra if isinstance(extra, dict) else {}
    fallback = extra.get("cpu_fallback_ops") or []
    if "placement_source" not in extra:
        placement = None
    elif extra.get("accelerator_nodes") == 0 or extra.get("placement_source") == "cpu-only":
        placement = "cpu"
    else:
        placement = "npu+cpu: " + ",".join(fallback) if fallback else "npu"
    agreement = extra.get("emulator_cpu_agreement")
    return {"numerics": extra.get("numerics"), "placement": placement,
            "emulator_agreement": float(agreement) if isinstance(agreement, (int, float)) else None}


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with the column dtypes every leaderboard has (empty or not)."""
    for column, dtype in _DTYPES.items():
        frame[column] = frame[column].astype(dtype)
    return frame


def _empty() -> pd.DataFrame:
    frame = pd.DataFrame({column: pd.Series([], dtype=object) for column in COLUMNS})
    return _typed(frame)
