"""The one exception root of shadow-sweep and its user-facing subclasses.

Every error a *user* can cause (bad input, a missing candidate, a tampered
artifact) derives from :class:`ShadowError`. The CLI turns those into one line
on stderr and exit code 2; anything else is a bug and may show a traceback.

Each subclass also inherits the matching builtin, so callers that only know
Python's own exceptions (``except ValueError``) still catch them. Messages
state the rule, the value received and the fix.

This module lives in ``selection`` because ``selection`` must not import
``shadow``; ``shadow.errors`` re-exports these names.
"""

from __future__ import annotations

from typing import Any, Protocol


class ShadowError(Exception):
    """Root of every error a user can cause. Caught by the CLI (exit 2)."""


class ConfigError(ShadowError, ValueError):
    """A configuration value, flag or file is malformed or out of range."""


class NotFoundError(ShadowError, LookupError):
    """A named thing (candidate, sweep, dataset, device, channel) does not exist."""


class IntegrityError(ShadowError, RuntimeError):
    """Stored bytes do not match their recorded sha256 (tampered or truncated)."""


class StoreError(ShadowError, RuntimeError):
    """The metadata store cannot be opened or is in a state we refuse to touch."""


class PromotionError(ShadowError, RuntimeError):
    """A promotion or rollback cannot be carried out as asked."""


class GateVerdict(Protocol):
    """What :class:`GateRefused` holds: the gate's ``GateDecision``, named here by its shape.

    This module sits below the gate (every layer imports it, the edge runtime
    too, and the import contracts keep those free of ``selection.gate``), so it
    cannot import ``selection.gate.record``; ``GateDecision`` satisfies this.
    """

    @property
    def passed(self) -> bool:
        """Whether every check passed."""
        ...

    @property
    def reasons(self) -> list[str]:
        """The details of the failed checks, in order."""
        ...

    def to_json(self) -> dict[str, Any]:
        """The stored form of the decision."""
        ...


class GateRefused(PromotionError):
    """The champion/challenger gate refused a promotion; ``decision`` says every check.

    ``decision`` is the gate's ``GateDecision`` (``selection.gate.record``):
    ``decision.reasons``, ``decision.checks``, ``decision.to_json()``.
    """

    def __init__(self, message: str, decision: GateVerdict) -> None:
        super().__init__(message)
        self.decision = decision
