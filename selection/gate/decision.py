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
fresher than the gated candidate by a whole holdout (``checks.comparison_checks``).

With no champion yet, an eligible challenger passes. The result is a
:class:`~selection.gate.record.GateDecision` (every check, the p-value, the
improvement, the guards) that ``shadow promote`` stores with the history row;
``--force --reason`` records an override as ``forced``. The gate never
changes anything itself. Thresholds are a
:class:`~selection.gate.policy.GatePolicy` (re-exported here).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from selection.channels.champion_alias import preflight
from selection.channels.promotion import artifact_for, current, default_who, promote
from selection.errors import ConfigError, GateRefused, PromotionError, ShadowError
from selection.gate.checks import (
    comparison_checks,
    constraints_check,
    guard_check,
    guard_checks,
    result_summary,
)
from selection.gate.paired import load_holdout, rows_trained_on, score
from selection.gate.policy import GatePolicy, gate_from_config
from selection.gate.record import (
    GateCheck,
    GateDecision,
    GuardResult,
    HoldoutUsed,
    Improvement,
    ModelSummary,
    Override,
    PairedTest,
)
from selection.leaderboard.frame import sweep_policy
from selection.ranking.policies import RankingPolicy
from selection.records import (
    DEFAULT_CHANNEL,
    HOST_DEVICE,
    CandidateRecord,
    DeviceResult,
    EventRecord,
    PromotionRecord,
    SweepRecord,
    utc_now,
)
from selection.store import Store

#: A champion that trained on more than this share of the holdout rows cannot be judged there
#: (a little slack for rows that merely repeat, e.g. identical images).
MAX_SEEN_SHARE = 0.01


def evaluate_gate(
    store: Store, candidate_id: str, *, device: str = HOST_DEVICE,
    channel: str = DEFAULT_CHANNEL, ranking: RankingPolicy | str | None = None,
    gate: GatePolicy | None = None,
) -> GateDecision:
    """The gate's decision for promoting ``candidate_id`` on ``device`` into ``channel``.

    Raises NotFoundError for an unknown candidate; every other problem is a
    failed check in the decision (``passed`` False), never an exception, so a
    dry run can always show why.
    """
    challenger = store.get_candidate(candidate_id)
    sweep = store.get_sweep(challenger.sweep_id)
    policy = sweep_policy(sweep, ranking)
    if gate is None:
        table = sweep.config.get("gate")
        gate = GatePolicy() if table is None else gate_from_config(table, f"[gate] of sweep {sweep.sweep_id!r}")
    result = challenger.device(device)
    checks = [constraints_check(challenger, result, device, policy, policy.name)]
    if challenger.refit_of:
        checks.append(GateCheck(
            "refit", False,
            f"candidate {candidate_id!r} is a refit of {challenger.refit_of!r}: it trained on this "
            "holdout, so its scores there are in-sample and cannot be gated; promote "
            f"{challenger.refit_of} with --refit instead"))
    versus = _Versus(summary=result_summary(challenger, result))
    now = current(store, channel)
    if now is None:
        checks.append(GateCheck("champion", True, f"channel {channel!r} has no champion yet: an "
                                                  "eligible challenger passes"))
    elif result is not None and checks[0].passed:
        versus = _versus(store, challenger, result, now, sweep, gate)
        checks.extend(versus.checks)
    return GateDecision(
        channel=channel, device=device, decided_at=utc_now().isoformat(),
        ranking_policy=policy.as_dict(), gate_policy=gate.as_dict(), challenger=versus.summary,
        checks=tuple(checks), champion=versus.champion, holdout=versus.holdout, test=versus.test,
        improvement=versus.improvement, guards=versus.guards,
    )


@dataclass(frozen=True)
class _Versus:
    """What comparing with the champion adds to a decision (all unset when there is none)."""

    summary: ModelSummary
    checks: tuple[GateCheck, ...] = ()
    champion: ModelSummary | None = None
    holdout: HoldoutUsed | None = None
    test: PairedTest | None = None
    improvement: Improvement | None = None
    guards: tuple[GuardResult, ...] = ()


def _versus(store: Store, challenger: CandidateRecord, result: DeviceResult, now: PromotionRecord,
            sweep: SweepRecord, gate: GatePolicy) -> _Versus:
    """The checks of ``challenger`` (``result``: its run on the gated device) against the champion."""
    champion = store.get_candidate(now.candidate_id)
    device = result.device
    mine_summary = result_summary(challenger, result)
    theirs_summary = replace(result_summary(champion, champion.device(now.device)),
                             device=now.device, sha256=now.sha256, history_id=now.history_id)

    def refused(name: str, detail: str) -> _Versus:
        return _Versus(mine_summary, (GateCheck(name, False, detail),), theirs_summary)

    if now.candidate_id == challenger.candidate_id and now.sha256 == artifact_for(challenger, result):
        return refused("champion", f"candidate {challenger.candidate_id!r} is already the "
                                   f"model of channel {now.channel!r}; nothing to promote")
    if champion.refit_of == challenger.candidate_id:
        return refused("champion", f"candidate {challenger.candidate_id!r} is already in "
                                   f"channel {now.channel!r} as its refit "
                                   f"{champion.candidate_id!r}; nothing to promote")
    try:
        holdout = load_holdout(store, sweep)
        seen = rows_trained_on(store, champion, holdout)
        if seen > MAX_SEEN_SHARE * len(holdout.labels):
            return refused(
                "champion holdout",
                f"the champion {champion.candidate_id!r} is a refit that trained on {seen} of "
                f"these {len(holdout.labels)} holdout rows, so it cannot be judged on them; "
                "gate challengers from a sweep whose holdout is newer than the data the "
                "champion was refit on")
        mine = score(store, challenger, device, artifact_for(challenger, result) or "", sweep, holdout)
        theirs = score(store, champion, now.device, now.sha256, store.get_sweep(champion.sweep_id), holdout)
    except ShadowError as exc:
        return refused("paired scoring", " ".join(str(exc).split()))
    labels = holdout.labels
    checks, improvement, test = comparison_checks(gate, mine.predictions == labels, theirs.predictions == labels)
    guards = guard_checks(gate.guards, challenger, result, champion, device, now.device)
    return _Versus(
        summary=replace(mine_summary, scored_by=mine.source, accuracy_on_holdout=mine.accuracy(labels)),
        checks=(*checks, *(guard_check(g) for g in guards)),
        champion=replace(theirs_summary, rescored=theirs.rescored, scored_by=theirs.source,
                         accuracy_on_holdout=theirs.accuracy(labels)),
        holdout=HoldoutUsed(holdout.sweep_id, holdout.data_sha256, int(len(labels))),
        test=test, improvement=improvement, guards=guards,
    )


def force_decision(decision: GateDecision, reason: str, who: str | None = None) -> GateDecision:
    """``decision`` marked as overridden by a person: recorded, never silent."""
    if not reason or not reason.strip():
        raise ConfigError("--force needs --reason TEXT saying why the gate is overridden; "
                          'got no reason; e.g. --force --reason "hotfix for the storm season"')
    return replace(decision, override=Override(reason, who))


def promote_through_gate(
    store: Store, candidate_id: str, *, device: str = HOST_DEVICE,
    channel: str = DEFAULT_CHANNEL, ranking: RankingPolicy | str | None = None,
    gate: GatePolicy | None = None, reason: str | None = None, who: str | None = None,
    force: bool = False, refit: Callable[[str], str] | None = None,
    decision: GateDecision | None = None,
    event: Callable[[PromotionRecord], EventRecord] | None = None,
) -> PromotionRecord:
    """Promote ``candidate_id`` only if the gate passes; the decision is stored with it.

    Raises GateRefused (with the decision) when the gate refuses and ``force``
    is off; ``force`` needs a ``reason`` and is recorded as forced. This is
    the one path both ``shadow promote`` and scripts use.

    ``refit``, if given, is called with ``candidate_id`` once the gate has
    passed and returns the id of a stored refit of it (trained on its slice
    plus the holdout, e.g. ``shadow.sweep.refit.refit_candidate``); that refit is
    what ships, on the parent's decision, which records it. Nothing is trained
    when the gate refuses, nor when the MLflow registry the channel follows
    does not answer ``/health`` (RegistrySyncError, checked before the refit).

    ``decision``, if given, is a decision :func:`evaluate_gate` just made for
    ``candidate_id`` on ``channel`` (a caller that stored it already, such as
    the loop's controller): it is used instead of judging again. ``event`` is
    passed to :func:`~selection.channels.promotion.promote`: the event it
    returns commits with the history row.
    """
    if decision is None:
        decision = evaluate_gate(store, candidate_id, device=device, channel=channel,
                                 ranking=ranking, gate=gate)
    elif decision.challenger.candidate_id != candidate_id:
        raise ConfigError(
            f"a gate decision is passed for the candidate it judged; this one judged "
            f"{decision.challenger.candidate_id!r}, not {candidate_id!r}; pass that candidate's "
            "decision or none (the gate then judges again)")
    if not decision.passed and not force:
        raise GateRefused(
            f"the gate refused {candidate_id} for channel {channel!r}: "
            f"{'; '.join(decision.reasons)}; nothing was changed; see "
            "`shadow promote ... --dry-run` for every check, or override with "
            "--force --reason TEXT (recorded as forced)",
            decision,
        )
    if force:
        decision = force_decision(decision, reason or "", who or default_who())
    shipped = candidate_id
    if refit is not None:
        # A registry that would refuse the promotion refuses before the refit trains (seconds).
        serving = current(store, channel)
        preflight(store, channel, store.get_candidate(candidate_id),
                  outgoing=serving.candidate_id if serving else None)
        shipped = refit(candidate_id)
        decision = replace(decision, refit=_refit_summary(store, candidate_id, shipped))
    return promote(store, shipped, device=device, channel=channel, who=who,
                   reason=reason, decision=decision, event=event)


def _refit_summary(store: Store, parent_id: str, refit_id: str) -> dict[str, Any]:
    """What the decision records about the refit that ships; PromotionError if it is not one."""
    record = store.get_candidate(refit_id)
    if record.refit_of != parent_id:
        raise PromotionError(
            f"the refit step returned {refit_id!r}, which is not a refit of {parent_id!r} "
            f"(its lineage says: {record.refit_of or 'not a refit'}); nothing was promoted"
        )
    return {"of": parent_id, "candidate_id": refit_id, **(record.refit or {})}


__all__ = ["GateDecision", "GatePolicy", "evaluate_gate", "force_decision", "gate_from_config",
           "promote_through_gate"]
