"""Errors of the edge runtime, under the one root in ``selection.errors``.

Kept beside the runtime so an edge app can catch exactly these; each also
inherits the builtin its parent does (``ValueError``, ``RuntimeError``).
"""

from __future__ import annotations

from selection.errors import ConfigError, IntegrityError, NotFoundError


class ModelLoadError(IntegrityError):
    """A channel's model failed to verify, load or pass its smoke inference."""


class BadInputError(ConfigError):
    """A prediction request's rows do not fit the model (the caller's fault: HTTP 400)."""


class NoModelError(NotFoundError):
    """The runtime has no model to answer with (not started, or the channel is missing)."""
