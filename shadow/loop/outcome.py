"""What one pass of the controller did, as a frozen record (the CLI renders it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["PassResult"]


@dataclass(frozen=True)
class PassResult:
    """What one pass did. ``action``: none, already_swept, swept, resumed or recovered.

    ``recovered``: a pass a stopped controller left after its sweep finished (the gate, then
    the promotion or proposal, run now) or after its gate passed (the promotion or proposal).
    """

    channel: str
    mode: str
    dataset: str
    data_version: str
    rows: int
    action: str
    #: The triggers that fired (their JSON form), stored as events only when a sweep followed.
    fired: tuple[dict[str, Any], ...] = ()
    champion_id: str | None = None
    live_correct: int = 0
    live_total: int = 0
    sweep_id: str | None = None
    challenger_id: str | None = None
    gate_passed: bool | None = None
    gate_reasons: tuple[str, ...] = ()
    #: The candidate that now serves the channel after this pass's promotion (a refit, if any).
    promoted_id: str | None = None
    history_id: int | None = None
    proposal_event_id: int | None = None
    #: Ids of the events this pass stored, in order.
    event_ids: tuple[int, ...] = ()
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "channel": self.channel, "mode": self.mode, "dataset": self.dataset,
            "data_version": self.data_version, "rows": self.rows, "action": self.action,
            "fired": [dict(f) for f in self.fired], "champion_id": self.champion_id,
            "live_correct": self.live_correct, "live_total": self.live_total,
            "sweep_id": self.sweep_id, "challenger_id": self.challenger_id,
            "gate_passed": self.gate_passed, "gate_reasons": list(self.gate_reasons),
            "promoted_id": self.promoted_id, "history_id": self.history_id,
            "proposal_event_id": self.proposal_event_id, "event_ids": list(self.event_ids),
            "detail": self.detail,
        }
