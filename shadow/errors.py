"""shadow's errors: the shared root from ``selection`` plus producer-side kinds.

``selection`` owns the root (it must not import ``shadow``); everything here
derives from it, so the CLI has exactly one thing to catch.
"""

from __future__ import annotations

from selection.errors import (
    ConfigError,
    IntegrityError,
    NotFoundError,
    PromotionError,
    ShadowError,
    StoreError,
)


class DatasetError(ShadowError, ValueError):
    """A dataset's manifest or data breaks a rule (missing column, NaNs, ...)."""


class ExportError(ShadowError, RuntimeError):
    """A trained model could not be exported, or ONNX disagrees with torch."""


__all__ = [
    "ConfigError",
    "DatasetError",
    "ExportError",
    "IntegrityError",
    "NotFoundError",
    "PromotionError",
    "ShadowError",
    "StoreError",
]


class ClusterError(ShadowError, ConnectionError):
    """The Ray cluster named by ``--address`` cannot be reached or used."""


class RefitError(ShadowError, RuntimeError):
    """A chosen candidate could not be refit on its slice plus the holdout, or the refit failed a check."""


__all__ += ["ClusterError", "RefitError"]
