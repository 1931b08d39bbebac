"""The gate's individual checks: model summaries, constraints, the accuracy comparison, guards.

Each function returns typed pieces of the decision (``selection.gate.record``);
``selection.gate.decision`` assembles them. Reads ``GatePolicy`` from
``selection.gate.policy`` (the decision imports this module, never the reverse).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from selection.channels.promotion import artifact_for
from selection.gate.policy import GatePolicy
from selection.gate.record import GateCheck, GuardResult, Improvement, ModelSummary, PairedTest
from selection.gate.stats import mcnemar_exact
from selection.ranking.eligibility import Constraints, row_violations
from selection.ranking.policies import METRIC_DIRECTIONS
from selection.records import CandidateRecord, DeviceResult
from selection.store.rows import extra_columns


def check_entry(name: str, passed: bool, detail: str) -> GateCheck:
    """One entry of a decision's ``checks``."""
    return GateCheck(name, passed, detail)


def board_row(candidate: CandidateRecord, result: DeviceResult) -> dict[str, Any]:
    """The leaderboard columns of ``candidate`` on ``result.device``, as the store writes them.

    What the eligibility rules read (``selection.ranking.eligibility``), built
    from the records with the store's own codec, so the gate and a refit judge
    a model by the same columns the leaderboard's SQL does.
    """
    row = {"status": "ok" if candidate.status == result.status == "ok" else "failed",
           "error": result.error or candidate.error, "accuracy": result.accuracy,
           "latency_ms": result.latency_ms, "size_bytes": result.size_bytes,
           "host_latency_p50_ms": result.host_latency_p50_ms,
           "host_latency_p99_ms": result.host_latency_p99_ms,
           "train_seconds": candidate.train_seconds, **extra_columns(result.extra)}
    row["device_ineligible_reason"] = row.pop("ineligible_reason")
    return row


def constraints_check(candidate: CandidateRecord, result: DeviceResult | None, device: str,
                      policy: Constraints, name: str) -> GateCheck:
    """Whether ``candidate`` is eligible on ``device`` under the ranking policy ``policy`` (``name``)."""
    if result is None:
        ran = ", ".join(d.device for d in candidate.devices) or "none"
        return GateCheck("constraints", False, f"no result on device {device!r} (ran on: {ran})")
    broken = row_violations(board_row(candidate, result), policy)
    if not broken:
        return GateCheck("constraints", True, f"meets the ranking policy {name!r}")
    why = "; ".join(v.message for v in broken)
    return GateCheck("constraints", False, f"breaks the ranking policy {name!r}: {why}")


def comparison_checks(
    gate: GatePolicy, mine: np.ndarray, theirs: np.ndarray,
) -> tuple[list[GateCheck], Improvement, PairedTest]:
    """The accuracy checks of ``gate`` on per-row outcomes of the same rows.

    ``mine``/``theirs`` are booleans, one per holdout row: challenger / champion
    right. ``require = "improvement"``: the challenger's accuracy beats the
    champion's (by at least ``min_improvement``) and an exact McNemar test says
    it is significantly better. ``"no-regression"``: it is not significantly
    worse (the same test, the other way round) and, if ``max_regression`` is
    set, scores at most that much below the champion. The second suits shipping refits: the
    challenger is judged as trained, but what ships is its refit, a year (one
    holdout) fresher than the champion, which the comparison cannot credit.
    Returns the two checks and the evidence for the decision's ``improvement`` and ``test``.
    """
    n = len(mine)
    gain = float(np.mean(mine)) - float(np.mean(theirs))
    scores = f"accuracy {np.mean(mine):.4f} vs champion {np.mean(theirs):.4f} on {n} holdout rows: {gain:+.4f}"
    if gate.require == "improvement":
        gain_ok = gain > 0 and gain >= gate.min_improvement
        test = mcnemar_exact(mine, theirs, gate.alternative)
        test_ok = test.p_value < gate.alpha
        gain_detail = f"{scores} (needs > 0 and >= {gate.min_improvement:g})"
        verdict = f"{'<' if test_ok else '>='} alpha {gate.alpha:g}"
        b, c, question = test.b_challenger_only, test.c_champion_only, test.alternative
    else:
        cap = gate.max_regression
        gain_ok = cap is None or gain >= -cap
        # "Is the champion better?": the challenger passes unless that is significant.
        test = mcnemar_exact(theirs, mine, "greater")
        test_ok = test.p_value >= gate.alpha
        gain_detail = f"{scores} ({'no cap on the drop' if cap is None else f'needs >= -{cap:g}'})"
        verdict = f"{'>=' if test_ok else '<'} alpha {gate.alpha:g}: " + (
            "not significantly worse" if test_ok else "significantly worse")
        b, c, question = test.c_champion_only, test.b_challenger_only, "is the champion better?"
    improvement = Improvement(float(np.mean(mine)), float(np.mean(theirs)), gain, gate.require,
                              gate.min_improvement, gate.max_regression, gain_ok)
    paired = PairedTest("mcnemar-exact", question, b, c, test.n_rows, test.p_value, gate.alpha, test_ok)
    checks = [
        GateCheck("improvement" if gate.require == "improvement" else "no regression", gain_ok, gain_detail),
        GateCheck("significance", test_ok,
                  f"exact McNemar ({question}): challenger-only right {b}, champion-only right {c}, "
                  f"p = {test.p_value:.4g} ({verdict})"),
    ]
    return checks, improvement, paired


def result_summary(candidate: CandidateRecord, result: DeviceResult | None) -> ModelSummary:
    """What the decision record says about one model."""
    return ModelSummary(
        candidate_id=candidate.candidate_id,
        sweep_id=candidate.sweep_id,
        device=None if result is None else result.device,
        accuracy=None if result is None else result.accuracy,
        latency_ms=None if result is None else result.latency_ms,
        size_bytes=None if result is None else result.size_bytes,
        sha256=None if result is None else artifact_for(candidate, result),
    )


def _metric(result: DeviceResult | None, candidate: CandidateRecord, metric: str) -> float | None:
    if metric == "train_seconds":
        return candidate.train_seconds
    if result is None:
        return None
    value = getattr(result, metric, None)
    if value is None:
        value = result.extra.get(metric)
    return None if value is None or isinstance(value, bool) else float(value)


def guard_checks(
    guards: Mapping[str, float], challenger: CandidateRecord, result: DeviceResult | None,
    champion: CandidateRecord,
    device: str, champion_device: str,
) -> tuple[GuardResult, ...]:
    """One result per guarded metric: challenger vs champion on the same device.

    The champion's figure is taken on the challenger's device when it ran
    there, else on the device it serves on (said in the detail). A guard that
    cannot be computed (a missing metric, a zero baseline) is "skipped", not
    failed, and says so: it is in the record for a person to judge.
    """
    out = []
    theirs_result = champion.device(device)
    on = device
    if theirs_result is None:
        theirs_result, on = champion.device(champion_device), champion_device
    for metric, max_pct in guards.items():
        mine = _metric(result, challenger, metric)
        theirs = _metric(theirs_result, champion, metric)
        if mine is None or theirs is None or theirs == 0:
            out.append(GuardResult(metric, mine, theirs, on, max_pct, "skipped", None,
                                   f"{metric}: not checked (challenger {mine}, champion {theirs} on {on})"))
            continue
        better_high = METRIC_DIRECTIONS[metric] == "max"
        worse = (theirs - mine if better_high else mine - theirs) / abs(theirs) * 100.0
        passed = worse <= max_pct
        out.append(GuardResult(metric, mine, theirs, on, max_pct, "pass" if passed else "fail", worse,
                               f"{metric}: {mine:g} vs champion {theirs:g} on {on} "
                               f"({worse:+.1f} % worse; allowed {max_pct:g} %)"))
    return tuple(out)


def guard_check(guard: GuardResult) -> GateCheck:
    """The check a guard result contributes (a skipped guard does not fail)."""
    return GateCheck(f"guard {guard.metric}", guard.status != "fail", guard.detail)
