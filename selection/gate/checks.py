"""Pieces of the gate's decision record: model summaries, the accuracy comparison, guard checks."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from selection.channels.promotion import artifact_for
from selection.ranking.policies import METRIC_DIRECTIONS
from selection.records import CandidateRecord, DeviceResult
from selection.gate.stats import mcnemar_exact

if TYPE_CHECKING:  # gate.py imports this module
    from selection.gate.decision import GatePolicy

#: What a challenger must show against the champion on the holdout (``[gate] require``).
REQUIREMENTS = ("improvement", "no-regression")


def check_entry(name: str, passed: bool, detail: str) -> dict[str, Any]:
    """One entry of a decision's ``checks`` list."""
    return {"check": name, "passed": passed, "detail": detail}


def comparison_checks(
    gate: GatePolicy, mine: np.ndarray, theirs: np.ndarray, decision: dict[str, Any],
) -> list[dict[str, Any]]:
    """The accuracy checks of ``gate`` on per-row outcomes of the same rows.

    ``mine``/``theirs`` are booleans, one per holdout row: challenger / champion
    right. ``require = "improvement"``: the challenger's accuracy beats the
    champion's (by at least ``min_improvement``) and an exact McNemar test says
    it is significantly better. ``"no-regression"``: it is not significantly
    worse (the same test, the other way round) and, if ``max_regression`` is
    set, scores at most that much below the champion. The second suits shipping refits: the
    challenger is judged as trained, but what ships is its refit, a year (one
    holdout) fresher than the champion, which the comparison cannot credit.
    Fills the decision's ``improvement`` and ``test`` entries.
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
    decision["improvement"] = {"challenger_accuracy": float(np.mean(mine)),
                               "champion_accuracy": float(np.mean(theirs)), "absolute": gain,
                               "require": gate.require, "min_required": gate.min_improvement,
                               "max_regression": gate.max_regression, "passed": gain_ok}
    decision["test"] = {"name": "mcnemar-exact", "alternative": question, "b_challenger_only": b,
                        "c_champion_only": c, "rows": test.n_rows, "p_value": test.p_value,
                        "alpha": gate.alpha, "passed": test_ok}
    return [
        check_entry("improvement" if gate.require == "improvement" else "no regression", gain_ok, gain_detail),
        check_entry("significance", test_ok,
               f"exact McNemar ({question}): challenger-only right {b}, champion-only right {c}, "
               f"p = {test.p_value:.4g} ({verdict})"),
    ]


def result_summary(candidate: CandidateRecord, result: DeviceResult | None) -> dict[str, Any]:
    """What the decision record says about one model (JSON values only)."""
    return {
        "candidate_id": candidate.candidate_id,
        "sweep_id": candidate.sweep_id,
        "device": None if result is None else result.device,
        "accuracy": None if result is None else result.accuracy,
        "latency_ms": None if result is None else result.latency_ms,
        "size_bytes": None if result is None else result.size_bytes,
        "sha256": None if result is None else artifact_for(candidate, result),
    }


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
) -> list[dict[str, Any]]:
    """One entry per guarded metric: challenger vs champion on the same device.

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
        entry: dict[str, Any] = {"metric": metric, "challenger": mine, "champion": theirs,
                                 "champion_device": on, "max_worse_pct": max_pct}
        if mine is None or theirs is None or theirs == 0:
            entry.update(status="skipped", worse_by_pct=None,
                         detail=f"{metric}: not checked (challenger {mine}, champion {theirs} on {on})")
        else:
            better_high = METRIC_DIRECTIONS[metric] == "max"
            worse = (theirs - mine if better_high else mine - theirs) / abs(theirs) * 100.0
            passed = worse <= max_pct
            entry.update(status="pass" if passed else "fail", worse_by_pct=worse,
                         detail=f"{metric}: {mine:g} vs champion {theirs:g} on {on} "
                                f"({worse:+.1f} % worse; allowed {max_pct:g} %)")
        out.append(entry)
    return out
