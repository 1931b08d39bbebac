"""Staged rollouts: a promotion that reaches a share of the fleet first, then widens or rolls back.

The store is the source of truth. A staged promotion is an ordinary
promotion (history row, signed version folder) plus a ``rollout`` event in
the same transaction (``start``): the plan (the canary share or device ids,
the stages, when to widen, the test's thresholds) and the history rows of
the new and the previous model. Every later step is another ``rollout``
event naming the start event's id: ``widen`` (the share grew), ``complete``
(every device), ``look`` (the canary test took one of its planned looks,
``fleet.evidence``: the looks spent so far, so a restart does not look
again), ``superseded`` (an automatic rollback refused because the channel
moved on, see :func:`roll_back`), ``rollback`` (appended in the transaction
of the rollback history row, with the evidence). :func:`load_rollout` folds them; the fleet
server reads that, so a restarted server resumes the rollout where the
events say it was. A rollout whose promotion is no longer the channel's
current row (someone promoted or rolled back by hand) is ``superseded``.

Which devices run the canary: those named, or those whose
``sha256(rollout id : device id)`` falls below the share (deterministic per
device and rollout; a device in at 10 % stays in at 50 %).
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Literal

from selection.channels import promotion
from selection.errors import ConfigError, PromotionError
from selection.fleet.evidence import Looks
from selection.records import EventRecord, PromotionRecord, utc_now
from selection.store import Store, channel_rows

State = Literal["canary", "complete", "rolled_back", "superseded"]

#: Shares a percentage rollout widens through after its first stage.
DEFAULT_STAGES = (0.5, 1.0)
DEFAULT_WIDEN_AFTER_S = 300.0
DEFAULT_MIN_LABELLED = 200
DEFAULT_MIN_PREDICTIONS = 200
DEFAULT_ALPHA = 0.01
#: Planned looks of the canary test (labelled counts 200, 400, ..., 3200 by default).
DEFAULT_MAX_LOOKS = 5
#: The events that end a rollout, and the state each leaves it in.
_CLOSING: dict[str, State] = {"complete": "complete", "rollback": "rolled_back",
                              "superseded": "superseded"}


@dataclass(frozen=True)
class RolloutPlan:
    """How a staged promotion spreads: what the user asked for with ``--canary``."""

    share: float = 0.1
    devices: tuple[str, ...] = ()
    stages: tuple[float, ...] = DEFAULT_STAGES
    widen_after_s: float = DEFAULT_WIDEN_AFTER_S
    widen_on: Literal["evidence", "time"] = "evidence"
    min_labelled: int = DEFAULT_MIN_LABELLED
    min_predictions: int = DEFAULT_MIN_PREDICTIONS
    alpha: float = DEFAULT_ALPHA
    max_looks: int = DEFAULT_MAX_LOOKS

    def __post_init__(self) -> None:
        if not (0 < self.share < 1 or (self.devices and self.share == 0)) or any(not 0 < s <= 1 for s in self.stages):
            # 100 % leaves no device on the previous model: nothing to compare the canary with.
            raise ConfigError(f"a canary share must be in (0, 100%) (the rest of the fleet keeps "
                              f"the previous model to compare with); got {self.share!r} and "
                              f"stages {self.stages!r}; e.g. --canary 10%, or promote without "
                              "--canary to ship to every device at once")
        if self.widen_on not in ("evidence", "time"):
            raise ConfigError(f"widen_on must be 'evidence' or 'time'; got {self.widen_on!r}")
        if not (math.isfinite(self.widen_after_s) and self.widen_after_s >= 0):
            raise ConfigError(f"--widen-after must be seconds >= 0; got {self.widen_after_s!r}")
        if not 1 <= self.max_looks <= 20:
            raise ConfigError(f"max_looks must be in 1..20; got {self.max_looks!r}; e.g. 5")
        if not 0 < self.alpha < 0.5 or self.min_labelled < 1 or self.min_predictions < 1:
            raise ConfigError(f"alpha must be in (0, 0.5) and the minimum counts >= 1; got "
                              f"alpha {self.alpha!r}, min_labelled {self.min_labelled!r}, "
                              f"min_predictions {self.min_predictions!r}; e.g. alpha 0.01")

    def shares(self) -> tuple[float, ...]:
        """Every stage's share; explicit devices first (share 0 of the rest), then the stages."""
        first = 0.0 if self.devices else self.share
        return (first, *sorted(s for s in set(self.stages) if s > first))

    def to_json(self) -> dict[str, Any]:
        """The plan as the start event stores it."""
        return {"share": self.share, "devices": list(self.devices), "stages": list(self.stages),
                "widen_after_s": self.widen_after_s, "widen_on": self.widen_on,
                "min_labelled": self.min_labelled, "min_predictions": self.min_predictions,
                "alpha": self.alpha, "max_looks": self.max_looks}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RolloutPlan:
        """The plan a start event stored."""
        return cls(share=float(data["share"]), devices=tuple(data.get("devices", ())),
                   stages=tuple(float(s) for s in data.get("stages", DEFAULT_STAGES)),
                   widen_after_s=float(data["widen_after_s"]), widen_on=data["widen_on"],
                   min_labelled=int(data["min_labelled"]),
                   min_predictions=int(data["min_predictions"]), alpha=float(data["alpha"]),
                   # a rollout started before planned looks: the same default
                   max_looks=int(data.get("max_looks", DEFAULT_MAX_LOOKS)))


def parse_canary(text: str) -> tuple[float, tuple[str, ...]]:
    """``--canary`` as (share, devices): ``10%`` or ``0.1``, or ``dev-1,dev-2``."""
    value = text.strip()
    match = re.fullmatch(r"(\d+(?:\.\d+)?)%", value)
    try:
        share = float(match.group(1)) / 100 if match else float(value)
    except ValueError:
        from selection.runtime.remote import check_device_id

        devices = tuple(d.strip() for d in value.split(",") if d.strip())
        if not devices:
            raise ConfigError(f"--canary must be a share (10%) or device ids (a,b); got "
                              f"{text!r}") from None
        for device in devices:
            check_device_id(device)
        return 0.0, devices
    if not 0 < share < 1:
        # 100 % has no control arm: no device keeps the previous model to compare the canary with.
        raise ConfigError(f"--canary must be a share in (0%, 100%); got {text!r}; 100% leaves "
                          "no device on the previous model to compare with: promote without "
                          "--canary to ship to every device, or e.g. --canary 10%")
    return share, ()


@dataclass(frozen=True)
class Rollout:
    """A staged rollout as the events say it stands now."""

    rollout_id: int
    channel: str
    history_id: int
    sha256: str
    candidate_id: str
    previous_history_id: int
    previous_sha256: str
    plan: RolloutPlan
    stage: int
    state: State
    started_at: datetime
    stage_started_at: datetime
    last_reason: str
    looks: Looks = Looks()  # the canary test's planned looks spent so far

    @property
    def share(self) -> float:
        """The share of the fleet on the new model now (1.0 once complete)."""
        if self.state == "complete":
            return 1.0
        return self.plan.shares()[self.stage]

    @property
    def active(self) -> bool:
        """Whether some devices still run the previous model by design."""
        return self.state == "canary"

    def in_canary(self, device_id: str) -> bool:
        """Whether ``device_id`` runs the new model at this stage."""
        if device_id in self.plan.devices:
            return True
        digest = hashlib.sha256(f"{self.rollout_id}:{device_id}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64 < self.share

    def to_json(self) -> dict[str, Any]:
        """The rollout for the fleet view."""
        return {"rollout_id": self.rollout_id, "channel": self.channel, "state": self.state,
                "history_id": self.history_id, "sha256": self.sha256,
                "candidate_id": self.candidate_id, "previous_history_id": self.previous_history_id,
                "previous_sha256": self.previous_sha256, "stage": self.stage,
                "share": self.share, "plan": self.plan.to_json(),
                "started_at": self.started_at.isoformat(),
                "stage_started_at": self.stage_started_at.isoformat(), "reason": self.last_reason,
                "looks": {"accuracy": self.looks.accuracy, "errors": self.looks.errors,
                          "not_worse": self.looks.not_worse}}


def start_event(plan: RolloutPlan) -> Any:
    """The ``event`` callback for :func:`~selection.channels.promotion.promote`: the start event."""
    def build(record: PromotionRecord) -> EventRecord:
        if record.previous_sha256 is None:
            raise ConfigError(f"a staged rollout needs a previous model to keep on the rest of "
                              f"the fleet; channel {record.channel!r} has none; promote without "
                              "--canary first")
        what = (f"devices {', '.join(plan.devices)}" if plan.devices
                else f"{plan.share:.0%} of the fleet")
        return EventRecord(channel=record.channel, kind="rollout", candidate_id=record.candidate_id,
                           history_id=record.history_id,
                           reason=f"staged rollout of {record.candidate_id} to {what} first",
                           evidence={"action": "start", "plan": plan.to_json(),
                                     "sha256": record.sha256,
                                     "previous_candidate_id": record.previous_candidate_id,
                                     "previous_sha256": record.previous_sha256})
    return build


def load_rollout(store: Store, channel: str) -> Rollout | None:
    """The channel's newest rollout folded from its events; None if it never had one."""
    events = store.list_events(channel=channel, kinds="rollout", limit=500)  # newest first
    start = next((e for e in events if e.evidence.get("action") == "start"), None)
    if start is None or start.history_id is None or start.event_id is None:
        return None
    with store.snapshot() as conn:
        before = channel_rows.row_before(conn, channel, start.history_id)
    previous = before.history_id if before is not None else -1
    rollout = Rollout(
        rollout_id=start.event_id, channel=channel, history_id=start.history_id,
        sha256=str(start.evidence["sha256"]), candidate_id=str(start.candidate_id),
        previous_history_id=previous, previous_sha256=str(start.evidence["previous_sha256"]),
        plan=RolloutPlan.from_json(start.evidence["plan"]), stage=0, state="canary",
        started_at=start.at, stage_started_at=start.at, last_reason=start.reason)
    for event in reversed(events):
        if event.evidence.get("rollout_id") != rollout.rollout_id:
            continue
        action = event.evidence.get("action")
        if "looks" in event.evidence:  # a look, or a step the test decided
            rollout = replace(rollout, looks=Looks.from_json(event.evidence["looks"]))
        if action == "widen":
            rollout = replace(rollout, stage=int(event.evidence["stage"]),
                              stage_started_at=event.at, last_reason=event.reason)
        elif action in _CLOSING:
            state: State = _CLOSING[action]
            rollout = replace(rollout, state=state, last_reason=event.reason)
    if rollout.state == "canary":
        now = promotion.current(store, channel)
        if now is None or now.history_id != rollout.history_id:
            rollout = replace(rollout, state="superseded",
                              last_reason="the channel changed by another promotion or rollback")
    return rollout


def step_event(rollout: Rollout, action: str, reason: str, evidence: dict[str, Any],
               history_id: int | None = None) -> EventRecord:
    """A later step of ``rollout`` as its event."""
    return EventRecord(channel=rollout.channel, kind="rollout", candidate_id=rollout.candidate_id,
                       history_id=history_id if history_id is not None else rollout.history_id,
                       reason=reason, at=utc_now(),
                       evidence={**evidence, "action": action, "rollout_id": rollout.rollout_id})


def widen(store: Store, rollout: Rollout, reason: str, evidence: dict[str, Any]) -> Rollout:
    """Move to the next stage (``complete`` past the last); returns the new state."""
    shares = rollout.plan.shares()
    nxt = rollout.stage + 1
    if nxt >= len(shares) or shares[nxt] >= 1.0:
        store.append_event(step_event(rollout, "complete", f"rollout complete: {reason}",
                                      evidence))
        return replace(rollout, state="complete", last_reason=reason)
    store.append_event(step_event(rollout, "widen", f"widened to {shares[nxt]:.0%}: {reason}",
                                  {**evidence, "stage": nxt, "share": shares[nxt]}))
    return replace(rollout, stage=nxt, stage_started_at=utc_now(), last_reason=reason)


class RolloutSuperseded(PromotionError):
    """An automatic rollback refused: the channel no longer serves the rollout's promotion."""


def roll_back(store: Store, rollout: Rollout, reason: str, evidence: dict[str, Any],
              who: str = "shadow fleet") -> PromotionRecord:
    """Roll back the rollout's own promotion, the event in the rollback's transaction.

    Tied to the rollout: a rollback undoes the channel's newest *live*
    promotion, so if an operator promoted again since the rollout was read (or
    another fleet server, or a retried tick, already rolled it back) a plain
    rollback would revert someone else's row. Refused (RolloutSuperseded, the
    rollout's ``superseded`` event appended when it was still open, nothing else
    changed) unless the row it would revert is the rollout's ``history_id`` --
    checked once before (cheap, no lock) and again inside the rollback's own
    transaction, under the channel lock, where no other change can land.
    """
    if _closed(store, rollout):
        raise RolloutSuperseded(f"rollout {rollout.rollout_id} of {rollout.candidate_id} is "
                                "already closed (rolled back, completed or superseded); not "
                                "rolling the channel back again")
    with store.snapshot() as conn:
        live = channel_rows.newest_live_promote(conn, rollout.channel)
    if live is None or live.history_id != rollout.history_id:
        raise _superseded(store, rollout, live)

    def tied(record: PromotionRecord) -> EventRecord:
        if record.reverts_id != rollout.history_id:  # a change landed since the check above
            raise RolloutSuperseded(f"channel {rollout.channel!r} changed while rollout "
                                    f"{rollout.rollout_id} was rolled back; nothing changed")
        return step_event(rollout, "rollback", f"rolled back: {reason}", evidence,
                          history_id=record.history_id)

    try:
        return promotion.rollback(store, channel=rollout.channel, who=who,
                                  reason=f"automatic rollback: {reason}", event=tied)
    except RolloutSuperseded:
        with store.snapshot() as conn:
            live = channel_rows.newest_live_promote(conn, rollout.channel)
        raise _superseded(store, rollout, live) from None


def _closed(store: Store, rollout: Rollout) -> bool:
    """Whether the store already has a closing event (rollback, complete, superseded) for it."""
    return any(e.evidence.get("rollout_id") == rollout.rollout_id
               and e.evidence.get("action") in _CLOSING
               for e in store.list_events(channel=rollout.channel, kinds="rollout", limit=500))


def _superseded(store: Store, rollout: Rollout,
                live: PromotionRecord | None) -> RolloutSuperseded:
    """Record that ``rollout`` lost its channel (once) and say so."""
    now = f"history row {live.history_id} ({live.candidate_id})" if live else "no promotion"
    why = (f"superseded: the channel's newest live promotion is {now}, not the rollout's "
           f"row {rollout.history_id}; the automatic rollback was refused")
    if not _closed(store, rollout):
        store.append_event(step_event(rollout, "superseded", why, {}))
    return RolloutSuperseded(f"rollout {rollout.rollout_id} of {rollout.candidate_id} is "
                             f"{why}; nothing was rolled back")


def canary_devices(rollout: Rollout, devices: Sequence[str]) -> list[str]:
    """Which of ``devices`` run the new model now."""
    return [d for d in devices if rollout.in_canary(d)]
