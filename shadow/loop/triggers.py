"""Triggers: whether the loop should sweep again, and why, as data.

Pure functions over a frozen :class:`LoopState` (what the controller knows right now) and the
``[watch.triggers]`` settings. :func:`evaluate` returns one frozen :class:`TriggerFiring` per
trigger that fires, in :data:`~shadow.sweep.watch_config.TRIGGER_KEYS` order, each with its reason
in words and the numbers that made it fire (JSON-able, so the controller can store it as an
event). No I/O, no clock: the caller passes the time, so a backtest in simulated time and the
live loop run the same code.

Boundaries: ``new_rows`` and ``schedule_s`` fire when the count or the elapsed time *reaches* the
threshold; ``min_accuracy`` fires when live accuracy is strictly *below* it; ``significant_drop``
fires when the p-value is strictly below alpha, once ``min_rows`` live rows are scored.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from shadow.sweep.watch_config import WatchTriggers


@dataclass(frozen=True)
class LoopState:
    """What the controller knows at one moment. ``None`` for ``*_at_last_sweep``: no sweep yet."""

    #: Rows of the dataset's current version, and of the version the last sweep trained on.
    rows_now: int
    rows_at_last_sweep: int | None
    #: Seconds on the caller's clock (wall time live, simulated time in a backtest).
    now_s: float
    last_sweep_at_s: float | None
    #: The champion's live rows since its promotion: how many it got right, out of how many.
    live_correct: int = 0
    live_total: int = 0
    #: The champion's holdout accuracy when it was promoted; ``None``: no champion.
    promotion_accuracy: float | None = None
    #: Whether the drift detector fired since the last sweep, and what it reported (JSON-able).
    drift_fired: bool = False
    drift_detail: Mapping[str, Any] = field(default_factory=dict)
    #: :func:`config_hash` of the sweep file and code version now, and at the last sweep.
    config_hash: str = ""
    config_hash_at_last_sweep: str | None = None

    def __post_init__(self) -> None:
        # Built by the controller, not typed by a user: a broken state is a bug, hence ValueError.
        if not 0 <= self.live_correct <= self.live_total:
            raise ValueError(f"LoopState: need 0 <= live_correct <= live_total; got "
                             f"{self.live_correct} of {self.live_total}")
        if self.promotion_accuracy is not None and not 0 <= self.promotion_accuracy <= 1:
            raise ValueError(f"LoopState: promotion_accuracy must be in [0, 1]; got "
                             f"{self.promotion_accuracy!r}")
        if not math.isfinite(self.now_s) or (
                self.last_sweep_at_s is not None and not math.isfinite(self.last_sweep_at_s)):
            raise ValueError(f"LoopState: times must be finite; got now_s={self.now_s!r}, "
                             f"last_sweep_at_s={self.last_sweep_at_s!r}")

    @property
    def live_accuracy(self) -> float | None:
        """The champion's accuracy on its live rows, or ``None`` before any."""
        return self.live_correct / self.live_total if self.live_total else None


@dataclass(frozen=True)
class TriggerFiring:
    """One trigger that fired: its name (the ``[watch.triggers]`` key), why, and the numbers."""

    trigger: str
    reason: str
    evidence: Mapping[str, Any]

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form, as stored with the event."""
        return {"trigger": self.trigger, "reason": self.reason, "evidence": dict(self.evidence)}


def evaluate(state: LoopState, triggers: WatchTriggers) -> tuple[TriggerFiring, ...]:
    """Every enabled trigger that fires on ``state``, in the fixed order of ``TRIGGER_KEYS``."""
    # Each check returns None when its trigger is off or does not fire; _CHECKS is the order.
    firings = (check(state, triggers) for _, check in _CHECKS)
    return tuple(f for f in firings if f is not None)


def _new_rows(state: LoopState, triggers: WatchTriggers) -> TriggerFiring | None:
    threshold = triggers.new_rows
    new = state.rows_now - (state.rows_at_last_sweep or 0)
    if threshold is None or new < threshold:
        return None
    return TriggerFiring("new_rows", f"{new} new rows since the last sweep (threshold "
                         f"{threshold})",
                         {"new_rows": new, "rows_now": state.rows_now,
                          "rows_at_last_sweep": state.rows_at_last_sweep,
                          "threshold": threshold})


def _schedule(state: LoopState, triggers: WatchTriggers) -> TriggerFiring | None:
    every = triggers.schedule_s
    if every is None:
        return None
    if state.last_sweep_at_s is None:
        return TriggerFiring("schedule_s", "no sweep yet: the schedule is due now",
                             {"now_s": state.now_s, "last_sweep_at_s": None,
                              "elapsed_s": None, "schedule_s": every})
    elapsed = state.now_s - state.last_sweep_at_s
    if elapsed < every:
        return None
    return TriggerFiring("schedule_s", f"{elapsed:g} s since the last sweep (every {every:g} s)",
                         {"now_s": state.now_s, "last_sweep_at_s": state.last_sweep_at_s,
                          "elapsed_s": elapsed, "schedule_s": every})


def _min_accuracy(state: LoopState, triggers: WatchTriggers) -> TriggerFiring | None:
    threshold = triggers.min_accuracy
    accuracy = state.live_accuracy
    if threshold is None or accuracy is None or accuracy >= threshold:
        return None
    return TriggerFiring("min_accuracy", f"the champion's live accuracy {accuracy:.4f} is below "
                         f"{threshold:g} ({state.live_correct}/{state.live_total} rows)",
                         {"live_accuracy": accuracy, "live_correct": state.live_correct,
                          "live_total": state.live_total, "threshold": threshold})


def _significant_drop(state: LoopState, triggers: WatchTriggers) -> TriggerFiring | None:
    drop = triggers.significant_drop
    p0 = state.promotion_accuracy
    if drop is None or p0 is None or state.live_total < drop.min_rows:
        return None
    # One-sided exact binomial test of H0 "the champion is still as accurate as at promotion"
    # against "it is less accurate". Exact rather than a normal approximation because accuracies
    # sit near 1 and min_rows may be small, where the Wald interval is badly off; stdlib only,
    # like the gate's McNemar test, so the loop needs no scipy. The promotion accuracy is taken
    # as known (its own holdout uncertainty is ignored): the test asks whether the live rows fit it.
    p_value = binomial_cdf(state.live_correct, state.live_total, p0)
    if not p_value < drop.alpha:
        return None
    accuracy = state.live_correct / state.live_total
    return TriggerFiring("significant_drop", f"live accuracy {accuracy:.4f} "
                         f"({state.live_correct}/{state.live_total}) is significantly below "
                         f"{p0:.4f} at promotion (one-sided exact binomial p = {p_value:.3g} < "
                         f"alpha {drop.alpha:g})",
                         {"live_accuracy": accuracy, "live_correct": state.live_correct,
                          "live_total": state.live_total, "promotion_accuracy": p0,
                          "p_value": p_value, "alpha": drop.alpha, "min_rows": drop.min_rows,
                          "test": "binomial-exact-less"})


def _drift(state: LoopState, triggers: WatchTriggers) -> TriggerFiring | None:
    if not (triggers.drift and state.drift_fired):
        return None
    return TriggerFiring("drift", "the drift detector fired on the champion's live errors",
                         {"drift_fired": True, **dict(state.drift_detail)})


def _config_changed(state: LoopState, triggers: WatchTriggers) -> TriggerFiring | None:
    # With no sweep yet there is nothing to compare with: the first sweep is other triggers' call.
    before = state.config_hash_at_last_sweep
    if not triggers.config_changed or before is None or before == state.config_hash:
        return None
    return TriggerFiring("config_changed", "the sweep config or the code version changed since "
                         "the last sweep",
                         {"config_hash": state.config_hash, "config_hash_at_last_sweep": before})


_Check = Callable[[LoopState, WatchTriggers], "TriggerFiring | None"]
#: One check per trigger, in ``TRIGGER_KEYS`` order (a test holds the two equal).
_CHECKS: tuple[tuple[str, _Check], ...] = (
    ("new_rows", _new_rows),
    ("schedule_s", _schedule),
    ("min_accuracy", _min_accuracy),
    ("significant_drop", _significant_drop),
    ("drift", _drift),
    ("config_changed", _config_changed),
)


def config_hash(raw_config: Mapping[str, Any], code_version: str) -> str:
    """sha256 of a sweep file's settings and the code version, for ``config_changed``.

    The ``[watch]`` table is left out: changing how the loop watches (its poll interval, a
    threshold) changes no model a sweep would train, so it must not start one.
    """
    settings = {k: v for k, v in raw_config.items() if k != "watch"}
    text = json.dumps({"config": settings, "code_version": code_version},
                      sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def binomial_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p), exact up to float rounding, in log space.

    Terms are summed relative to the largest one, walking away from the mode where they
    shrink, and stop once they no longer change the sum, so n = 10**6 costs a few thousand
    steps and nothing overflows or underflows before the final ``exp``. Above the mode the
    lower tail is 1 minus the upper tail, which is then the small side.
    """
    if n < 0 or not 0 <= p <= 1:  # nan fails the range too
        raise ValueError(f"binomial_cdf: need n >= 0 and p in [0, 1]; got n={n}, p={p!r}")
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    if p == 0.0:
        return 1.0
    if p == 1.0:
        return 0.0  # k < n successes are impossible when every trial succeeds
    mode = math.floor((n + 1) * p)
    if k < mode:
        return math.exp(_log_tail(k, n, p, step=-1))
    return -math.expm1(_log_tail(k + 1, n, p, step=+1))


def _log_tail(start: int, n: int, p: float, step: int) -> float:
    """log of sum of pmf(i) for i from ``start`` away from the mode (``step`` -1: down to 0, +1: up to n).

    Past the mode the terms fall monotonically, so the first is the largest.
    """
    log_q, log_p = math.log1p(-p), math.log(p)
    log_first = (math.lgamma(n + 1) - math.lgamma(start + 1) - math.lgamma(n - start + 1)
                 + start * log_p + (n - start) * log_q)
    total, term, i = 1.0, 1.0, start
    odds = math.exp(log_q - log_p)  # (1 - p) / p
    while (i > 0) if step < 0 else (i < n):
        # pmf(i - 1) / pmf(i) = i / (n - i + 1) * (1 - p) / p, and the inverse going up.
        term *= i / (n - i + 1) * odds if step < 0 else (n - i) / (i + 1) / odds
        i += step
        total += term
        if term < total * 1e-17:
            break
    return log_first + math.log(total)


__all__ = ["LoopState", "TriggerFiring", "binomial_cdf", "config_hash", "evaluate"]
