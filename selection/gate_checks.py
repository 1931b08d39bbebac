"""Pieces of the gate's decision record: model summaries and guard-metric checks."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from selection.promotion import artifact_for
from selection.ranking import METRIC_DIRECTIONS
from selection.records import CandidateRecord, DeviceResult


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
