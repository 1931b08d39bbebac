"""One controller per channel: an exclusive, non-waiting lock file under ``$SHADOW_HOME/watch``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from selection.atomic import exclusive_lock
from selection.errors import ShadowError
from selection.home import Home

if TYPE_CHECKING:
    from selection.store import Store

__all__ = ["LOCKS_DIR", "ControllerBusyError", "controller_lock"]

#: Folder under $SHADOW_HOME holding one lock file per watched channel.
LOCKS_DIR = "watch"


class ControllerBusyError(ShadowError, RuntimeError):
    """Another controller holds this channel's lock."""


@contextmanager
def controller_lock(home: Home, channel: str, store: Store | None = None) -> Iterator[None]:
    """One controller per channel: an exclusive, non-waiting flock under ``$SHADOW_HOME/watch``.

    The kernel drops it when its holder dies (even by SIGKILL), so no stale lock survives. With
    a ``store`` shared by several hosts (PostgreSQL), a lock in the database too: two homes on
    two machines watching one channel of one team store would otherwise both sweep and promote.
    """
    folder = home.root / LOCKS_DIR
    folder.mkdir(parents=True, exist_ok=True)

    def busy(holder: str) -> ControllerBusyError:
        return ControllerBusyError(
            f"one controller per channel: channel {channel!r} is already watched by another "
            f"process ({holder}); nothing was done; stop that one or watch another channel")

    with exclusive_lock(folder / f"{channel}.lock", busy):
        if store is None:
            yield
            return
        with store.named_lock(f"shadow-watch:{channel}") as held:
            if not held:
                raise busy(f"a controller on another host, through the store {store.url}")
            yield
