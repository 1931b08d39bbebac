"""The eligibility rules of a ranking policy: one table, evaluated in SQL and in pandas.

:data:`RULES` is the only place a hard constraint is written. Each
:class:`Rule` names the leaderboard column it reads, how that column must
compare for the row to stay eligible, the policy (``[ranking]``) key that
switches it on or sets its bound, and the message that explains a breach.
Two evaluators read the table:

* :func:`eligible_sql`: a SQL boolean the leaderboard puts in its queries
  (so "top 20 eligible" is an indexed query);
* :func:`explain` / :func:`violations`: per row, the rules it breaks, in
  words (the leaderboard's ``ineligible_reason``, :func:`row_violations`
  for the gate's constraints check and the refit's device checks).

The two are tested against each other on the same rows, NULLs and boundary
values included (``tests/selection/ranking/test_eligibility_table.py``).

Device extras (``has_fallback``, ``peak_activation_bytes``,
``memory_budget_bytes``, ``device_eligible``) are NULL on host rows: NULL
never breaks a rule about them. A metric the policy *bounds* or *optimises*
must be present, though: an unknown latency cannot be under 2 ms.

This module knows policies only through :class:`Constraints` (the fields
the rules read), so ``selection.ranking.policies`` imports it and never the
other way round.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np
import pandas as pd
from sqlalchemy import ColumnElement, and_, not_, or_, true

#: How an eligible row's column compares (the rule is broken otherwise).
Comparison = Literal[
    "is_ok",           # column == "ok"; NULL breaks it
    "present",         # column is not NULL
    "not_true",        # column is not True; NULL keeps the row
    "not_false",       # column is not False; NULL keeps the row
    "at_most_column",  # column <= other column; NULL on either side keeps the row
    "at_most",         # column <= the policy's bound; NULL breaks it
    "at_least",        # column >= the policy's bound; NULL breaks it
]
#: When a rule applies, from its policy key: always, when the key is true / false, when it is set.
Switch = Literal["always", "if_true", "if_false", "if_set"]
#: What a rule is about: the run itself, the device's fit, or a numeric limit.
Scope = Literal["run", "device", "limit"]


class Constraints(Protocol):
    """The policy fields the rules read (``RankingPolicy`` has them all)."""

    @property
    def objective(self) -> str: ...
    @property
    def max_latency_ms(self) -> float | None: ...
    @property
    def max_size_bytes(self) -> int | None: ...
    @property
    def min_accuracy(self) -> float | None: ...
    @property
    def within_memory_budget(self) -> bool: ...
    @property
    def allow_cpu_fallback(self) -> bool: ...
    @property
    def respect_device_eligibility(self) -> bool: ...


@dataclass(frozen=True)
class Rule:
    """One hard constraint.

    ``column`` is the leaderboard column read (None: the column the policy's
    ``key`` names, i.e. the objective). ``key`` is the policy / ``[ranking]``
    key that switches the rule (``switch``) or holds its bound. ``message`` is
    a ``str.format`` template with ``column``, ``value``, ``other`` (the
    ``other`` column's value), ``bound`` and ``detail`` (the ``detail``
    column's value, rendered through ``detail_format``, else ``detail_default``);
    ``missing`` replaces it when the column is NULL.
    """

    name: str
    column: str | None
    comparison: Comparison
    key: str | None
    switch: Switch
    scope: Scope
    message: str
    missing: str | None = None
    other: str | None = None
    detail: str | None = None
    detail_format: str = "{}"
    detail_default: str = ""

    def applies(self, policy: Constraints) -> bool:
        """Whether ``policy`` checks this rule."""
        if self.switch == "always":
            return True
        value = getattr(policy, str(self.key))
        if self.switch == "if_set":
            return value is not None
        return bool(value) is (self.switch == "if_true")

    def column_for(self, policy: Constraints) -> str:
        """The column this rule reads under ``policy``."""
        return self.column if self.column is not None else str(getattr(policy, str(self.key)))

    def bound(self, policy: Constraints) -> float | None:
        """The numeric limit (``at_most``/``at_least`` rules), else None."""
        if self.comparison not in ("at_most", "at_least"):
            return None
        return float(getattr(policy, str(self.key)))

    @property
    def columns(self) -> tuple[str, ...]:
        """Every fixed column the rule reads (the objective's varies with the policy)."""
        return tuple(c for c in (self.column, self.other, self.detail) if c is not None)


#: The hard constraints, in the order reasons are listed.
RULES: tuple[Rule, ...] = (
    Rule("status", "status", "is_ok", None, "always", "run",
         "status {value}{detail}", detail="error", detail_format=" ({})"),
    Rule("objective", None, "present", "objective", "always", "run", "no {column}"),
    Rule("device eligibility", "device_eligible", "not_false", "respect_device_eligibility",
         "if_true", "device", "device marks it ineligible: {detail}",
         detail="device_ineligible_reason", detail_default="no reason given"),
    Rule("cpu fallback", "has_fallback", "not_true", "allow_cpu_fallback", "if_false", "device",
         "some ops fall back to the CPU (policy allows no CPU fallback)"),
    Rule("memory budget", "peak_activation_bytes", "at_most_column", "within_memory_budget",
         "if_true", "device",
         "peak activations {value:.0f} B exceed the memory budget {other:.0f} B",
         other="memory_budget_bytes"),
    Rule("max latency", "latency_ms", "at_most", "max_latency_ms", "if_set", "limit",
         "{column} {value:g} > max {bound:g}", missing="no {column} to check against the max {bound:g}"),
    Rule("max size", "size_bytes", "at_most", "max_size_bytes", "if_set", "limit",
         "{column} {value:g} > max {bound:g}", missing="no {column} to check against the max {bound:g}"),
    Rule("min accuracy", "accuracy", "at_least", "min_accuracy", "if_set", "limit",
         "{column} {value:g} < min {bound:g}", missing="no {column} to check against the min {bound:g}"),
)
#: The rules about the device's fit (what a refit must keep).
DEVICE_RULES = tuple(r for r in RULES if r.scope == "device")

#: Leaderboard columns the rules read (beyond the ranked metrics).
CONSTRAINT_COLUMNS = tuple(dict.fromkeys(c for r in RULES for c in r.columns))
Cols = Mapping[str, Any]


@dataclass(frozen=True)
class Violation:
    """One broken rule of one row: the rule and why, in words."""

    rule: str
    message: str


# -- SQL ---------------------------------------------------------------------------------------

def _sql_broken(rule: Rule, policy: Constraints, c: Cols) -> ColumnElement[bool]:
    """A SQL predicate, true when a row breaks ``rule``."""
    col = c[rule.column_for(policy)]
    if rule.comparison == "is_ok":
        return or_(col.is_(None), col != "ok")
    if rule.comparison == "present":
        return col.is_(None)
    if rule.comparison == "not_true":
        return col.is_(True)
    if rule.comparison == "not_false":
        return col.is_(False)
    if rule.comparison == "at_most_column":
        other = c[str(rule.other)]
        return and_(col.is_not(None), other.is_not(None), col > other)
    bound = rule.bound(policy)
    return or_(col.is_(None), col > bound if rule.comparison == "at_most" else col < bound)


def eligible_sql(policy: Constraints, columns: Cols, rules: Sequence[Rule] = RULES) -> ColumnElement[bool]:
    """A SQL boolean that is true exactly for the rows ``policy`` ranks."""
    broken = [_sql_broken(r, policy, columns) for r in rules if r.applies(policy)]
    return not_(or_(*broken)) if broken else true()


# -- pandas ------------------------------------------------------------------------------------

def _col(frame: pd.DataFrame, name: str) -> pd.Series:
    if name in frame.columns:
        return frame[name]
    return pd.Series([None] * len(frame), index=frame.index, dtype=object)


def _present(value: Any) -> bool:
    return value is not None and value is not pd.NA and not (isinstance(value, float) and np.isnan(value))


def _is(series: pd.Series, value: bool) -> np.ndarray:
    # Like SQL's IS TRUE / IS FALSE: NULL (None, NA, NaN) is neither.
    return np.array([_present(v) and bool(v) == value for v in series], dtype=bool)


def _num(series: pd.Series) -> pd.Series:
    return pd.to_numeric(series, errors="coerce").astype("float64")


def _broken(rule: Rule, policy: Constraints, frame: pd.DataFrame) -> np.ndarray:
    """Per row (by position): whether it breaks ``rule``."""
    column = rule.column_for(policy)
    if rule.comparison == "is_ok":
        return (_col(frame, column) != "ok").to_numpy(dtype=bool)
    if rule.comparison == "not_true":
        return _is(_col(frame, column), True)
    if rule.comparison == "not_false":
        return _is(_col(frame, column), False)
    values = _num(_col(frame, column))
    if rule.comparison == "present":
        return values.isna().to_numpy()
    if rule.comparison == "at_most_column":
        return (values > _num(_col(frame, str(rule.other)))).to_numpy()  # NaN compares False
    bound = rule.bound(policy)
    over = values > bound if rule.comparison == "at_most" else values < bound
    return (values.isna() | over).to_numpy()


def _message(rule: Rule, policy: Constraints, frame: pd.DataFrame, i: int) -> str:
    column = rule.column_for(policy)
    value = _col(frame, column).iloc[i]
    if rule.comparison not in ("is_ok", "not_true", "not_false"):
        value = _num(_col(frame, column).iloc[i:i + 1]).iloc[0]
    fields: dict[str, Any] = {"column": column, "value": value, "bound": rule.bound(policy),
                              "other": None, "detail": rule.detail_default}
    if rule.other is not None:
        fields["other"] = _num(_col(frame, rule.other).iloc[i:i + 1]).iloc[0]
    if rule.detail is not None and _present(detail := _col(frame, rule.detail).iloc[i]):
        fields["detail"] = rule.detail_format.format(detail)
    template = rule.missing if rule.missing is not None and not _present(value) else rule.message
    return template.format(**fields)


def explain(frame: pd.DataFrame, policy: Constraints, rules: Sequence[Rule] = RULES) -> list[list[Violation]]:
    """For each row of ``frame`` (by position), the rules of ``policy`` it breaks, in table order.

    Columns the frame lacks count as NULL.
    """
    out: list[list[Violation]] = [[] for _ in range(len(frame))]
    for rule in rules:
        if not rule.applies(policy):
            continue
        for i in np.flatnonzero(_broken(rule, policy, frame)):
            out[i].append(Violation(rule.name, _message(rule, policy, frame, int(i))))
    return out


def violations(frame: pd.DataFrame, policy: Constraints) -> list[str | None]:
    """For each row (by position): None if eligible, else every broken rule joined by "; "."""
    return [None if not found else "; ".join(v.message for v in found) for found in explain(frame, policy)]


def row_violations(row: Mapping[str, Any], policy: Constraints,
                   rules: Sequence[Rule] = RULES) -> list[Violation]:
    """The rules one leaderboard-shaped row breaks (the pandas evaluator on a one-row frame)."""
    return explain(pd.DataFrame([dict(row)]), policy, rules)[0]


__all__ = ["CONSTRAINT_COLUMNS", "DEVICE_RULES", "RULES", "Constraints", "Rule", "Violation",
           "eligible_sql", "explain", "row_violations", "violations"]
