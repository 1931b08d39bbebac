"""Channel names: the one rule for what a channel may be called.

Standard library only, so the edge runtime and ``shadow serve`` can check a
name without the store's dependencies (SQLAlchemy) installed.
"""

from __future__ import annotations

import re

from selection.errors import ConfigError

_CHANNEL_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


def check_channel(channel: str) -> str:
    """Return ``channel`` if it is a valid channel name, else raise ConfigError.

    Names become directory names, so they are restricted to a safe alphabet.
    """
    if not isinstance(channel, str) or not _CHANNEL_RE.match(channel):
        raise ConfigError(
            "a channel name must be 1-64 characters of lowercase letters, digits, '_' or '-', "
            f"starting with a letter or digit; got {channel!r}; e.g. 'production' or 'canary-eu'"
        )
    return channel
