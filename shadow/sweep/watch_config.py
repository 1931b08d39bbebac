"""The ``[watch]`` table of a sweep file: which channel the loop watches, and what makes it sweep again.

Example::

    [watch]
    channel = "production"   # the channel whose champion is watched and replaced
    mode = "propose"         # "auto" promotes; "propose" records a decision to approve or reject
    refit = false            # retrain the winner on its slice plus the holdout before promoting
    poll_s = 10.0            # seconds between looks for new data

    [watch.triggers]         # at least one; any one firing starts a sweep
    new_rows = 365           # rows added since the last sweep >= 365
    schedule_s = 86400       # a day since the last sweep
    min_accuracy = 0.70      # the champion's live accuracy below 0.70
    drift = true             # the drift detector fired on the champion's errors
    config_changed = true    # the sweep file or the code version differs from the last sweep's

    [watch.triggers.significant_drop]   # live accuracy significantly below the promotion accuracy
    alpha = 0.01
    min_rows = 100

    [watch.selection]        # how the challenger is picked out of each sweep (default: holdout)
    policy = "track-record"  # follow the strategy that did best on the data after its choices
    discount = 0.7           # weight of a period one sweep older than the next (recent counts most)
    min_record = 2           # scored periods every expert needs before the record is followed
    # or: policy = "ensemble"  # gate the sweep's ensemble of its top candidates ([ensemble] table)

Validated with ``selection.validation`` like the rest of the sweep file: unknown keys are
errors listing the known ones, nan and inf are refused, and every message names the key,
the value and the fix. A trigger that is absent (or ``false``) is off.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from selection.channels.names import check_channel
from selection.errors import ConfigError
from selection.validation import Param, parse_table

#: What the loop does with a gated winner: promote it, or record it for ``shadow approve``.
MODES = ("auto", "propose")

#: Every trigger, in the fixed order they are evaluated and reported.
TRIGGER_KEYS = ("new_rows", "schedule_s", "min_accuracy", "significant_drop", "drift", "config_changed")

_WATCH = [
    Param("channel", str, default="production"),
    # Nothing reaches production without a person unless the file says so.
    Param("mode", str, default="propose", choices=MODES),
    Param("refit", bool, default=False),
    Param("poll_s", float, default=10.0, low=0, low_open=True,
          help="seconds between looks for new data"),
    Param("triggers", dict, default={}),
    Param("selection", dict, default={}),
]

#: How the challenger is picked out of a sweep: its rank 1, by the track record, or the
#: sweep's ensemble of its top candidates.
POLICIES = ("holdout", "track-record", "ensemble")

_SELECTION = [
    Param("policy", str, default="holdout", choices=POLICIES),
    # 1 weighs every past period alike; near 0 only the latest counts.
    Param("discount", float, default=0.7, low=0, high=1, low_open=True),
    Param("min_record", int, default=2, low=1, help="scored periods before the record is followed"),
]


@dataclass(frozen=True)
class Selection:
    """``[watch.selection]``: ``holdout`` takes the sweep's rank 1; ``track-record`` follows the
    expert with the best discounted record (:mod:`shadow.loop.track_record`); ``ensemble``
    takes the sweep's ensemble candidate (``[ensemble]``; :mod:`shadow.loop.decide`)."""

    policy: str = "holdout"
    discount: float = 0.7
    min_record: int = 2

_TRIGGERS = [
    Param("new_rows", int, default=None, low=1, help="rows added since the last sweep"),
    Param("schedule_s", float, default=None, low=0, low_open=True, help="seconds between sweeps"),
    # 0 could never fire (accuracy is never below 0): refuse a trigger that is silently dead.
    Param("min_accuracy", float, default=None, low=0, high=1, low_open=True),
    Param("significant_drop", dict, default=None),
    Param("drift", bool, default=False),
    Param("config_changed", bool, default=False),
]

_DROP = [
    # Above 0.5 a "significant" drop is more likely than not under no drop at all. The test
    # runs again after every batch, so each look spends alpha: keep it small (default 0.01).
    Param("alpha", float, default=0.01, low=0, high=0.5, low_open=True),
    Param("min_rows", int, default=100, low=1, help="live rows before the test may fire"),
]


@dataclass(frozen=True)
class SignificantDrop:
    """Live accuracy significantly below the accuracy at promotion (one-sided exact binomial test)."""

    alpha: float = 0.01
    min_rows: int = 100


@dataclass(frozen=True)
class WatchTriggers:
    """Which triggers are on and their thresholds; ``None``/``False`` is off."""

    new_rows: int | None = None
    schedule_s: float | None = None
    min_accuracy: float | None = None
    significant_drop: SignificantDrop | None = None
    drift: bool = False
    config_changed: bool = False

    def enabled(self) -> tuple[str, ...]:
        """The names of the triggers that are on, in :data:`TRIGGER_KEYS` order."""
        return tuple(k for k in TRIGGER_KEYS if getattr(self, k) not in (None, False))


@dataclass(frozen=True)
class WatchConfig:
    """A validated ``[watch]`` table."""

    triggers: WatchTriggers
    channel: str = "production"
    mode: str = "propose"
    refit: bool = False
    poll_s: float = 10.0
    selection: Selection = Selection()

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form, in the shape of the TOML table (off triggers left out)."""
        triggers: dict[str, Any] = {}
        for key in self.triggers.enabled():
            value = getattr(self.triggers, key)
            triggers[key] = (
                {"alpha": value.alpha, "min_rows": value.min_rows}
                if isinstance(value, SignificantDrop) else value
            )
        return {"channel": self.channel, "mode": self.mode, "refit": self.refit,
                "poll_s": self.poll_s, "triggers": triggers,
                "selection": {"policy": self.selection.policy, "discount": self.selection.discount,
                              "min_record": self.selection.min_record}}


def watch_from_config(table: Mapping[str, Any], source: str = "sweep config") -> WatchConfig:
    """A WatchConfig from a sweep file's ``[watch]`` table, or ConfigError naming the key and fix.

    ``source`` names the file in messages: ``<source> [watch.triggers]: ...``.
    """
    where = f"{source} [watch]"
    where_triggers = f"{source} [watch.triggers]"
    watch = parse_table(table, _WATCH, where)
    try:
        channel = check_channel(watch["channel"])
    except ConfigError as exc:
        raise ConfigError(f"{where}: 'channel': {exc}") from None
    values = parse_table(watch["triggers"], _TRIGGERS, where_triggers)
    drop = None
    if values["significant_drop"] is not None:
        parsed = parse_table(values["significant_drop"], _DROP,
                             f"{source} [watch.triggers.significant_drop]")
        drop = SignificantDrop(alpha=parsed["alpha"], min_rows=parsed["min_rows"])
    triggers = WatchTriggers(
        new_rows=values["new_rows"], schedule_s=values["schedule_s"],
        min_accuracy=values["min_accuracy"], significant_drop=drop,
        drift=values["drift"], config_changed=values["config_changed"],
    )
    if not triggers.enabled():
        raise ConfigError(
            f"{where_triggers}: at least one trigger must be on; set one of "
            f"{', '.join(TRIGGER_KEYS)}; e.g. `new_rows = 1000`."
        )
    selection = Selection(**parse_table(watch["selection"], _SELECTION, f"{source} [watch.selection]"))
    return WatchConfig(triggers=triggers, channel=channel, mode=watch["mode"],
                       refit=watch["refit"], poll_s=watch["poll_s"], selection=selection)


__all__ = ["MODES", "POLICIES", "TRIGGER_KEYS", "Selection", "SignificantDrop", "WatchConfig",
           "WatchTriggers", "watch_from_config"]
