"""Crash-safe replacement of files and symlinks that other processes read.

A reader (an edge app loading ``channels/production/model.onnx``) must see the
old content or the new one, never a partial file or a missing path. Both
helpers stage the new entry under a temporary name in the *same* directory
(``os.replace`` is only atomic within one filesystem), then rename it over the
old one and fsync the directory so the rename itself survives a power cut.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

try:  # POSIX; on Windows only the database serializes writers (see exclusive_lock)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

#: Mode of files written here: readable by the edge app's user. ``mkstemp``
#: would otherwise leave them 0600.
FILE_MODE = 0o644


def fsync_dir(directory: str | Path) -> None:
    """Flush a directory's entries (renames, new files) to disk.

    Silently skipped where directories cannot be opened (Windows).
    """
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        # Some filesystems (and all of Windows) refuse fsync on a directory;
        # the rename is still atomic there, only its durability is weaker.
        pass
    finally:
        os.close(fd)


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so readers see the old or the new bytes only.

    The temporary file is fsynced before the rename: without that, a crash
    could leave the new name pointing at an empty file.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), FILE_MODE)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def replace_symlink_atomic(link_path: str | Path, target: str | Path) -> None:
    """Point ``link_path`` at ``target`` in one atomic step.

    ``target`` is stored as given (pass a relative path to keep the tree
    relocatable). ``link_path`` may be missing or an existing symlink; a real
    directory there cannot be replaced atomically and raises OSError.
    """
    link_path = Path(link_path)
    parent = link_path.parent
    # os.symlink has no "create with a unique name" mode, so pick a random
    # name and retry on the (unlikely) collision.
    for _ in range(100):
        tmp = parent / f".{link_path.name}.{secrets.token_hex(8)}.tmp"
        try:
            os.symlink(target, tmp)
            break
        except FileExistsError:
            continue
    else:  # pragma: no cover - 100 collisions of 64 random bits
        raise FileExistsError(f"could not create a temporary symlink in {parent}")
    try:
        os.replace(tmp, link_path)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(parent)


@contextmanager
def exclusive_lock(path: str | Path, busy: Callable[[str], BaseException]) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing) for the ``with`` body.

    Never waits: if another process holds it, raises ``busy(holder)`` where
    ``holder`` is what that process wrote in the file (its pid). The lock is
    ``flock``-based, so the kernel drops it when its holder dies, even by
    SIGKILL: a crashed promotion can never leave a stale lock behind.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, FILE_MODE)
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 64, 0).decode("utf-8", "replace").strip() or "unknown"
                raise busy(holder) from None
            # Only informative (who holds it); the flock itself is the lock.
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the flock
