"""Errors of the device layer, under the project's one root (``ShadowError``)."""

from __future__ import annotations

from shadow.errors import ShadowError


class ConversionError(ShadowError, RuntimeError):
    """A candidate could not be quantized or compiled for a device (that device's row fails)."""
