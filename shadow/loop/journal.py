"""What a channel's event log says about the controller's passes.

A restarted controller reads the log to learn where the newest sweep of a data version
stopped (:func:`unfinished_step`); :func:`check_consistency` states the invariant between the
log and the promotion history that a controller killed at any point must keep. Kept apart from
the controller so the rules a crash test checks are read, not re-derived, by the test.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from selection.records import EventRecord
    from selection.store import Store

__all__ = ["REASON_PREFIX", "STEP_KINDS", "check_consistency", "same_sweep", "unfinished_step"]


#: The event kinds that mark a pass's steps (what a restarted controller reads to resume).
STEP_KINDS = ("sweep_started", "sweep_finished", "gate", "promotion", "proposal", "error")


def same_sweep(event: EventRecord, version: str, config_hash: str | None) -> bool:
    """Whether a sweep event is of ``version`` (and of ``config_hash``, unless None)."""
    return event.data_version == version and (
        config_hash is None or event.evidence.get("config_hash") == config_hash)


def unfinished_step(log: list[EventRecord], version: str, config_hash: str | None = None
                    ) -> tuple[str | None, str | None, EventRecord | None]:
    """Where the newest controller sweep of ``version`` stopped: (sweep id, step, gate event).

    ``config_hash``: only a sweep started under that sweep file and code counts (the
    ``config_changed`` trigger lets a changed config sweep a version again). ``step``: "sweep"
    (started, never finished), "gate" (finished, never gated), "act" (the gate passed, no
    promotion, proposal or error followed), or None (no such sweep, or its pass ran to the end).
    """
    started = next((e for e in log if e.kind == "sweep_started"
                    and same_sweep(e, version, config_hash)), None)  # newest first
    if started is None or started.sweep_id is None:
        return None, None, None
    sweep_id = started.sweep_id
    mine = [e for e in log if e.sweep_id == sweep_id]
    kinds = {e.kind for e in mine}
    if "sweep_finished" not in kinds:
        return sweep_id, "sweep", None
    if kinds & {"promotion", "proposal", "error"}:
        return sweep_id, None, None
    gate = next((e for e in mine if e.kind == "gate"), None)
    if gate is None:
        return sweep_id, "gate", None
    if gate.evidence.get("passed") is True and gate.candidate_id:
        return sweep_id, "act", gate
    return sweep_id, None, None


#: How the history rows the controller makes start their reason (the invariant tells them apart).
REASON_PREFIX = "shadow watch: "


def check_consistency(store: Store, channel: str) -> list[str]:
    """What is wrong between ``channel``'s events and its history (empty: consistent).

    Every promotion event names an existing history row of the channel, for the candidate it
    names, and no row is named twice; every history row the controller made has its promotion
    event; a data version has at most one ``sweep_started`` per config hash (a stopped sweep is
    resumed, with ``sweep_resumed``, never started again); a sweep has at most one ``sweep_finished``, one
    ``gate`` and one ``promotion`` or ``proposal``.
    """
    from collections import Counter

    from selection.channels.promotion import history

    problems: list[str] = []
    rows = {r.history_id: r for r in history(store, channel=channel)}
    log = store.list_events(channel=channel)
    promotions = [e for e in log if e.kind == "promotion"]
    named = Counter(e.history_id for e in promotions)
    for event in promotions:
        row = rows.get(event.history_id) if event.history_id is not None else None
        if row is None:
            problems.append(f"promotion event {event.event_id} names history row "
                            f"{event.history_id}, which does not exist")
        elif row.candidate_id != event.candidate_id:
            problems.append(f"promotion event {event.event_id} names {event.candidate_id!r} but "
                            f"history row {row.history_id} promoted {row.candidate_id!r}")
    problems += [f"history row {h} is named by {n} promotion events"
                 for h, n in named.items() if n > 1]
    for row in rows.values():
        if (row.action == "promote" and (row.reason or "").startswith(REASON_PREFIX)
                and named[row.history_id] == 0):
            problems.append(f"history row {row.history_id} (made by the controller) has no "
                            "promotion event")
    started = Counter((e.data_version, e.evidence.get("config_hash")) for e in log
                      if e.kind == "sweep_started")
    problems += [f"data version {v} has {n} sweep_started events under one config"
                 for (v, _), n in started.items() if n > 1]
    for kind in ("sweep_finished", "gate"):
        per = Counter(e.sweep_id for e in log if e.kind == kind)
        problems += [f"sweep {s} has {n} {kind} events" for s, n in per.items() if n > 1]
    acted = Counter(e.sweep_id for e in log if e.kind in ("promotion", "proposal") and e.sweep_id)
    problems += [f"sweep {s} has {n} promotion/proposal events" for s, n in acted.items()
                 if n > 1]
    return problems
