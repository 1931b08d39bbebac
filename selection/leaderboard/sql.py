"""The leaderboard's SQL: one query per sweep that ranks, then filters, then joins.

Ranking happens in the database so it scales. Three levels:

1. ``ranked``: the eligible ``device_metrics`` rows of one sweep and device
   (``constraints.eligible_sql``) with their rank (``ROW_NUMBER()``), read
   from the covering index ``ix_device_metrics_board`` without touching the
   wide rows; ineligible rows form a second, unranked branch. For ``top N``
   an index scan with ``LIMIT`` instead of ranking every row.
2. View filters (slice, family, ``--where``) apply *after* ranking, so a
   row's rank does not depend on what else is shown; those on indexed columns
   are evaluated before any join. When filters are set (and do not read
   ``rank``), only the eligible rows ranked at or above the worst shown one
   are ranked: a row's rank counts only rows whose objective is at least as
   good, so that subset gives the same numbers as ranking all of them.
3. Only the surviving rows are joined to their full metrics and candidate.

Candidates that failed before any device ran have no metrics rows; a second
branch lists them on the sweep's first device. Refits (``candidates.refit_of``
set) are in no branch: their holdout scores are in-sample. The same
statements run on SQLite (>= 3.30, for NULLS LAST) and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from operator import itemgetter
from typing import Any

import numpy as np
from sqlalchemy import (
    BigInteger,
    Boolean,
    Connection,
    Float,
    Integer,
    String,
    and_,
    case,
    cast,
    column,
    exists,
    func,
    literal,
    null,
    or_,
    select,
    text,
    union_all,
)
from sqlalchemy.sql import visitors

from selection.leaderboard.where import Kind, compile_where
from selection.ranking.eligibility import eligible_sql
from selection.ranking.policies import RankingPolicy
from selection.store import schema

_C = schema.candidates
_M = schema.device_metrics

#: Filterable leaderboard columns and their kinds (what ``--where`` accepts).
FILTER_KINDS: dict[str, Kind] = {
    "rank": "number", "eligible": "bool", "candidate_id": "text", "sweep_id": "text",
    "slice_id": "text", "family": "text", "device": "text", "status": "text",
    "accuracy": "number", "latency_ms": "number", "size_bytes": "number",
    "host_latency_p50_ms": "number", "host_latency_p99_ms": "number", "emulator": "text",
    "seed": "number", "train_seconds": "number", "error": "text", "artifact_sha256": "text",
    "created_at": "text", "has_fallback": "bool", "peak_activation_bytes": "number",
    "memory_budget_bytes": "number", "device_eligible": "bool",
    "device_ineligible_reason": "text",
}
#: Columns level 1 reads from the covering index (plus any metric a policy orders by).
_INDEXED = ("candidate_id", "device", "accuracy", "latency_ms", "size_bytes", "has_fallback",
            "device_eligible", "peak_activation_bytes", "memory_budget_bytes")
_TYPES = {"accuracy": Float, "latency_ms": Float, "size_bytes": BigInteger,
          "host_latency_p50_ms": Float, "host_latency_p99_ms": Float, "train_seconds": Float,
          "has_fallback": Boolean, "peak_activation_bytes": BigInteger, "seed": BigInteger,
          "memory_budget_bytes": BigInteger, "device_eligible": Boolean}


def _not_refit(sweep_id: str) -> Any:
    """``device_metrics`` rows of ``sweep_id`` whose candidate is not a refit.

    A refit (``candidates.refit_of IS NOT NULL``) trained on the holdout, so
    its scores there are in-sample: no ranking query may see it. Spelled as
    NOT IN the sweep's refits (an index range, a handful of ids, read once)
    rather than a join per row, so ranking stays an index-only scan of
    ``ix_device_metrics_board``.
    """
    refits = _C.alias("refits")
    return _M.c.candidate_id.not_in(
        select(refits.c.candidate_id).where(refits.c.sweep_id == sweep_id, refits.c.refit_of.is_not(None)))


def _on_board(sweep_id: str, device: str) -> tuple[Any, ...]:
    """WHERE terms of the rows one (sweep, device) leaderboard ranks: the sweep's, refits left out."""
    return _M.c.sweep_id == sweep_id, _M.c.device == device, _not_refit(sweep_id)


def _metric_columns() -> dict[str, Any]:
    """Level-1 columns: only ``device_metrics`` (index-covered for the default policy)."""
    cols: dict[str, Any] = {name: _M.c[name] for name in _INDEXED}
    ok = and_(_M.c.candidate_ok.is_not(False), _M.c.status == "ok")
    cols["status"] = case((ok, "ok"), else_="failed")
    return cols


def _eligible(policy: RankingPolicy, cols: Mapping[str, Any]) -> Any:
    """``eligible_sql`` over level-1 columns, the run's status read from its two plain columns.

    The same rows as the rules on the ``status`` column above (a CASE: "ok" exactly when
    ``candidate_ok IS NOT FALSE AND status = 'ok'``), but PostgreSQL cannot estimate a CASE:
    it guessed 1 row of 100,000 eligible, and chose parallel plans that funnel every row
    through a Gather (the 1,000 best by accuracy: 15 ms instead of 1 at 300,000 candidates).
    """
    plain = {**cols, "status": _M.c.status}
    return and_(_M.c.candidate_ok.is_not(False), eligible_sql(policy, plain))


def _full(level1: Mapping[str, Any]) -> dict[str, Any]:
    """Every leaderboard column: level-1 ones where they exist, else the joined tables."""
    cols = {
        "sweep_id": _M.c.sweep_id, "slice_id": _C.c.slice_id, "family": _C.c.family,
        "params": _C.c.params, "host_latency_p50_ms": _M.c.host_latency_p50_ms,
        "host_latency_p99_ms": _M.c.host_latency_p99_ms, "emulator": _M.c.emulator,
        "seed": _C.c.seed, "train_seconds": _C.c.train_seconds,
        "error": func.coalesce(_M.c.error, _C.c.error),
        # The model a promotion to this device would ship (promotion.artifact_for).
        "artifact_sha256": func.coalesce(_M.c.artifact_sha256, _C.c.onnx_sha256),
        "created_at": _C.c.created_at, "device_ineligible_reason": _M.c.ineligible_reason,
        "extra": _M.c.extra,  # the device's own report: numerics, emulator agreement, placement
    }
    cols.update({name: level1[name] for name in level1 if name in FILTER_KINDS})
    return cols


def _order(policy: RankingPolicy, cols: Mapping[str, Any]) -> list[Any]:
    """ORDER BY terms of the eligible rows (the only rows ranked), objective first.

    The objective carries no NULLS LAST: eligibility requires it (the
    ``objective`` rule), so it changes nothing, and without it a descending
    objective is the backward scan of the ascending board index on PostgreSQL
    too (there ``DESC NULLS LAST`` matches no btree order and "top 20 of
    100,000" sorted every row: 40 ms instead of 1). SQLite sorts NULLs first
    ascending, so plain ``DESC`` is already NULLS LAST there.
    """
    objective = policy.order[0][0]
    terms = []
    for name, asc in policy.order:
        term = cols[name].asc() if asc else cols[name].desc()
        terms.append(term if name == objective else term.nulls_last())
    return terms


def _policy_columns(policy: RankingPolicy) -> dict[str, Any]:
    cols = _metric_columns()
    for name, _ in policy.order:  # e.g. train_seconds lives on candidates
        if name in _M.c and name not in cols:
            cols[name] = _M.c[name]  # not in the covering index: slower, still right
        elif name not in cols:
            cols[name] = select(_C.c[name]).where(_C.c.candidate_id == _M.c.candidate_id).scalar_subquery()
    return cols


def check_where(where: Sequence[str]) -> None:
    """Raise ConfigError for a bad ``--where`` before any sweep is read."""
    cols = {**_full(_metric_columns()), "rank": literal(0), "eligible": literal(True)}
    compile_where(list(where), {n: (cols[n], k) for n, k in FILTER_KINDS.items()})


def _level1(sweep_id: str, device: str, policy: RankingPolicy, top: int | None,
            ranks: Mapping[str, int] | None = None) -> Any:
    """Level 1 for ``top N`` or for rows the caller has ranked (``ranks``)."""
    cols = _policy_columns(policy)
    if ranks is not None:  # rows already ranked by the caller (Pareto): no window needed
        # By primary key (a candidate id belongs to one sweep): without the
        # sweep test SQLite seeks each id instead of scanning the device's rows.
        chosen = select(*(expr.label(name) for name, expr in cols.items())).where(
            _M.c.candidate_id.in_(list(ranks)), _M.c.device == device)
        rank: Any = case(ranks, value=_M.c.candidate_id) if ranks else cast(null(), Integer)
        return chosen.add_columns(literal(True).label("eligible"), rank.label("rank")).subquery("ranked")
    base = select(*(expr.label(name) for name, expr in cols.items())).where(
        *_on_board(sweep_id, device))
    best = base.where(_eligible(policy, cols)).order_by(*_order(policy, cols)).limit(top).subquery("best")
    rank = func.row_number().over(order_by=_order(policy, dict(best.c.items())))
    return select(best, literal(True).label("eligible"), rank.label("rank")).subquery("ranked")


def _ranked(sweep_id: str, device: str, policy: RankingPolicy, bound: Any = None) -> Any:
    """Eligible rows with their rank; with ``bound``, only those whose objective is at least that good.

    Ranks are per device, so the window needs no partition, and it sorts
    only the (narrow) eligible rows. Every row ranked before a row whose
    objective reaches ``bound`` also reaches it: within the subset, ranks
    are the same as over all eligible rows.
    """
    cols = _policy_columns(policy)
    query = select(*(expr.label(name) for name, expr in cols.items())).where(
        *_on_board(sweep_id, device), _eligible(policy, cols))
    if bound is not None:
        objective, ascending = policy.order[0]
        query = query.where(cols[objective] <= bound if ascending else cols[objective] >= bound)
    rank = func.row_number().over(order_by=_order(policy, cols))
    return query.add_columns(literal(True).label("eligible"), rank.label("rank")).subquery("ranked")


def _unranked(sweep_id: str, device: str, policy: RankingPolicy, eligible: bool) -> Any:
    """The eligible or the ineligible rows of one device, without rank (no window: filters push down)."""
    cols = _policy_columns(policy)
    ok = case((_eligible(policy, cols), True), else_=False)
    return select(*(expr.label(name) for name, expr in cols.items())).where(
        *_on_board(sweep_id, device), ok.is_(eligible),
    ).add_columns(literal(eligible).label("eligible"), cast(null(), Integer).label("rank")
                  ).subquery("unranked")


def _bound(sweep_id: str, device: str, policy: RankingPolicy, filters: dict[str, Any],
           where: Sequence[str]) -> Any:
    """SQL scalar: the worst objective among the eligible rows the filters keep (NULL if none)."""
    shown = _main_branch(_unranked(sweep_id, device, policy, True), filters, where).subquery("shown")
    objective, ascending = policy.order[0]
    worst = func.max if ascending else func.min
    return select(worst(shown.c[objective])).scalar_subquery()


def _reads_rank(where: Sequence[str]) -> bool:
    """Whether a ``--where`` expression names ``rank`` (then every eligible row is ranked)."""
    probe = column("rank", Integer)
    cols = {**_full(_metric_columns()), "rank": probe, "eligible": literal(True)}
    condition = compile_where(list(where), {n: (cols[n], k) for n, k in FILTER_KINDS.items()})
    return condition is not None and any(el is probe for el in visitors.iterate(condition))


def _main_branch(ranked: Any, filters: dict[str, Any], where: Sequence[str]) -> Any:
    level1 = {name: ranked.c[name] for name in ranked.c.keys()}
    cols = _full(level1)
    query = select(*(cols[name].label(name) for name in (*FILTER_KINDS, "params", "extra"))).select_from(
        ranked.join(_M, and_(_M.c.candidate_id == ranked.c.candidate_id, _M.c.device == ranked.c.device))
        .join(_C, _C.c.candidate_id == ranked.c.candidate_id))
    return _filtered(query, cols, filters, where)


def _early_branch(sweep_id: str, first_device: str, filters: dict[str, Any], where: Sequence[str]) -> Any:
    own = {"candidate_id": _C.c.candidate_id, "sweep_id": _C.c.sweep_id, "slice_id": _C.c.slice_id,
           "family": _C.c.family, "params": _C.c.params, "device": literal(first_device),
           "status": literal("failed"), "seed": _C.c.seed, "train_seconds": _C.c.train_seconds,
           "error": _C.c.error, "artifact_sha256": _C.c.onnx_sha256, "created_at": _C.c.created_at,
           "eligible": literal(False), "rank": cast(null(), Integer), "extra": literal("{}")}
    cols = {name: own.get(name, cast(null(), _TYPES.get(name, String)))
            for name in (*FILTER_KINDS, "params", "extra")}
    # A candidate with no device result failed before any device ran (the
    # producer marks it failed), so only failed ones are looked at: indexed.
    query = select(*(expr.label(name) for name, expr in cols.items())).where(
        _C.c.sweep_id == sweep_id, _C.c.status == "failed", _C.c.refit_of.is_(None),
        ~exists().where(_M.c.candidate_id == _C.c.candidate_id))
    return _filtered(query, cols, filters, where)


def _filtered(query: Any, cols: Mapping[str, Any], filters: dict[str, Any], where: Sequence[str]) -> Any:
    for name, value in filters.items():
        if value is not None:
            query = query.where(cols[name] == value)
    condition = compile_where(list(where), {n: (cols[n], k) for n, k in FILTER_KINDS.items()})
    return query if condition is None else query.where(condition)


def devices_of(conn: Connection, sweep_id: str) -> list[str]:
    """The devices the sweep's candidates ran on, by name.

    A loose index scan (one seek per device) instead of DISTINCT, which
    would read every index entry of a 100,000-candidate sweep.
    """
    found: list[str] = []
    while True:
        query = select(func.min(_M.c.device)).where(_M.c.sweep_id == sweep_id, _not_refit(sweep_id))
        if found:
            query = query.where(_M.c.device > found[-1])
        name = conn.execute(query).scalar()
        if name is None:
            return found
        found.append(name)


# Called through an Any alias: mypy (1.20 and 2.4) crashes expanding union_all's
# overloads for a star-argument list of selects.
_union_all: Any = union_all


def query_sweep(
    conn: Connection, sweep_id: str, *, policy: RankingPolicy, first_device: str,
    devices: Sequence[str], filters: Mapping[str, Any], where: Sequence[str] = (),
    top: int | None = None, only_ids: Mapping[str, Mapping[str, int]] | None = None,
    include_early: bool = True,
) -> list[Mapping[Any, Any]]:
    """The leaderboard rows of one sweep on ``devices``, as mappings, by device then rank.

    ``include_early`` lists candidates without any device result (on
    ``first_device``); they are never in a ``top`` or Pareto selection.
    ``only_ids`` (device -> {candidate_id: rank}) restricts each device to
    rows the caller has already ranked (the Pareto front).
    """
    include_early = include_early and top is None and only_ids is None
    rows: list[Mapping[Any, Any]] = []
    for device in devices:
        fixed = dict(filters)
        if only_ids is not None or top is not None:
            ranks = None if only_ids is None else only_ids.get(device, {})
            branches = [_main_branch(_level1(sweep_id, device, policy, top, ranks), fixed, where)]
        else:
            bound = None
            if (where or any(v is not None for v in fixed.values())) and not _reads_rank(where):
                bound = _bound(sweep_id, device, policy, fixed, where)
            branches = [_main_branch(_ranked(sweep_id, device, policy, bound), fixed, where),
                        _main_branch(_unranked(sweep_id, device, policy, False), fixed, where)]
        if device == first_device and include_early:
            branches.append(_early_branch(sweep_id, first_device, fixed, where))
        query = branches[0] if len(branches) == 1 else _union_all(*branches)
        sub = query.subquery("board")
        if top is not None:
            sub_query = select(sub).where(sub.c.rank <= top)
        else:
            sub_query = select(sub)
        rows.extend(conn.execute(
            sub_query.order_by(sub.c.rank.asc().nulls_last(), sub.c.candidate_id)).mappings().all())
    if first_device not in devices and include_early:
        early = _early_branch(sweep_id, first_device, dict(filters), where).subquery("early")
        rows.extend(conn.execute(select(early).order_by(early.c.candidate_id)).mappings().all())
    return rows


def metric_points(
    conn: Connection, sweep_id: str, device: str, policy: RankingPolicy, *,
    complete: bool = False, top: int | None = None,
    beaten_by: Sequence[tuple[float, float, float]] = (),
    objective_in: Sequence[float] | None = None, ids: bool = True,
) -> tuple[list[str], dict[str, np.ndarray]]:
    """Ids and metric columns (accuracy, latency_ms, size_bytes and the policy's
    order; float64, NaN for NULL) of the eligible rows of one device: enough to
    rank and to find the front.

    ``complete`` keeps rows with all three front metrics; ``top`` the best
    ``top`` of those by accuracy (an index scan); ``beaten_by`` drops rows one
    of these (accuracy, latency_ms, size_bytes) points dominates (implies
    ``complete``; put the points that dominate most rows first, they are
    tested in order); ``objective_in`` keeps rows whose objective is one of these.
    ``ids=False`` leaves the ids out (an empty list): for the thousands of rows
    the front is searched in, decoding their ids cost more than the metrics.
    """
    cols = _policy_columns(policy)
    names = list(dict.fromkeys(["accuracy", "latency_ms", "size_bytes",
                                *(n for n, _ in policy.order if n != "candidate_id")]))
    head = [_M.c.candidate_id] if ids else []
    query = select(*head, *(cols[n] for n in names)).where(
        _M.c.sweep_id == sweep_id, _M.c.device == device)
    acc, lat, size = cols["accuracy"], cols["latency_ms"], cols["size_bytes"]
    if complete or top is not None or beaten_by:
        query = query.where(acc.is_not(None), lat.is_not(None), size.is_not(None))
    # Before eligibility and the refit test: SQLite tests terms in this order, and most rows fail here.
    for a, la, s in beaten_by:  # not dominated by (a, la, s): better somewhere, or equal
        query = query.where(or_(acc > a, lat < la, size < s, and_(acc == a, lat == la, size == s)))
    query = query.where(_not_refit(sweep_id))
    query = query.where(_eligible(policy, cols))
    if objective_in is not None:
        query = query.where(cols[policy.order[0][0]].in_(list(objective_in)))
    if top is not None:
        query = query.order_by(acc.desc()).limit(top)
    if not ids and conn.dialect.name == "postgresql":
        return [], _arrays(conn, query.subquery("points"), names)
    result = conn.execute(query)
    try:
        # The driver's plain tuples: at 100,000 rows SQLAlchemy's Row objects
        # cost as much as the query, and these columns need no type processing.
        rows = result.cursor.fetchall()
    finally:
        result.close()
    first = len(head)
    found = list(map(itemgetter(0), rows)) if ids else []
    return found, {name: _floats(rows, i + first) for i, name in enumerate(names)}


def better_counts(
    conn: Connection, sweep_id: str, device: str, policy: RankingPolicy, values: Sequence[float]
) -> list[int]:
    """For each objective value (``values`` best first), how many eligible rows
    of the device have a strictly better objective.

    Each count adds the rows between two consecutive values, so the rows are
    read once in all; when the objective leads the board index (accuracy)
    every piece is an index range. The pieces' bounds travel as rows of a
    small table that one correlated count reads: spelled as one scalar
    subquery per piece, the SQL of a 60-point front was 40 kB, and building,
    sending and parsing it cost about as much as the counting.
    """
    cols = _policy_columns(policy)
    objective, ascending = policy.order[0]
    obj = cols[objective]
    base = select(func.count()).select_from(_M).where(
        *_on_board(sweep_id, device), _eligible(policy, cols))
    found: dict[int, int] = {}
    for start in range(0, len(values), _PIECES):  # SQLite allows 500 terms in a compound SELECT
        query: Any = None
        if start == 0:  # the first piece is open on the better side
            first = base.where(obj < values[0] if ascending else obj > values[0]).scalar_subquery()
            query = select(literal(0, Integer).label("piece"), first.label("n"))
        chunk = range(max(start, 1), min(start + _PIECES, len(values)))
        if chunk:
            bounds = _bounds(chunk, values)
            piece = base.where(obj < bounds.c.value, obj >= bounds.c.previous) if ascending else \
                base.where(obj > bounds.c.value, obj <= bounds.c.previous)
            between = select(bounds.c.piece, piece.scalar_subquery().label("n"))
            query = between if query is None else _union_all(query, between)
        found.update((int(i), int(n)) for i, n in conn.execute(query))
    counts: list[int] = []
    total = 0
    for i in range(len(values)):
        total += found[i]
        counts.append(total)
    return counts


def _bounds(chunk: range, values: Sequence[float]) -> Any:
    """A CTE of rows (piece, previous, value): piece ``i`` lies between values ``i - 1`` and ``i``.

    Written as text with bound values. SQLAlchemy caches no statement holding
    VALUES data (it compiled one again on every call), and one SELECT of
    literals per piece built some 2,500 objects for a 60-point front (a
    dozen young garbage collections per Pareto call with the rows it reads).
    """
    params: dict[str, Any] = {}
    selects = []
    for i in chunk:
        params.update({f"piece_{i}": i, f"previous_{i}": float(values[i - 1]), f"value_{i}": float(values[i])})
        selects.append(f"SELECT :piece_{i} AS piece, :previous_{i} AS previous, :value_{i} AS value")
    return text(" UNION ALL ".join(selects)).bindparams(**params).columns(
        column("piece", Integer), column("previous", Float), column("value", Float)).cte("bounds")


#: Pieces counted per statement by :func:`better_counts`.
_PIECES = 200


def _arrays(conn: Connection, points: Any, names: Sequence[str]) -> dict[str, np.ndarray]:
    """Each column of ``points`` as float64 (NULL as NaN), read as one row of arrays (PostgreSQL).

    The thousands of rows the Pareto front is searched in came back as as many
    row tuples, each a container the garbage collector tracks: a front's call
    made a dozen young collections, enough for a full one (tens of ms in a
    process holding pandas and SQLAlchemy) every eight calls or so. Three
    arrays are three objects.
    """
    row = conn.execute(select(*(func.array_agg(points.c[i]) for i in range(len(names))))).one()
    return {name: np.array(values if values is not None else [], dtype="float64")
            for name, values in zip(names, row)}


def _floats(rows: Sequence[Any], i: int) -> np.ndarray:
    """Column ``i`` of ``rows`` as float64, NULL as NaN."""
    try:
        return np.fromiter(map(itemgetter(i), rows), dtype="float64", count=len(rows))
    except TypeError:  # a NULL: the slower path that reads None as NaN
        return np.array([row[i] for row in rows], dtype="float64")
