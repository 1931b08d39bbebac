"""Ranking policies: hard constraints, one objective, tie-breakers.

A :class:`RankingPolicy` decides, for every leaderboard row, whether it is
*eligible* (ran ok, has the objective, passes every hard constraint) and, if
not, why; eligible rows of one ``(sweep_id, device)`` group are ranked by the
objective, then the tie-breakers, then ``candidate_id`` (so ranks are
1-based, consecutive and never shared). Ineligible rows get no rank.
Candidates of different sweeps are never ranked together: they were scored on
different holdouts.

Policies have names (:data:`POLICIES`, a registry; adding one is adding an entry) and can
be tuned in a sweep file's ``[ranking]`` table (:func:`policy_from_config`).
The same policy is evaluated in SQL by the leaderboard (``selection.leaderboard.sql``)
and in pandas here (:func:`eligibility`, :func:`rank_rows`); the tests check
that both agree.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

from selection.errors import ConfigError
from selection.registry import Registry
from selection.validation import check_known_keys

if TYPE_CHECKING:
    import pandas as pd

# pandas and the eligibility rules (which build SQL with SQLAlchemy) are
# imported by the functions that rank: the policies themselves are plain data
# that `shadow ... --help` lists without loading either.

#: Metrics a policy may optimise, and which way is better.
METRIC_DIRECTIONS: dict[str, str] = {
    "accuracy": "max",
    "latency_ms": "min",
    "size_bytes": "min",
    "host_latency_p50_ms": "min",
    "host_latency_p99_ms": "min",
    "peak_activation_bytes": "min",
    "train_seconds": "min",
}
_GROUP = ["sweep_id", "device"]


@dataclass(frozen=True)
class RankingPolicy:
    """How rows are made eligible and ordered. Build with :func:`get_policy`.

    Constraints left at None are not checked. Missing device extras (host
    rows have none) read as "no CPU fallback, within memory budget, eligible".
    """

    name: str = "default"
    objective: str = "accuracy"
    tie_breakers: tuple[str, ...] = ("latency_ms", "size_bytes")
    max_latency_ms: float | None = None
    max_size_bytes: int | None = None
    min_accuracy: float | None = None
    within_memory_budget: bool = True
    allow_cpu_fallback: bool = False
    respect_device_eligibility: bool = True

    def __post_init__(self) -> None:
        where = f"ranking policy {self.name!r}"
        for metric in (self.objective, *self.tie_breakers):
            _check_metric(metric, where)
        for key in ("max_latency_ms", "max_size_bytes", "min_accuracy"):
            value = getattr(self, key)
            # not (0 <= value < 2**63): refuses nan and inf (no bound a row can fail
            # or meet) and an int no database column compares with.
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, (int, float))
                or not 0 <= value < 2**63
            ):
                raise ConfigError(
                    f"{where}: {key} must be a number >= 0 (finite, below 2**63); got {value!r}")

    @property
    def order(self) -> list[tuple[str, bool]]:
        """``(column, ascending)`` pairs, objective first, candidate_id last."""
        metrics = [self.objective, *(m for m in self.tie_breakers if m != self.objective)]
        return [(m, METRIC_DIRECTIONS[m] == "min") for m in metrics] + [("candidate_id", True)]

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form (stored in gate decisions)."""
        data = asdict(self)
        data["tie_breakers"] = list(self.tie_breakers)
        return data


def _check_metric(metric: Any, where: str) -> None:
    if metric not in METRIC_DIRECTIONS:
        raise ConfigError(
            f"{where}: a ranking metric must be one of {', '.join(METRIC_DIRECTIONS)}; "
            f"got {metric!r}"
        )


#: Named policies, registered here and only here. "default": best accuracy on the
#: device's own numerics among rows that fit the device (no CPU fallback, within
#: the memory budget).
POLICIES: Registry[RankingPolicy] = Registry(
    "ranking policy",
    fix="Pick one of those names, or tune one in the sweep file's [ranking] table.",
)
for _policy in (
    RankingPolicy(),
    RankingPolicy(
        name="accuracy", within_memory_budget=False, allow_cpu_fallback=True,
        respect_device_eligibility=False,
    ),
    RankingPolicy(name="latency", objective="latency_ms", tie_breakers=("accuracy", "size_bytes")),
    RankingPolicy(name="size", objective="size_bytes", tie_breakers=("accuracy", "latency_ms")),
):
    POLICIES.register(_policy)
del _policy
DEFAULT_POLICY = POLICIES["default"]
_CONFIG_KEYS = ("policy", *(k for k in RankingPolicy.__dataclass_fields__ if k != "name"))


def get_policy(name: str | RankingPolicy | None) -> RankingPolicy:
    """The policy named ``name`` (a policy passes through; None is "default")."""
    if name is None:
        return DEFAULT_POLICY
    if isinstance(name, RankingPolicy):
        return name
    return POLICIES.get(name)


def policy_from_config(table: Mapping[str, Any], where: str) -> RankingPolicy:
    """A policy from a ``[ranking]`` TOML table; ``where`` names it in errors.

    ``policy = NAME`` picks the base (default "default"); every other key
    overrides one field, e.g. ``max_latency_ms = 2.0`` or
    ``tie_breakers = ["size_bytes"]``. Unknown keys are errors.
    """
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where} must be a table of ranking settings; got {table!r}")
    check_known_keys(table, _CONFIG_KEYS, where)
    base = get_policy(table.get("policy", "default"))
    overrides = {k: v for k, v in table.items() if k != "policy"}
    for key in ("within_memory_budget", "allow_cpu_fallback", "respect_device_eligibility"):
        if key in overrides and not isinstance(overrides[key], bool):
            raise ConfigError(f"{where}: {key} must be true or false; got {overrides[key]!r}")
    if "tie_breakers" in overrides:
        ties = overrides["tie_breakers"]
        if not isinstance(ties, (list, tuple)):
            raise ConfigError(f"{where}: tie_breakers must be a list of metrics; got {ties!r}")
        overrides["tie_breakers"] = tuple(ties)
    name = base.name if not overrides else f"{base.name}+config"
    try:
        return replace(base, name=name, **overrides)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def eligibility(frame: pd.DataFrame, policy: RankingPolicy | None = None) -> tuple[pd.Series, pd.Series]:
    """``(eligible, reason)`` for every row of a leaderboard-shaped frame.

    ``reason`` is None for eligible rows, else every failed rule joined by
    "; ". Constraint columns the frame lacks count as missing values.
    """
    import pandas as pd

    from selection.ranking.eligibility import violations

    policy = get_policy(policy)
    reasons = violations(frame.reset_index(drop=True), policy)
    eligible = pd.Series([r is None for r in reasons], index=frame.index, name="eligible")
    return eligible, pd.Series(reasons, index=frame.index, name="ineligible_reason", dtype=object)


def rank_rows(df: pd.DataFrame, policy: RankingPolicy | str | None = None) -> pd.Series:
    """The rank of each row of ``df`` under ``policy`` (default: "default").

    Returns a nullable ``Int64`` series named ``rank``, aligned with ``df``'s
    index (which need not be unique).
    """
    import numpy as np
    import pandas as pd

    from selection.ranking.eligibility import CONSTRAINT_COLUMNS

    policy = get_policy(policy)
    order = policy.order
    needed = [*_GROUP, "status", *(c for c, _ in order)]
    missing = [c for c in dict.fromkeys(needed) if c not in df.columns]
    if missing:
        raise ConfigError(
            f"ranking needs the columns {', '.join(dict.fromkeys(needed))}; the frame lacks "
            f"{', '.join(missing)}; build it with `selection.leaderboard.frame.leaderboard()`"
        )
    ranks = np.zeros(len(df), dtype="int64")  # 0 marks "no rank"
    # Work on positions, not labels, so a duplicated index cannot misplace ranks.
    present = [c for c in dict.fromkeys([*needed, *CONSTRAINT_COLUMNS]) if c in df.columns]
    frame = df.loc[:, present].reset_index(drop=True)
    eligible, _ = eligibility(frame, policy)
    ok = frame[eligible.to_numpy()]
    if not ok.empty:
        ordered = ok.sort_values(
            _GROUP + [c for c, _ in order],
            ascending=[True, True] + [a for _, a in order],
            na_position="last",
            kind="mergesort",
        )
        positions = ordered.index.to_numpy()
        ranks[positions] = ordered.groupby(_GROUP, sort=False).cumcount().to_numpy() + 1
    result = pd.Series(ranks, index=df.index, name="rank").astype("Int64")
    return result.mask(result == 0)
