"""Content-addressed storage of artifacts (models, holdout data, predictions): ``<root>/<sha256>``.

The name *is* the checksum, so a promotion can always tell whether the bytes on
disk are the ones that were evaluated. Artifacts are treated as opaque bytes
(never unpickled, never parsed here); writes are atomic and idempotent.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from selection.atomic import write_bytes_atomic
from selection.errors import ConfigError, IntegrityError, NotFoundError

_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
#: No suffix: artifacts are ONNX models, compiled contexts and .npy/.npz arrays
#: alike; the name is the checksum and the recording row says what it is.
SUFFIX = ""


def sha256_bytes(data: bytes) -> str:
    """The lowercase hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def check_sha256(sha: str) -> str:
    """Return ``sha`` if it is 64 lowercase hex digits, else raise ConfigError.

    Checked before a sha becomes part of a path, so a malformed id can never
    name a file outside the store.
    """
    if not isinstance(sha, str) or not _SHA256_RE.match(sha):
        raise ConfigError(
            f"an artifact id must be a sha256 in 64 lowercase hex digits; got {sha!r}; "
            "copy the full `artifact_sha256` from `shadow leaderboard --format json`"
        )
    return sha


class ArtifactStore:
    """Model files addressed by their sha256 under one directory.

    Safe for one writer and any number of readers: every file appears
    complete under its final name or not at all.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, sha: str) -> Path:
        """Where the artifact ``sha`` lives (it may not exist)."""
        return self.root / f"{check_sha256(sha)}{SUFFIX}"

    def exists(self, sha: str) -> bool:
        """Whether a file for ``sha`` is present (not verified)."""
        return self.path(sha).is_file()

    def put(self, data: bytes, expected_sha256: str | None = None) -> str:
        """Store ``data`` and return its sha256.

        Raises IntegrityError if ``expected_sha256`` is given and differs from
        the hash of ``data``. Storing bytes already present is a no-op; a file
        present under that name with other bytes (tampered, truncated by a
        crash on a filesystem without atomic rename) is rewritten.
        """
        sha = sha256_bytes(data)
        if expected_sha256 is not None and expected_sha256 != sha:
            raise IntegrityError(
                f"artifact bytes must hash to their declared sha256; declared "
                f"{expected_sha256!r}, the {len(data)} bytes hash to {sha!r}; "
                "pass the sha256 of the exact bytes being stored"
            )
        target = self.path(sha)
        if target.is_file() and sha256_bytes(target.read_bytes()) == sha:
            return sha
        self.root.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(target, data)
        return sha

    def read_verified(self, sha: str) -> bytes:
        """The bytes of artifact ``sha``, checked against their name.

        Raises NotFoundError if the file is missing and IntegrityError if its
        bytes hash differently (tampered with or truncated).
        """
        target = self.path(sha)
        try:
            data = target.read_bytes()
        except FileNotFoundError:
            raise NotFoundError(
                f"artifact {sha} is not in the artifact store at {self.root}; "
                "the store's files were moved or deleted: restore them, "
                "or re-run the sweep that produced this candidate"
            ) from None
        actual = sha256_bytes(data)
        if actual != sha:
            raise IntegrityError(
                f"artifact {target} must hash to its name; its {len(data)} bytes hash to "
                f"{actual} (tampered with or truncated); restore the file from a backup "
                "or re-run the sweep that produced it, and do not promote it as is"
            )
        return data
