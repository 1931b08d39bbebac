"""selection: the consumer side of shadow-sweep, usable on its own.

Store sweeps and candidates (:class:`Store`), rank them (:func:`leaderboard`,
:func:`best_candidate`), and move a channel's model with an audit trail
(:func:`promote`, :func:`rollback`, :func:`history`, :func:`current`).
This package never imports ``shadow``: candidates produced by any tool can
be ranked and promoted.
"""

from selection import errors, records
from selection.artifacts.content import ArtifactStore, sha256_bytes
from selection.channels.files import read_manifest
from selection.errors import (
    GateRefused,
    ConfigError,
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
from selection.channels.promotion import current, history, list_channels, promote, rollback, sync_channel
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

__all__ = [
    "GateRefused",
    "promote_through_gate",
    "ChannelRuntime",
    "list_channels",
    "DEFAULT_CHANNEL",
    "HOST_DEVICE",
    "LEADERBOARD_COLUMNS",
    "ArtifactStore",
    "CandidateRecord",
    "ConfigError",
    "DeviceResult",
    "HoldoutRecord",
    "Home",
    "IntegrityError",
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
    "promote",
    "rank_rows",
    "read_manifest",
    "records",
    "rollback",
    "sha256_bytes",
    "sync_channel",
    "utc_now",
]
