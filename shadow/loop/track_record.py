"""Selection by track record: how each way of choosing did on the data that came *after* it chose.

One holdout period is a noisy judge: the sweep's rank 1 on it is often not the model that serves
the next period best. The loop sees what happens next, so it can keep score. An *expert* is a
way of picking the challenger out of a sweep: ``holdout`` (the sweep's rank 1, what the loop does
without a record) and one expert per slice strategy of the sweep file (its slice's best candidate
by the sweep's ranking; strategies whose slices move with the data, such as ``expanding`` or
``window``, are keyed by rank, newest first, so "the largest expanding slice" is one expert
across sweeps). After each of the channel's sweeps, every expert's pick is scored on the rows
that arrived before the next sweep (rows no candidate of that sweep saw), as deployed, with ONNX
Runtime. At the next sweep the controller follows the expert with the best discounted record
(recent periods weigh more: a drifting stream changes which strategy is right), falling back to
``holdout`` until every expert has ``min_record`` scored periods. The gate's paired test still
guards every promotion; the record, the scores and the reason are stored with the gate event.

A deterministic leader has no worst-case guarantee (an adversarial stream can make any fixed
rule of choice look bad), so none is claimed: ``shadow backtest`` reports the realized margin
against the best single strategy in hindsight on the user's own history. Because ``holdout`` is
one of the experts, the record can only move the choice away from rank 1 when another expert
has done better on the periods that followed its choices. Written here rather than taken from a
bandit library because the experts' losses are full-information, per period, and the whole state
is recomputed from the store each pass (nothing to keep in sync after a crash).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from selection.records import HOST_DEVICE, SliceRecord

if TYPE_CHECKING:
    from selection.store import Store

__all__ = ["HOLDOUT", "PastSweep", "TrackRecord", "discounted_scores", "expert_picks",
           "ranked_candidates", "strategy_keys", "track_record"]

#: The expert that takes the sweep's own rank 1.
HOLDOUT = "holdout"
#: Strategies whose slices move with the data: keyed by rank (newest first), not by id.
_MOVING = {"expanding": "end", "window": "start"}


def strategy_keys(slices: Sequence[SliceRecord]) -> dict[str, str]:
    """Slice id -> its expert key: the id, or ``strategy[rank]`` for slices that move."""
    keys = {s.slice_id: s.slice_id for s in slices if s.strategy not in _MOVING}
    for strategy, param in _MOVING.items():
        moving = sorted((s for s in slices if s.strategy == strategy),
                        key=lambda s: int(s.params.get(param, 0)), reverse=True)
        keys.update({s.slice_id: f"{strategy}[{rank}]" for rank, s in enumerate(moving)})
    return keys


def expert_picks(ranked: Sequence[tuple[str, str, int] | tuple[str, str, int, str | None]],
                 slices: Sequence[SliceRecord]) -> dict[str, str]:
    """Expert key -> the candidate it picks from one sweep.

    ``ranked``: the sweep's eligible candidates as ``(candidate_id, slice_id, rank)`` under its
    own ranking policy (refits are never ranked), with a fourth item naming the baseline family
    (``[model] baselines``) of a baseline's candidate. ``holdout`` picks rank 1; a strategy's
    expert picks the best-ranked candidate of its slice, so every expert honours the sweep's hard
    constraints (latency, size) exactly as rank 1 does. A baseline on a slice is an expert of its
    own, ``<strategy>/<family>`` (say ``all/prior``): the record can then learn that on this
    stream the class prior beats every trained model, which the slice's expert alone could not.
    """
    keys = strategy_keys(slices)
    picks: dict[str, str] = {}
    for row in sorted(ranked, key=lambda r: r[2]):
        candidate_id, slice_id = row[0], row[1]
        baseline = row[3] if len(row) > 3 else None
        picks.setdefault(HOLDOUT, candidate_id)
        if slice_id in keys:
            picks.setdefault(f"{keys[slice_id]}/{baseline}" if baseline else keys[slice_id], candidate_id)
    return picks


def ranked_candidates(store: Store, sweep_id: str) -> list[tuple[str, str, int, str | None]]:
    """The sweep's eligible, ranked candidates on the host: ``(candidate_id, slice_id, rank,
    baseline family or None)``."""
    from selection.leaderboard.frame import leaderboard
    from shadow.sweep.config import stored_baselines

    baselines = stored_baselines(store.get_sweep(sweep_id).config)
    frame = leaderboard(store, sweep=sweep_id, device=HOST_DEVICE)
    frame = frame[frame["rank"].notna()]
    return [(str(c), str(s), int(r), str(f) if f in baselines else None) for c, s, r, f in
            zip(frame["candidate_id"], frame["slice_id"], frame["rank"], frame["family"])]


def discounted_scores(history: Mapping[str, Sequence[tuple[int, int]]],
                      discount: float) -> dict[str, float]:
    """Expert -> discounted accuracy over its scored periods (oldest first: ``(correct, rows)``).

    Period ``k`` of ``n`` weighs ``discount ** (n - 1 - k)``, per row, so the newest period
    counts most and a short period counts for its rows only.
    """
    scores = {}
    for key, periods in history.items():
        n = len(periods)
        weights = [discount ** (n - 1 - k) for k in range(n)]
        rows = sum(w * r for w, (_, r) in zip(weights, periods))
        if rows > 0:
            scores[key] = sum(w * c for w, (c, _) in zip(weights, periods)) / rows
    return scores


@dataclass(frozen=True)
class TrackRecord:
    """What the record says at one sweep: the expert followed, and why (stored as evidence)."""

    expert: str
    reason: str
    scores: Mapping[str, float] = field(default_factory=dict)
    periods: Mapping[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"policy": "track-record", "expert": self.expert, "reason": self.reason,
                "scores": {k: round(v, 6) for k, v in sorted(self.scores.items())},
                "periods": dict(sorted(self.periods.items()))}


@dataclass(frozen=True)
class PastSweep:
    """One earlier sweep of the channel and the rows that arrived after it, before the next."""

    sweep_id: str
    start: int  # rows the sweep trained and judged on (the rows after it start here)
    stop: int


def track_record(store: Store, past: Sequence[PastSweep], features: np.ndarray,
                 labels: np.ndarray, classes: Sequence[str], *, discount: float,
                 min_record: int, experts: Collection[str] | None = None) -> TrackRecord:
    """Score every expert of each past sweep on its following rows; pick the leader.

    ``features``/``labels`` are the dataset's current rows (indices into ``classes``); rows of
    a past sweep's interval past their end are ignored. ``experts``: the ones the sweep being
    judged offers (None: all); only they compete, and only they must have ``min_record``
    periods (a strategy dropped from the file, or a slice that failed once, holds nothing up).
    """
    from shadow.loop.deployed import accuracy, predict_labels

    truth = np.asarray(classes, dtype=object)[labels]
    history: dict[str, list[tuple[int, int]]] = {}
    if discount < 1:  # periods weighing under 1e-3 of the newest change nothing: skip them
        past = past[-max(min_record, math.ceil(math.log(1e-3) / math.log(discount))):]
    for sweep in past:
        rows = slice(sweep.start, min(sweep.stop, len(labels)))
        if rows.stop <= rows.start:
            continue
        picks = expert_picks(ranked_candidates(store, sweep.sweep_id),
                             store.get_slices(sweep.sweep_id))
        scored: dict[str, tuple[int, int]] = {}
        for key, cid in picks.items():
            record = store.get_candidate(cid)
            model = store.artifacts.read_verified(str(record.onnx_sha256))
            predicted = predict_labels(model, record.lineage["model_io"], features[rows])
            n = rows.stop - rows.start
            scored[key] = (round(accuracy(predicted, truth[rows]) * n), n)
        for key, value in scored.items():
            history.setdefault(key, []).append(value)
    if experts is not None:
        history = {k: history.get(k, []) for k in experts}
    scores = discounted_scores(history, discount)
    periods = {k: len(v) for k, v in history.items()}
    if not scores or min(periods.values()) < min_record:
        have = min(periods.values(), default=0)
        return TrackRecord(HOLDOUT, f"the record is short ({have} of {min_record} scored "
                           "periods): following the holdout's rank 1", scores, periods)
    # Ties go to the holdout: the record must show a lead to move the choice.
    leader = max(scores, key=lambda k: (scores[k], k == HOLDOUT))
    lead = 100 * (scores[leader] - scores.get(HOLDOUT, scores[leader]))
    why = (f"expert {leader!r} has the best discounted record ({scores[leader]:.4f} over "
           f"{periods[leader]} periods, {lead:+.2f} points over the holdout's rank 1)")
    return TrackRecord(leader, why, scores, periods)


def past_sweeps(store: Store, channel: str, sweep_id: str, rows_now: int) -> list[PastSweep]:
    """The channel's finished sweeps before ``sweep_id``, oldest first, each with the rows after it.

    A sweep's following rows end where the next sweep's data ended (or at ``rows_now``, the
    data ``sweep_id`` was run on): those are the rows its choice would have served.
    """
    finished = [e for e in reversed(store.list_events(channel=channel, kinds="sweep_finished"))
                if e.sweep_id and e.sweep_id != sweep_id
                and isinstance(e.evidence.get("rows"), int)]
    out = []
    for k, event in enumerate(finished):
        stop = finished[k + 1].evidence["rows"] if k + 1 < len(finished) else rows_now
        out.append(PastSweep(str(event.sweep_id), int(event.evidence["rows"]), int(stop)))
    return out


def choose_challenger(store: Store, channel: str, sweep_id: str, features: np.ndarray,
                      labels: np.ndarray, classes: Sequence[str], *, discount: float,
                      min_record: int) -> tuple[str, TrackRecord]:
    """The challenger the record picks out of ``sweep_id``, and the record (NotFoundError: none).

    The expert the record follows may have no eligible candidate in this sweep (its slice did
    not fit or failed): rank 1 then, said in the reason.
    """
    from selection.errors import NotFoundError

    ranked = ranked_candidates(store, sweep_id)
    if not ranked:
        raise NotFoundError(f"no eligible candidate in sweep {sweep_id}")
    picks = expert_picks(ranked, store.get_slices(sweep_id))
    past = past_sweeps(store, channel, sweep_id, len(labels))
    record = track_record(store, past, features, labels, classes, discount=discount,
                          min_record=min_record, experts=set(picks))
    if record.expert not in picks:
        record = TrackRecord(HOLDOUT, f"{record.reason}; it has no eligible candidate in this "
                             "sweep: following the holdout's rank 1", record.scores, record.periods)
    return picks[record.expert], record
