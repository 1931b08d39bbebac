"""After a sweep: pick its challenger, gate it against the champion, then promote or propose.

The challenger is the sweep's rank 1 under its own ``[ranking]`` policy, or with
``[watch.selection] policy = "track-record"`` the pick of the expert with the best record
(:mod:`shadow.loop.track_record`), or with ``policy = "ensemble"`` the sweep's ensemble of its
top candidates (``[ensemble]``; rank 1 when the sweep has no eligible ensemble, said so). Why
serve the ensemble even where a member ranks above it: the members are ranked on the very
holdout the ensemble is scored on, so the member's lead there is mostly that holdout's luck,
while the vote of models trained on different windows tends to keep its edge on the rows that
come next (docs/benchmarks.md: up on NOAA in every run, a tie on two short-period streams).

The gate's decision is stored as a ``gate`` event (with the selection's record and reason); on
a pass, ``mode = "auto"`` promotes (refit first when configured) with the ``promotion`` event
in the promotion's own transaction, and ``mode = "propose"`` stores a ``proposal`` event instead.
Split from the controller, which decides *whether* to sweep; this module decides what the
sweep's result changes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from selection.errors import NotFoundError, ShadowError
from selection.records import EventRecord, PromotionRecord
from shadow.loop.journal import REASON_PREFIX
from shadow.loop.outcome import PassResult
from shadow.loop.pass_work import Note, PassWork

if TYPE_CHECKING:
    import pandas as pd

    from selection.gate.record import GateDecision
    from selection.store import Store
    from shadow.data.loader import Dataset
    from shadow.sweep.watch_config import WatchConfig

__all__ = ["act", "ensemble_challenger", "gate_and_act"]


def gate_and_act(work: PassWork, result: PassResult, watch: WatchConfig, sweep_id: str,
                 dataset: Dataset, note: Note) -> PassResult:
    """Gate the sweep's challenger against the champion; promote (auto) or propose on a pass.

    The challenger is the sweep's rank 1 under its own [ranking] policy, or with
    ``[watch.selection] policy = "track-record"`` the pick of the expert with the best record
    (:mod:`shadow.loop.track_record`), or with ``policy = "ensemble"`` the sweep's ensemble;
    the choice and its reason are stored with the gate event as ``selection``.
    """
    from selection.gate.decision import evaluate_gate
    from selection.leaderboard.frame import best_candidate

    store, channel = work.store, work.channel
    chosen: dict[str, Any] = {"policy": "holdout"}
    try:
        if watch.selection.policy == "track-record":
            from shadow.loop.track_record import choose_challenger

            challenger, record = choose_challenger(
                store, channel, sweep_id, dataset.features, dataset.labels, dataset.classes,
                discount=watch.selection.discount, min_record=watch.selection.min_record)
            chosen = record.to_json()
            note(f"track record: {record.reason}")
        elif watch.selection.policy == "ensemble":
            challenger, chosen = ensemble_challenger(store, sweep_id)
            note(f"selection: {chosen['reason']}")
        else:
            challenger = best_candidate(store, sweep=sweep_id)
    except NotFoundError as exc:  # no eligible candidate: the champion keeps serving
        work.event("error", f"no challenger from sweep {sweep_id}: the champion keeps serving",
                   sweep_id=sweep_id, evidence={"error": " ".join(str(exc).split())})
        note(f"no eligible candidate in sweep {sweep_id}: nothing to gate")
        return replace(result, gate_passed=False, detail="no eligible candidate")
    decision = evaluate_gate(store, challenger, channel=channel)
    verdict = "passed" if decision.passed else "refused: " + "; ".join(decision.reasons)
    work.event("gate", f"the gate {verdict}", sweep_id=sweep_id, candidate_id=challenger,
               evidence={**decision.to_json(), "selection": chosen})
    note(f"gate on {challenger}: {verdict}")
    result = replace(result, challenger_id=challenger, gate_passed=decision.passed,
                     gate_reasons=tuple(decision.reasons))
    if not decision.passed:
        return result
    return act(work, result, watch, sweep_id, challenger, decision.to_json(), decision, note)


def ensemble_challenger(store: Store, sweep_id: str) -> tuple[str, dict[str, Any]]:
    """The sweep's eligible ensemble and why; its rank 1 when it has none (NotFoundError if neither).

    Judged on the host, as the gate and rank 1 are: an ensemble ranked on an edge device but not
    eligible on the host is not taken.
    """
    from selection.leaderboard.frame import best_candidate, leaderboard
    from selection.records import HOST_DEVICE
    from shadow.sweep.ensemble import ENSEMBLE_FAMILY

    frame = leaderboard(store, sweep=sweep_id, device=HOST_DEVICE)
    ours = frame[frame["family"] == ENSEMBLE_FAMILY]
    ranked = ours[ours["rank"].notna()].sort_values("rank")
    if not ranked.empty:
        row = ranked.iloc[0]
        return str(row["candidate_id"]), {
            "policy": "ensemble", "expert": "ensemble",
            "reason": f"the sweep's ensemble {row['candidate_id']} (rank {int(row['rank'])} on "
                      "the holdout its members were chosen on)"}
    challenger = best_candidate(store, sweep=sweep_id)
    return challenger, {"policy": "ensemble", "expert": "holdout",
                        "reason": f"rank 1 of sweep {sweep_id}: {_why_no_ensemble(ours)}"}


def _why_no_ensemble(rows: pd.DataFrame) -> str:
    """Why a sweep's leaderboard rows of family ensemble (maybe none) offer no eligible one."""
    for column, what in (("error", "failed"), ("ineligible_reason", "is not eligible")):
        reasons = [str(e) for e in rows[column] if isinstance(e, str) and e]
        if reasons:
            return f"its ensemble {what} ({' '.join(reasons[0].split())[:200]})"
    return "it has no eligible ensemble"


def act(work: PassWork, result: PassResult, watch: WatchConfig, sweep_id: str, challenger: str,
        evidence: dict[str, Any], decision: GateDecision | None, note: Note) -> PassResult:
    """After a passed gate: promote (auto) or store a proposal (propose).

    ``decision`` None (a restarted controller acting on a stored gate event): the gate judges
    again inside the promotion, against the champion of now. A history row the controller
    already made for this challenger (or its refit) means it was promoted: nothing is repeated.
    """
    from selection.channels.promotion import history
    from selection.gate.decision import promote_through_gate

    store, channel = work.store, work.channel
    if watch.mode == "propose":
        proposal = work.event(
            "proposal", f"{challenger} passed the gate for channel {channel!r}; awaiting a "
            "decision (mode = propose)", sweep_id=sweep_id, candidate_id=challenger,
            evidence={"refit": watch.refit, "decision": evidence})
        note(f"proposal {proposal.event_id}: {challenger} awaits approval")
        return replace(result, proposal_event_id=proposal.event_id)
    done = None if decision is not None else next(
        (r for r in history(store, channel=channel) if r.action == "promote"
         and (r.candidate_id == challenger
              or (r.decision.get("refit") or {}).get("of") == challenger)), None)
    if done is not None:
        note(f"{challenger} was already promoted (history row {done.history_id}): nothing to do")
        return replace(result, promoted_id=done.candidate_id, history_id=done.history_id,
                       detail="already promoted")
    refit = _refit_step(store, note) if watch.refit else None
    reason = f"{REASON_PREFIX}sweep {sweep_id} on data version {work.data_version[:12]}"

    def event(record: PromotionRecord) -> EventRecord:
        # Appended inside promote's transaction: the history row and this event commit together.
        return EventRecord(
            channel=channel, kind="promotion", data_version=work.data_version,
            reason=f"promoted {record.candidate_id} into channel {channel!r}",
            sweep_id=sweep_id, candidate_id=record.candidate_id, history_id=record.history_id,
            evidence={"previous_candidate_id": record.previous_candidate_id,
                      "sha256": record.sha256, "refit_of": challenger if refit else None})
    work.check()
    try:
        record = promote_through_gate(store, challenger, channel=channel, refit=refit,
                                      reason=reason, decision=decision, event=event)
    except ShadowError as exc:  # GateRefused (a race), a refit that failed its checks, ...
        work.event("error", f"promotion of {challenger} refused: nothing changed",
                   sweep_id=sweep_id, candidate_id=challenger,
                   evidence={"error": " ".join(str(exc).split())})
        note(f"promotion refused: {exc}")
        return replace(result, detail=" ".join(str(exc).split()))
    stored = store.list_events(channel=channel, kinds="promotion", limit=1)
    if stored and stored[0].history_id == record.history_id and stored[0].event_id is not None:
        work.events.append(stored[0].event_id)
    note(f"promoted {record.candidate_id} into channel {channel!r} (history "
         f"{record.history_id})")
    return replace(result, promoted_id=record.candidate_id, history_id=record.history_id)


def _refit_step(store: Store, note: Note) -> Callable[[str], str]:
    from shadow.sweep.refit import refit_candidate

    def refit(parent_id: str) -> str:
        note(f"gate passed: refitting {parent_id} on its slice plus the holdout")
        return refit_candidate(store, parent_id).candidate_id
    return refit
