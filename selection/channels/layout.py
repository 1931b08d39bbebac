"""The on-disk layout of a channel, as both the writer and the edge runtime see it.

Under a channels directory (``$SHADOW_HOME/channels``, or its copy on a device)::

    production -> .versions/production-7-0123456789ab     (a relative symlink)
    .versions/production-7-0123456789ab/model.onnx         (regular files, never symlinks)
    .versions/production-7-0123456789ab/manifest.json

The names are defined here once. :func:`resolve_channel` is the rule every
reader applies before trusting a channel: the link must lead to a real
directory directly inside ``.versions`` of *this* channels directory; a link
(or a version entry) that leads anywhere else is refused, whatever its
manifest says. Standard library only: the slim edge runtime imports it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from selection.errors import IntegrityError

MODEL_FILE = "model.onnx"
MANIFEST_FILE = "manifest.json"
VERSIONS_DIR = ".versions"


class UntrustedChannelError(IntegrityError):
    """A channel link or file leads outside the channels directory's own versions."""


def version_name(channel: str, history_id: int, sha256: str) -> str:
    """The version directory of the history row ``history_id`` that set ``channel`` to ``sha256``."""
    return f"{channel}-{history_id}-{sha256[:12]}"


def version_history_id(channel: str, version: str | None) -> int | None:
    """The history row a version name of ``channel`` carries (None: not one of its names)."""
    prefix = f"{channel}-"
    if not version or not version.startswith(prefix):
        return None
    row, _, sha = version[len(prefix):].rpartition("-")
    return int(row) if row.isdigit() and len(sha) == 12 else None


def resolve_channel(channels_dir: Path, channel: str) -> Path | None:
    """The version directory ``channels_dir/channel`` leads to; None if there is no link.

    Raises UntrustedChannelError if the entry is not a symlink, or if it
    resolves (through any number of links) anywhere but a real directory
    directly inside ``channels_dir/.versions``.
    """
    link = channels_dir / channel
    try:
        mode = os.lstat(link).st_mode
    except FileNotFoundError:
        return None
    fix = "run `shadow doctor --repair` (with the store) or copy the channels folder again"
    if not stat.S_ISLNK(mode):
        raise UntrustedChannelError(
            f"{link} must be a symlink into {VERSIONS_DIR}/; it is a "
            f"{'directory' if stat.S_ISDIR(mode) else 'file'}; {fix}")
    return resolve_target(channels_dir, channel, os.readlink(link))


def resolve_target(channels_dir: Path, channel: str, target: str) -> Path:
    """The version directory the link text ``target`` of ``channels_dir/channel`` leads to.

    For a caller that already read the link (``os.readlink``) and must judge
    exactly that text; UntrustedChannelError as in :func:`resolve_channel`.
    """
    if os.path.islink(channels_dir / VERSIONS_DIR):
        # realpath would follow it, and every version "inside" it would pass the
        # containment check below while living in another folder (another home's).
        raise UntrustedChannelError(
            f"{channels_dir / VERSIONS_DIR} must be a real folder, not a symlink (-> "
            f"{os.readlink(channels_dir / VERSIONS_DIR)}); refusing channel {channel!r}; replace "
            "the link with the folder (`shadow doctor --repair` with the store rebuilds it) or "
            "copy the channels folder again")
    versions = Path(os.path.realpath(channels_dir / VERSIONS_DIR))
    # A relative link is relative to the folder holding it, exactly as the OS follows it.
    real = Path(os.path.realpath(channels_dir / target))
    if real.parent != versions or not real.is_dir():
        raise UntrustedChannelError(
            f"a channel must lead to a version inside {versions}; {channels_dir / channel} -> "
            f"{target} resolves to {real}, which is "
            f"{'outside it' if real.parent != versions else 'not a directory'}; refusing it; "
            "run `shadow doctor --repair` (with the store) or copy the channels folder again")
    return real


def read_regular(path: Path) -> bytes:
    """The bytes of ``path``, refusing a symlink (a version's files are never links).

    OSError as ``open`` raises it (``ELOOP`` for a symlink, which the caller reports).
    """
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise IsADirectoryError(21, "not a regular file", str(path))
        with os.fdopen(fd, "rb") as handle:
            fd = -1
            return handle.read()
    finally:
        if fd >= 0:
            os.close(fd)
