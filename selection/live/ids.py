"""Request ids: the key that joins an answer, every model's prediction and the label that comes back."""

from __future__ import annotations

import re
import uuid

#: What a client-chosen ``X-Request-Id`` may look like (printable, no spaces, at most 128).
REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
REQUEST_ID_RULE = "1 to 128 characters from A-Z a-z 0-9 . _ : -"


def new_request_id() -> str:
    """A fresh id: uuid4 as 32 hex digits."""
    return uuid.uuid4().hex


def valid_request_id(value: object) -> bool:
    """Whether ``value`` is a request id this log accepts."""
    return isinstance(value, str) and REQUEST_ID_RE.match(value) is not None
