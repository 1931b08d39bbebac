"""Governance for ``mode = "propose"``: the pending proposals, and approving or rejecting one.

The controller stores a ``proposal`` event (its evidence: ``{"refit", "decision"}``, the gate's
decision as JSON) instead of promoting. A person settles it with ``shadow approve ID`` or
``shadow reject ID``, which store an ``approval`` or ``rejection`` event naming it in their
evidence (``{"proposal_id", "who", "why"}``).

A proposal is **pending** while all of these hold:

- no ``approval`` or ``rejection`` event names it (it is settled once, for good);
- no newer ``proposal`` of its channel exists (the newest one supersedes it: it judged on newer
  data);
- the channel still serves the model the gate judged against (the decision's champion history
  row, or still no model at all). A promotion or rollback since then, by the controller or by
  hand, makes the decision stale: it compared the challenger with a model no longer serving.

Approving verifies the candidate with :func:`~selection.channels.promotion.verify_promotion`
first, then promotes it with the stored decision (the history row carries it; the gate does not
judge again) and stores the ``approval`` event naming the new history row in the same
transaction (``promote``'s ``event`` hook): both commit or neither does. Once it has, the
channel has moved, so the proposal is settled and stale twice over: a second ``approve``
refuses instead of promoting twice.

Library code: it never prints. Anything that is not a pending proposal is a
:class:`ProposalError` (one line, the fix, nothing changed).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from selection.errors import NotFoundError, ShadowError
from selection.records import EventRecord

if TYPE_CHECKING:
    from selection.gate.record import GateDecision
    from selection.records import PromotionRecord
    from selection.store import Store

__all__ = ["ProposalError", "Settled", "approve", "pending_proposals", "reject"]

#: Events that settle a proposal (their evidence names it as ``proposal_id``).
SETTLING = ("approval", "rejection")
LIST_HINT = "`shadow events --kind proposal approval rejection` shows them"


class ProposalError(ShadowError, ValueError):
    """The event named is not a pending proposal (settled, superseded, stale, not a proposal)."""


@dataclass(frozen=True)
class Settled:
    """What approving or rejecting a proposal stored: the event, and the promotion if any."""

    proposal: EventRecord
    event: EventRecord
    promotion: PromotionRecord | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "proposal_id": self.proposal.event_id, "channel": self.proposal.channel,
            "candidate_id": self.proposal.candidate_id, "decision": self.event.kind,
            "event_id": self.event.event_id, "who": self.event.evidence.get("who"),
            "why": self.event.evidence.get("why"),
        }
        if self.promotion is not None:
            out.update(promoted_id=self.promotion.candidate_id,
                       history_id=self.promotion.history_id, device=self.promotion.device,
                       previous_candidate_id=self.promotion.previous_candidate_id,
                       sha256=self.promotion.sha256)
        return out


def pending_proposals(store: Store, channel: str | None = None) -> list[EventRecord]:
    """The proposals still awaiting a decision (see the module), newest first."""
    events = store.list_events(channel=channel, kinds=["proposal", *SETTLING])
    settled = {_proposal_id(e) for e in events if e.kind in SETTLING}
    newest: dict[str, int] = {}
    for event in events:  # newest first: the first proposal seen per channel is its newest
        if event.kind == "proposal":
            newest.setdefault(event.channel, _id(event))
    return [e for e in events
            if e.kind == "proposal" and _id(e) not in settled
            and newest[e.channel] == _id(e) and _stale_reason(store, e) is None]


def approve(store: Store, proposal_id: int, who: str | None = None, reason: str | None = None,
            *, refit: Callable[[str], str] | None = None) -> Settled:
    """Promote pending proposal ``proposal_id``'s candidate with its stored decision.

    ``refit`` (given when the proposal says ``refit``: the CLI passes the sweep's refit step)
    is called with the candidate id after the checks and returns a stored refit of it, which
    ships instead, on the parent's decision. Raises ProposalError or NotFoundError before
    anything changes; promote's own errors (a bad artifact, ...) also change nothing.
    """
    from selection.channels.promotion import default_who, verify_promotion
    from selection.gate.decision import promote_through_gate

    proposal = pending(store, proposal_id)
    decision = _decision(proposal)
    assert proposal.candidate_id is not None  # checked by pending()
    verify_promotion(store, proposal.candidate_id, device=decision.device,
                     channel=proposal.channel)
    who = who or default_who()
    parent = proposal.candidate_id

    def approval(record: PromotionRecord) -> EventRecord:
        return EventRecord(
            channel=proposal.channel, kind="approval", data_version=proposal.data_version,
            sweep_id=proposal.sweep_id, candidate_id=record.candidate_id,
            history_id=record.history_id,
            reason=f"{who} approved proposal {proposal_id}: promoted {record.candidate_id} into "
                   f"channel {proposal.channel!r}" + (f" ({_why(reason)})" if _given(reason) else ""),
            evidence={"proposal_id": proposal_id, "who": who, "why": _why(reason),
                      "previous_candidate_id": record.previous_candidate_id,
                      "sha256": record.sha256,
                      "refit_of": parent if refit is not None else None})

    # The stored decision ships (the gate does not judge again); the approval event commits in
    # promote's transaction, with the history row it names.
    record = promote_through_gate(store, parent, device=decision.device, channel=proposal.channel,
                                  who=who, reason=_promotion_reason(proposal_id, reason),
                                  refit=refit, decision=decision, event=approval)
    event = next(e for e in store.list_events(channel=proposal.channel, kinds="approval",
                                              since_id=proposal_id)
                 if _proposal_id(e) == proposal_id)
    return Settled(proposal, event, record)


def reject(store: Store, proposal_id: int, who: str | None = None,
           reason: str | None = None) -> Settled:
    """Settle pending proposal ``proposal_id`` as rejected; no channel changes."""
    from selection.channels.promotion import default_who

    proposal = pending(store, proposal_id)
    who = who or default_who()
    event = store.append_event(EventRecord(
        channel=proposal.channel, kind="rejection", data_version=proposal.data_version,
        sweep_id=proposal.sweep_id, candidate_id=proposal.candidate_id,
        reason=f"{who} rejected proposal {proposal_id} ({proposal.candidate_id} for channel "
               f"{proposal.channel!r})" + (f": {_why(reason)}" if _given(reason) else ""),
        evidence={"proposal_id": proposal_id, "who": who, "why": _why(reason)}))
    return Settled(proposal, event)


def pending(store: Store, proposal_id: int) -> EventRecord:
    """Event ``proposal_id`` if it is a pending proposal; else the one-line error saying why."""
    later = store.list_events(since_id=proposal_id - 1) if proposal_id > 0 else []
    event = next((e for e in later if e.event_id == proposal_id), None)
    if event is None:
        raise NotFoundError(f"no event {proposal_id} in this store; pass the id of a pending "
                            f"proposal ({LIST_HINT}); nothing was changed")
    if event.kind != "proposal" or event.candidate_id is None:
        raise ProposalError(f"event {proposal_id} is a {event.kind!r} event, not a proposal; "
                            f"pass a proposal's id ({LIST_HINT}); nothing was changed")
    ours = [e for e in later if e.channel == event.channel and _id(e) > proposal_id]
    done = next((e for e in ours if e.kind in SETTLING and _proposal_id(e) == proposal_id), None)
    if done is not None:
        verb = "approved" if done.kind == "approval" else "rejected"
        raise ProposalError(
            f"proposal {proposal_id} was already {verb} by {done.evidence.get('who')} (event "
            f"{done.event_id}); a proposal is settled once; nothing was changed; see "
            f"`shadow history --channel {event.channel}` for what serves now")
    newer = next((e for e in ours if e.kind == "proposal"), None)
    if newer is not None:
        raise ProposalError(
            f"proposal {proposal_id} is superseded by the newer proposal {newer.event_id} of "
            f"channel {event.channel!r}; only the newest proposal can be settled; nothing was "
            f"changed; approve or reject {newer.event_id} instead")
    stale = _stale_reason(store, event)
    if stale is not None:
        raise ProposalError(
            f"proposal {proposal_id} is stale: {stale}, so its gate decision no longer holds; "
            "nothing was changed; let the controller sweep and gate again (`shadow watch "
            "CONFIG --once`) or promote by hand with `shadow promote`")
    return event


def _stale_reason(store: Store, proposal: EventRecord) -> str | None:
    """Why ``proposal``'s channel no longer serves what its gate judged against, or None."""
    from selection.channels.promotion import current

    judged = _decision(proposal).champion
    judged_row = None if judged is None else judged.history_id
    now = current(store, proposal.channel)
    now_row = None if now is None else now.history_id
    if now_row == judged_row:
        return None
    was = "no model" if judged_row is None else f"history row {judged_row}"
    return (f"channel {proposal.channel!r} changed since the gate judged it (it had {was}, "
            f"now history row {now_row})" if now_row is not None else
            f"channel {proposal.channel!r} changed since the gate judged it (it had {was})")


def _decision(proposal: EventRecord) -> GateDecision:
    from selection.gate.record import GateDecision

    data = proposal.evidence.get("decision")
    if not isinstance(data, dict):
        raise ProposalError(f"proposal {proposal.event_id} stores no gate decision in its "
                            "evidence, so it cannot be approved; reject it and promote by hand "
                            "with `shadow promote`")
    return GateDecision.from_json(data)


def _promotion_reason(proposal_id: int, reason: str | None) -> str:
    return f"approved proposal {proposal_id}" + (f": {_why(reason)}" if _given(reason) else "")


def _given(reason: str | None) -> bool:
    return bool(reason and reason.strip())


def _why(reason: str | None) -> str | None:
    return " ".join(reason.split()) if reason and reason.strip() else None


def _id(event: EventRecord) -> int:
    assert event.event_id is not None  # events read from the store carry their id
    return event.event_id


def _proposal_id(event: EventRecord) -> int | None:
    value = event.evidence.get("proposal_id")
    return value if isinstance(value, int) and not isinstance(value, bool) else None
