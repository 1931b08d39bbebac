"""The champion/challenger gate: may this candidate replace the channel's model?

A challenger passes only if every check passes:

1. **constraints**: it is eligible under the sweep's ranking policy;
2. **improvement**: on the same holdout rows its accuracy beats the
   champion's by more than 0 and by at least ``min_improvement``;
3. **significance**: a paired exact McNemar test on the per-row outcomes
   gives p < ``alpha`` (one-sided by default: "is the challenger better?");
4. **guards**: no guarded metric gets worse than its allowed percentage
   (default: latency_ms by at most 10 %).

With ``require = "no-regression"``, checks 2 and 3 turn round: the
challenger must not be significantly worse than the champion (and, if
``max_regression`` is set, score at most that much below it). That is the rule for shipping refits, which are
fresher than the gated candidate by a whole holdout (``gate_checks``).

With no champion yet, an eligible challenger passes. The result is a
decision record (every check, the p-value, the improvement, the guards) that
``shadow promote`` stores with the history row; ``--force --reason`` records
an override as ``forced``. The gate never changes anything itself.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from selection.ranking.eligibility import violations
from selection.errors import ConfigError, GateRefused, PromotionError, ShadowError
from selection.gate.checks import (
    REQUIREMENTS, check_entry as _check, comparison_checks, guard_checks, result_summary,
)
from selection.leaderboard.frame import sweep_policy
from selection.gate.paired import load_holdout, rows_trained_on, score
from selection.channels.promotion import artifact_for, current, default_who, promote
from selection.ranking.policies import METRIC_DIRECTIONS, RankingPolicy
from selection.records import DEFAULT_CHANNEL, HOST_DEVICE, CandidateRecord, PromotionRecord, utc_now
from selection.gate.stats import ALTERNATIVES
from selection.store import Store
from selection.store.rows import extra_columns
from selection.validation import check_known_keys


@dataclass(frozen=True)
class GatePolicy:
    """Thresholds of the gate; build from a sweep file with :func:`gate_from_config`."""

    min_improvement: float = 0.0
    alpha: float = 0.05
    alternative: str = "greater"
    #: metric -> the most it may get worse, in percent of the champion's value.
    guards: Mapping[str, float] = field(default_factory=lambda: {"latency_ms": 10.0})
    #: "improvement" (significantly better) or "no-regression" (not significantly worse and,
    #: if set, at most ``max_regression`` lower): see ``gate_checks.comparison_checks``.
    require: str = "improvement"
    max_regression: float | None = None

    def __post_init__(self) -> None:
        if not _number(self.min_improvement) or not 0 <= self.min_improvement <= 1:
            raise ConfigError(f"[gate] min_improvement must be a number in [0, 1] (absolute "
                              f"accuracy); got {self.min_improvement!r}; e.g. 0.01")
        if not _number(self.alpha) or not 0 < self.alpha < 1:
            raise ConfigError(f"[gate] alpha must be a number in (0, 1); got {self.alpha!r}; e.g. 0.05")
        if self.require not in REQUIREMENTS:
            raise ConfigError(f"[gate] require must be one of {', '.join(REQUIREMENTS)}; got "
                              f"{self.require!r}; e.g. \"no-regression\" when shipping refits")
        if self.max_regression is not None and (
                not _number(self.max_regression) or not 0 <= self.max_regression <= 1):
            raise ConfigError(f"[gate] max_regression must be a number in [0, 1] (absolute "
                              f"accuracy); got {self.max_regression!r}; e.g. 0.01")
        if self.alternative not in ALTERNATIVES:
            raise ConfigError(f"[gate] alternative must be one of {', '.join(ALTERNATIVES)}; "
                              f"got {self.alternative!r}")
        if not isinstance(self.guards, Mapping):
            raise ConfigError(f"[gate] guards must be a table metric = max % worse; got {self.guards!r}")
        for metric, pct in self.guards.items():
            if metric not in METRIC_DIRECTIONS:
                raise ConfigError(f"[gate.guards] metric must be one of {', '.join(METRIC_DIRECTIONS)}; "
                                  f"got {metric!r}")
            if not _number(pct) or pct < 0:
                raise ConfigError(f"[gate.guards] {metric} must be a percentage >= 0; got {pct!r}")

    def as_dict(self) -> dict[str, Any]:
        return {"min_improvement": self.min_improvement, "alpha": self.alpha,
                "alternative": self.alternative, "test": "mcnemar-exact",
                "guards": dict(self.guards), "require": self.require,
                "max_regression": self.max_regression}


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


#: A champion that trained on more than this share of the holdout rows cannot be judged there
#: (a little slack for rows that merely repeat, e.g. identical images).
MAX_SEEN_SHARE = 0.01

_GATE_KEYS = ("min_improvement", "alpha", "alternative", "guards", "require", "max_regression")


def gate_from_config(table: Mapping[str, Any], where: str) -> GatePolicy:
    """A GatePolicy from a ``[gate]`` TOML table; unknown keys are errors."""
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where} must be a table of gate settings; got {table!r}")
    check_known_keys(table, _GATE_KEYS, where)
    values = dict(table)
    if "guards" in values and isinstance(values["guards"], Mapping):
        values["guards"] = dict(values["guards"])
    try:
        return GatePolicy(**values)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def evaluate_gate(
    store: Store, candidate_id: str, *, device: str = HOST_DEVICE,
    channel: str = DEFAULT_CHANNEL, ranking: RankingPolicy | str | None = None,
    gate: GatePolicy | None = None,
) -> dict[str, Any]:
    """The gate's decision record for promoting ``candidate_id`` on ``device`` into ``channel``.

    Raises NotFoundError for an unknown candidate; every other problem is a
    failed check in the record (``passed`` False), never an exception, so a
    dry run can always show why.
    """
    challenger = store.get_candidate(candidate_id)
    sweep = store.get_sweep(challenger.sweep_id)
    policy = sweep_policy(sweep, ranking)
    if gate is None:
        table = sweep.config.get("gate")
        gate = GatePolicy() if table is None else gate_from_config(table, f"[gate] of sweep {sweep.sweep_id!r}")
    result = challenger.device(device)
    decision: dict[str, Any] = {
        "passed": False, "forced": False, "channel": channel, "device": device,
        "decided_at": utc_now().isoformat(), "ranking_policy": policy.as_dict(),
        "gate_policy": gate.as_dict(), "challenger": result_summary(challenger, result),
        "champion": None, "holdout": None, "test": None, "improvement": None, "guards": [],
    }
    checks = [_constraints(challenger, result, device, policy)]
    if challenger.refit_of:
        checks.append(_check(
            "refit", False,
            f"candidate {candidate_id!r} is a refit of {challenger.refit_of!r}: it trained on this "
            "holdout, so its scores there are in-sample and cannot be gated; promote "
            f"{challenger.refit_of} with --refit instead"))
    now = current(store, channel)
    if now is None:
        checks.append(_check("champion", True, f"channel {channel!r} has no champion yet: an "
                                               "eligible challenger passes"))
    elif result is not None and checks[0]["passed"]:
        checks.extend(_versus(store, challenger, device, now, sweep, gate, decision))
    decision["checks"] = checks
    decision["passed"] = all(c["passed"] for c in checks)
    decision["reasons"] = [c["detail"] for c in checks if not c["passed"]]
    return decision


def _constraints(candidate: CandidateRecord, result: Any, device: str, policy: RankingPolicy) -> dict[str, Any]:
    if result is None:
        ran = ", ".join(d.device for d in candidate.devices) or "none"
        return _check("constraints", False, f"no result on device {device!r} (ran on: {ran})")
    row = {"status": "ok" if candidate.status == result.status == "ok" else "failed",
           "error": result.error or candidate.error, "accuracy": result.accuracy,
           "latency_ms": result.latency_ms, "size_bytes": result.size_bytes,
           "host_latency_p50_ms": result.host_latency_p50_ms,
           "host_latency_p99_ms": result.host_latency_p99_ms,
           "train_seconds": candidate.train_seconds, **extra_columns(result.extra)}
    row["device_ineligible_reason"] = row.pop("ineligible_reason")
    row["device_eligible"] = row.pop("device_eligible")
    why = violations(pd.DataFrame([row]), policy)[0]
    if why is None:
        return _check("constraints", True, f"meets the ranking policy {policy.name!r}")
    return _check("constraints", False, f"breaks the ranking policy {policy.name!r}: {why}")


def _versus(store: Store, challenger: CandidateRecord, device: str, now: Any, sweep: Any,
            gate: GatePolicy, decision: dict[str, Any]) -> list[dict[str, Any]]:
    """The checks against the champion; fills the decision's champion/test/improvement/guards."""
    champion = store.get_candidate(now.candidate_id)
    result = challenger.device(device)
    decision["champion"] = {**result_summary(champion, champion.device(now.device)),
                            "device": now.device, "sha256": now.sha256, "history_id": now.history_id}
    if now.candidate_id == challenger.candidate_id and now.sha256 == artifact_for(challenger, result):
        return [_check("champion", False, f"candidate {challenger.candidate_id!r} is already the "
                                          f"model of channel {now.channel!r}; nothing to promote")]
    if champion.refit_of == challenger.candidate_id:
        return [_check("champion", False, f"candidate {challenger.candidate_id!r} is already in "
                                          f"channel {now.channel!r} as its refit "
                                          f"{champion.candidate_id!r}; nothing to promote")]
    try:
        holdout = load_holdout(store, sweep)
        seen = rows_trained_on(store, champion, holdout)
        if seen > MAX_SEEN_SHARE * len(holdout.labels):
            return [_check(
                "champion holdout", False,
                f"the champion {champion.candidate_id!r} is a refit that trained on {seen} of "
                f"these {len(holdout.labels)} holdout rows, so it cannot be judged on them; "
                "gate challengers from a sweep whose holdout is newer than the data the "
                "champion was refit on")]
        mine = score(store, challenger, device, artifact_for(challenger, result) or "", sweep, holdout)
        theirs = score(store, champion, now.device, now.sha256, store.get_sweep(champion.sweep_id), holdout)
    except ShadowError as exc:
        return [_check("paired scoring", False, " ".join(str(exc).split()))]
    labels = holdout.labels
    decision["holdout"] = {"sweep_id": holdout.sweep_id, "data_sha256": holdout.data_sha256,
                           "rows": int(len(labels))}
    decision["champion"].update(rescored=theirs.rescored, scored_by=theirs.source,
                                accuracy_on_holdout=theirs.accuracy(labels))
    decision["challenger"].update(scored_by=mine.source, accuracy_on_holdout=mine.accuracy(labels))
    checks = comparison_checks(gate, mine.predictions == labels, theirs.predictions == labels, decision)
    decision["guards"] = guard_checks(gate.guards, challenger, result, champion, device, now.device)
    checks.extend(_check(f"guard {g['metric']}", g["status"] != "fail", g["detail"])
                  for g in decision["guards"])
    return checks


def force_decision(decision: Mapping[str, Any], reason: str, who: str | None = None) -> dict[str, Any]:
    """``decision`` marked as overridden by a person: recorded, never silent."""
    if not reason or not reason.strip():
        raise ConfigError("--force needs --reason TEXT saying why the gate is overridden; "
                          'got no reason; e.g. --force --reason "hotfix for the storm season"')
    forced = dict(decision)
    forced.update(forced=True, forced_reason=reason, forced_by=who, gate_passed=decision.get("passed"))
    return forced


def promote_through_gate(
    store: Store, candidate_id: str, *, device: str = HOST_DEVICE,
    channel: str = DEFAULT_CHANNEL, ranking: RankingPolicy | str | None = None,
    gate: GatePolicy | None = None, reason: str | None = None, who: str | None = None,
    force: bool = False, refit: Callable[[str], str] | None = None,
) -> PromotionRecord:
    """Promote ``candidate_id`` only if the gate passes; the decision is stored with it.

    Raises GateRefused (with the decision) when the gate refuses and ``force``
    is off; ``force`` needs a ``reason`` and is recorded as forced. This is
    the one path both ``shadow promote`` and scripts use.

    ``refit``, if given, is called with ``candidate_id`` once the gate has
    passed and returns the id of a stored refit of it (trained on its slice
    plus the holdout, e.g. ``shadow.sweep.refit.refit_candidate``); that refit is
    what ships, on the parent's decision, which records it. Nothing is trained
    when the gate refuses.
    """
    decision = evaluate_gate(store, candidate_id, device=device, channel=channel,
                             ranking=ranking, gate=gate)
    if not decision["passed"] and not force:
        raise GateRefused(
            f"the gate refused {candidate_id} for channel {channel!r}: "
            f"{'; '.join(decision['reasons'])}; nothing was changed; see "
            "`shadow promote ... --dry-run` for every check, or override with "
            "--force --reason TEXT (recorded as forced)",
            decision,
        )
    if force:
        decision = force_decision(decision, reason or "", who or default_who())
    shipped = candidate_id
    if refit is not None:
        shipped = refit(candidate_id)
        decision = {**decision, "refit": _refit_summary(store, candidate_id, shipped)}
    return promote(store, shipped, device=device, channel=channel, who=who,
                   reason=reason, decision=decision)


def _refit_summary(store: Store, parent_id: str, refit_id: str) -> dict[str, Any]:
    """What the decision records about the refit that ships; PromotionError if it is not one."""
    record = store.get_candidate(refit_id)
    if record.refit_of != parent_id:
        raise PromotionError(
            f"the refit step returned {refit_id!r}, which is not a refit of {parent_id!r} "
            f"(its lineage says: {record.refit_of or 'not a refit'}); nothing was promoted"
        )
    return {"of": parent_id, "candidate_id": refit_id, **(record.refit or {})}


__all__ = ["GatePolicy", "evaluate_gate", "force_decision", "gate_from_config", "promote_through_gate"]
