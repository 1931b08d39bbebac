"""selection: the consumer side of shadow-sweep, usable on its own.

Store sweeps and candidates (:class:`Store`), rank them (:func:`leaderboard`,
:func:`best_candidate`), and move a channel's model with an audit trail
(:func:`promote`, :func:`rollback`, :func:`history`, :func:`current`).
This package never imports ``shadow``: candidates produced by any tool can
be ranked and promoted.

The public names below are re-exported lazily (PEP 562): ``import
selection.runtime`` on an edge device loads the runtime only, not pandas or
SQLAlchemy (which a slim install does not even have). ``from selection import
Store`` still works and imports the store on first use.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

#: Public name -> ``"module"`` (the name is a submodule) or ``"module:attribute"``.
_EXPORTS: dict[str, str] = {
    "errors": "selection.errors",
    "records": "selection.records",
    "ArtifactStore": "selection.artifacts.content:ArtifactStore",
    "sha256_bytes": "selection.artifacts.content:sha256_bytes",
    "read_manifest": "selection.channels.files:read_manifest",
    "GateRefused": "selection.errors:GateRefused",
    "ConfigError": "selection.errors:ConfigError",
    "IntegrityError": "selection.errors:IntegrityError",
    "NotFoundError": "selection.errors:NotFoundError",
    "PromotionError": "selection.errors:PromotionError",
    "ShadowError": "selection.errors:ShadowError",
    "StoreError": "selection.errors:StoreError",
    "promote_through_gate": "selection.gate.decision:promote_through_gate",
    "Home": "selection.home:Home",
    "LEADERBOARD_COLUMNS": "selection.leaderboard.frame:COLUMNS",
    "best_candidate": "selection.leaderboard.frame:best_candidate",
    "leaderboard": "selection.leaderboard.frame:leaderboard",
    "current": "selection.channels.promotion:current",
    "history": "selection.channels.promotion:history",
    "list_channels": "selection.channels.promotion:list_channels",
    "promote": "selection.channels.promotion:promote",
    "rollback": "selection.channels.promotion:rollback",
    "sync_channel": "selection.channels.promotion:sync_channel",
    "rank_rows": "selection.ranking.policies:rank_rows",
    "DEFAULT_CHANNEL": "selection.records:DEFAULT_CHANNEL",
    "HOST_DEVICE": "selection.records:HOST_DEVICE",
    "CandidateRecord": "selection.records:CandidateRecord",
    "DeviceResult": "selection.records:DeviceResult",
    "HoldoutRecord": "selection.records:HoldoutRecord",
    "PromotionRecord": "selection.records:PromotionRecord",
    "SliceRecord": "selection.records:SliceRecord",
    "SweepRecord": "selection.records:SweepRecord",
    "utc_now": "selection.records:utc_now",
    "ChannelRuntime": "selection.runtime:ChannelRuntime",
    "Store": "selection.store:Store",
}

#: The public names (each one is a key of _EXPORTS; the tests check both agree).
__all__ = [
    "ArtifactStore",
    "CandidateRecord",
    "ChannelRuntime",
    "ConfigError",
    "DEFAULT_CHANNEL",
    "DeviceResult",
    "GateRefused",
    "HOST_DEVICE",
    "HoldoutRecord",
    "Home",
    "IntegrityError",
    "LEADERBOARD_COLUMNS",
    "NotFoundError",
    "PromotionError",
    "PromotionRecord",
    "ShadowError",
    "SliceRecord",
    "Store",
    "StoreError",
    "SweepRecord",
    "best_candidate",
    "current",
    "errors",
    "history",
    "leaderboard",
    "list_channels",
    "promote",
    "promote_through_gate",
    "rank_rows",
    "read_manifest",
    "records",
    "rollback",
    "sha256_bytes",
    "sync_channel",
    "utc_now",
]


def __getattr__(name: str) -> Any:
    """Import a public name on first use and cache it in the package namespace."""
    target = _EXPORTS.get(name)
    if target is None:
        raise AttributeError(f"module 'selection' has no attribute {name!r}")
    module_name, _, attribute = target.partition(":")
    module = importlib.import_module(module_name)
    value = getattr(module, attribute) if attribute else module
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


class _Package(types.ModuleType):
    """The ``selection`` module object: keeps public functions from being hidden by subpackages.

    ``leaderboard`` is both a public function and the subpackage that holds it. The
    first import of ``selection.leaderboard`` makes the import system bind the
    subpackage as an attribute of this module, and PEP 562's ``__getattr__`` is
    only asked for names that are missing, so ``from selection import leaderboard``
    would then return the subpackage. A subpackage is never bound over a name that
    ``_EXPORTS`` maps to an attribute; it stays reachable as
    ``from selection.leaderboard import frame`` (through ``sys.modules``); the form
    ``import selection.leaderboard.frame as f`` walks attributes and finds the function.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and ":" in _EXPORTS.get(name, ""):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


if TYPE_CHECKING:  # what type checkers and IDEs see: the same names, imported eagerly
    from selection import errors, records
    from selection.artifacts.content import ArtifactStore, sha256_bytes
    from selection.channels.files import read_manifest
    from selection.channels.promotion import (
        current,
        history,
        list_channels,
        promote,
        rollback,
        sync_channel,
    )
    from selection.errors import (
        ConfigError,
        GateRefused,
        IntegrityError,
        NotFoundError,
        PromotionError,
        ShadowError,
        StoreError,
    )
    from selection.gate.decision import promote_through_gate
    from selection.home import Home
    from selection.leaderboard.frame import COLUMNS as LEADERBOARD_COLUMNS
    from selection.leaderboard.frame import best_candidate, leaderboard
    from selection.ranking.policies import rank_rows
    from selection.records import (
        DEFAULT_CHANNEL,
        HOST_DEVICE,
        CandidateRecord,
        DeviceResult,
        HoldoutRecord,
        PromotionRecord,
        SliceRecord,
        SweepRecord,
        utc_now,
    )
    from selection.runtime import ChannelRuntime
    from selection.store import Store
