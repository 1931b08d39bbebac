"""The hard constraints of a ranking policy, in SQL and in pandas.

Each rule says when a row is *not* eligible. The leaderboard evaluates
:func:`eligible_sql` in the database (so "top 20 eligible" is an indexed
query), and :func:`violations` explains the rows it returns, in words. The
two must agree; ``tests/selection/test_ranking_policies.py`` checks that.

Device extras (``has_fallback``, ``peak_activation_bytes``,
``memory_budget_bytes``, ``device_eligible``) are NULL on host rows: NULL
never violates a rule about them. A metric the policy *bounds* or
*optimises* must be present, though: an unknown latency cannot be under 2 ms.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from sqlalchemy import ColumnElement, and_, not_, or_, true

if TYPE_CHECKING:
    from selection.ranking.policies import RankingPolicy

#: Leaderboard columns the constraints read (beyond the ranked metrics).
CONSTRAINT_COLUMNS = (
    "status",
    "error",
    "has_fallback",
    "peak_activation_bytes",
    "memory_budget_bytes",
    "device_eligible",
    "device_ineligible_reason",
    "accuracy",
    "latency_ms",
    "size_bytes",
)
Cols = Mapping[str, Any]


def _sql_rules(policy: RankingPolicy, c: Cols) -> list[ColumnElement[bool]]:
    """SQL predicates, each true when the row breaks one rule."""
    rules = [or_(c["status"].is_(None), c["status"] != "ok"), c[policy.objective].is_(None)]
    if policy.respect_device_eligibility:
        rules.append(c["device_eligible"].is_(False))
    if not policy.allow_cpu_fallback:
        rules.append(c["has_fallback"].is_(True))
    if policy.within_memory_budget:
        rules.append(
            and_(
                c["peak_activation_bytes"].is_not(None),
                c["memory_budget_bytes"].is_not(None),
                c["peak_activation_bytes"] > c["memory_budget_bytes"],
            )
        )
    for column, bound, above in _bounds(policy):
        rules.append(or_(c[column].is_(None), c[column] > bound if above else c[column] < bound))
    return rules


def eligible_sql(policy: RankingPolicy, columns: Cols) -> ColumnElement[bool]:
    """A SQL boolean that is true exactly for the rows the policy ranks."""
    rules = _sql_rules(policy, columns)
    return not_(or_(*rules)) if rules else true()


def _bounds(policy: RankingPolicy) -> list[tuple[str, float, bool]]:
    """``(column, bound, is_upper_bound)`` for every numeric limit set."""
    out = []
    if policy.max_latency_ms is not None:
        out.append(("latency_ms", float(policy.max_latency_ms), True))
    if policy.max_size_bytes is not None:
        out.append(("size_bytes", float(policy.max_size_bytes), True))
    if policy.min_accuracy is not None:
        out.append(("accuracy", float(policy.min_accuracy), False))
    return out


def _col(frame: pd.DataFrame, name: str) -> pd.Series:
    if name in frame.columns:
        return frame[name]
    return pd.Series([None] * len(frame), index=frame.index, dtype=object)


def _is(series: pd.Series, value: bool) -> np.ndarray:
    return np.array([v is not None and v is not pd.NA and bool(v) == value
                     and not (isinstance(v, float) and np.isnan(v)) for v in series], dtype=bool)


def _num(series: pd.Series) -> pd.Series:
    return pd.to_numeric(series, errors="coerce").astype("float64")


Rule = tuple[np.ndarray, Callable[[Any], str]]


def _pandas_rules(frame: pd.DataFrame, policy: RankingPolicy) -> list[Rule]:
    """``(violated mask, message for row i)`` per rule, in the order reasons are listed."""
    status, error = _col(frame, "status"), _col(frame, "error")
    rules: list[Rule] = [
        (
            (status != "ok").to_numpy(),
            lambda i: f"status {status.iloc[i]}" + (f" ({error.iloc[i]})" if _present(error.iloc[i]) else ""),
        ),
        (_num(_col(frame, policy.objective)).isna().to_numpy(), lambda i: f"no {policy.objective}"),
    ]
    if policy.respect_device_eligibility:
        why = _col(frame, "device_ineligible_reason")
        rules.append((
            _is(_col(frame, "device_eligible"), False),
            lambda i: "device marks it ineligible: " + (str(why.iloc[i]) if _present(why.iloc[i]) else "no reason given"),
        ))
    if not policy.allow_cpu_fallback:
        rules.append((_is(_col(frame, "has_fallback"), True),
                      lambda i: "some ops fall back to the CPU (policy allows no CPU fallback)"))
    if policy.within_memory_budget:
        peak, budget = _num(_col(frame, "peak_activation_bytes")), _num(_col(frame, "memory_budget_bytes"))
        rules.append((
            (peak > budget).to_numpy(),
            lambda i: f"peak activations {int(peak.iloc[i])} B exceed the memory budget {int(budget.iloc[i])} B",
        ))
    for column, bound, above in _bounds(policy):
        values = _num(_col(frame, column))
        broken = values.isna() | (values > bound if above else values < bound)
        rules.append((
            broken.to_numpy(),
            _bound_message(values, column, bound, above),
        ))
    return rules


def _bound_message(values: pd.Series, column: str, bound: float, above: bool) -> Callable[[int], str]:
    limit = f"{'max' if above else 'min'} {bound:g}"

    def message(i: int) -> str:
        value = values.iloc[i]
        if pd.isna(value):
            return f"no {column} to check against the {limit}"
        return f"{column} {value:g} {'>' if above else '<'} {limit}"

    return message


def _present(value: Any) -> bool:
    return value is not None and value is not pd.NA and not (isinstance(value, float) and np.isnan(value))


def violations(frame: pd.DataFrame, policy: RankingPolicy) -> list[str | None]:
    """For each row (by position): None if eligible, else every broken rule joined by "; "."""
    reasons: list[list[str]] = [[] for _ in range(len(frame))]
    for mask, message in _pandas_rules(frame, policy):
        for i in np.flatnonzero(mask):
            reasons[i].append(message(i))
    return [None if not r else "; ".join(r) for r in reasons]
