"""The working state of one controller pass: the events it stored, and the lock check.

Shared by the controller (:mod:`shadow.loop.controller`) and the step that gates and acts on a
sweep (:mod:`shadow.loop.decide`); frozen into a :class:`~shadow.loop.outcome.PassResult` at the
pass's end.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from selection.records import EventKind, EventRecord

if TYPE_CHECKING:
    from selection.store import Store

__all__ = ["Note", "PassWork"]

#: Where a pass's progress lines go (the CLI puts them on stderr; library code never prints).
Note = Callable[[str], None]


@dataclass
class PassWork:
    """The mutable working state of one pass (frozen into a PassResult at the end)."""

    store: Store
    channel: str
    data_version: str
    #: Raises ControllerBusyError once the channel's lock is lost: called before every step.
    check: Callable[[], None] = field(default=lambda: None)
    events: list[int] = field(default_factory=list)

    def event(self, kind: EventKind, reason: str, conn: Any = None, **ids: Any) -> EventRecord:
        self.check()
        record = EventRecord(channel=self.channel, kind=kind, data_version=self.data_version,
                             reason=reason, **ids)
        stored = self.store.append_event(record, conn)
        assert stored.event_id is not None
        self.events.append(stored.event_id)
        return stored
