"""One controller per channel: an exclusive, non-waiting lock file under ``$SHADOW_HOME/watch``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
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
def controller_lock(home: Home, channel: str,
                    store: Store | None = None) -> Iterator[Callable[[], None]]:
    """One controller per channel: an exclusive, non-waiting flock under ``$SHADOW_HOME/watch``.

    The kernel drops it when its holder dies (even by SIGKILL), so no stale lock survives. With
    a ``store``, a lock in the database too (:meth:`Store.named_lock`: an advisory lock on
    PostgreSQL, a file beside a SQLite database): two homes on two machines watching one
    channel of one shared store would otherwise both sweep and promote. Yields a check that
    raises :class:`ControllerBusyError` once the database lock is lost (a restarted server):
    the controller calls it before each step that changes anything.
    """
    folder = home.root / LOCKS_DIR
    folder.mkdir(parents=True, exist_ok=True)

    def busy(holder: str) -> ControllerBusyError:
        return ControllerBusyError(
            f"one controller per channel: channel {channel!r} is already watched by another "
            f"process ({holder}); nothing was done; stop that one or watch another channel")

    with exclusive_lock(folder / f"{channel}.lock", busy):
        if store is None:
            yield lambda: None
            return
        with store.named_lock(f"shadow-watch:{channel}") as alive:
            if alive is None:
                raise busy(f"a controller of another home, through the store {store.url}")

            def check() -> None:
                if not alive():
                    raise ControllerBusyError(
                        f"the lock on channel {channel!r} in the store {store.url} was lost "
                        "(the database session ended); stopping before another controller "
                        "takes over; start `shadow watch` again")
            yield check
