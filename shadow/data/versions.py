"""Versions of a growing dataset: immutable batches and an append-only ledger.

Layout, under the shadow home (never inside the installed package or the
catalog folder, which may be read-only or shared)::

    data/<name>/batches/<seq>-<sha256[:12]>.<csv|parquet>   the batch file, byte for byte
    data/<name>/versions.json                                the ledger, replaced atomically

Version 0 is the catalog dataset itself (its fingerprint is the base
fingerprint, so a dataset that never grew keeps the fingerprint it always had).
Version N is the base plus the first N batches, in order; its fingerprint is a
sha256 over the base fingerprint and those batches' sha256s, so it names the
exact rows a sweep trained on. Nothing here reads a table: see
:mod:`shadow.data.loader` (loading a version) and :mod:`shadow.data.append`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from selection.atomic import exclusive_lock, write_bytes_atomic
from selection.home import Home
from shadow.errors import DatasetError, IntegrityError, StoreError

#: Bumped if the ledger's layout ever changes; a reader refuses a format it does not know.
LEDGER_FORMAT = 1
LEDGER_NAME = "versions.json"
#: Suffixes a batch may have, and so the readers the loader has for them.
BATCH_SUFFIXES = (".csv", ".parquet")


class VersionNotFoundError(DatasetError):
    """No version of the dataset has the fingerprint (or number) asked for."""


@dataclass(frozen=True)
class Batch:
    """One appended file, as stored: its content hash, stored name, rows and where it came from."""

    sha256: str
    file: str  # name under batches/
    rows: int
    source: str  # the file name the user appended


@dataclass(frozen=True)
class DatasetVersion:
    """One state of a dataset: the base plus ``batches`` in order."""

    version: int
    fingerprint: str
    base_fingerprint: str
    batches: tuple[Batch, ...]
    rows: int  # rows of the whole version, base included
    created_at: str  # ISO 8601, UTC; "" for version 0 (the catalog's own data)
    source: str  # file name of the batch that made this version ("" for version 0)
    new_labels: tuple[str, ...] = ()  # label values this version's batch brought, as text

    def to_dict(self) -> dict[str, Any]:
        """The ledger entry (JSON-able)."""
        out = asdict(self)
        out["batches"] = [asdict(b) for b in self.batches]
        out["new_labels"] = list(self.new_labels)
        return out

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> DatasetVersion:
        """Read back what :meth:`to_dict` wrote."""
        return cls(
            version=int(raw["version"]), fingerprint=str(raw["fingerprint"]),
            base_fingerprint=str(raw["base_fingerprint"]),
            batches=tuple(Batch(**b) for b in raw["batches"]), rows=int(raw["rows"]),
            created_at=str(raw["created_at"]), source=str(raw["source"]),
            new_labels=tuple(raw.get("new_labels", ())),
        )


@dataclass(frozen=True)
class AppendResult:
    """What an append stored: the new version, the batch's rows, and label values new to the data."""

    version: DatasetVersion
    batch_rows: int
    #: Label value (as text) -> rows of the batch holding it, for values no earlier row had.
    new_labels: dict[str, int]
    path: Path  # the stored batch file



def version_fingerprint(base_fingerprint: str, batch_sha256s: list[str] | tuple[str, ...]) -> str:
    """The fingerprint of base + batches; with no batch it is the base's own."""
    if not batch_sha256s:
        return base_fingerprint
    digest = hashlib.sha256(b"shadow dataset version\x1e")
    digest.update(base_fingerprint.encode())
    for sha in batch_sha256s:
        digest.update(b"\x1f" + sha.encode())
    return digest.hexdigest()


def version_fingerprints(base_fingerprint: str, batch_sha256s: list[str]) -> list[str]:
    """``version_fingerprint(base, shas[:n])`` for n = 1..len(shas), in one pass."""
    digest = hashlib.sha256(b"shadow dataset version\x1e")
    digest.update(base_fingerprint.encode())
    out = []
    for sha in batch_sha256s:
        digest.update(b"\x1f" + sha.encode())
        out.append(digest.copy().hexdigest())
    return out


def dataset_dir(home: Home, name: str) -> Path:
    """Where a dataset's batches and ledger live in ``home``."""
    return home.root / "data" / name


def ledger_path(home: Home, name: str) -> Path:
    return dataset_dir(home, name) / LEDGER_NAME


def batch_path(home: Home, name: str, batch: Batch) -> Path:
    return dataset_dir(home, name) / "batches" / batch.file


def read_ledger(home: Home, name: str) -> list[DatasetVersion]:
    """The appended versions (1, 2, ...) of ``name`` in ``home``; empty if it never grew."""
    path = ledger_path(home, name)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise IntegrityError(
            f"the version ledger {path} is not valid JSON ({exc}); it is only ever replaced "
            "whole, so something else wrote it: restore it from a backup"
        ) from None
    if not isinstance(raw, dict) or raw.get("format") != LEDGER_FORMAT or raw.get("dataset") != name:
        raise IntegrityError(
            f"the version ledger {path} is not a format-{LEDGER_FORMAT} ledger of dataset "
            f"{name!r}; restore it from a backup, or upgrade shadow-sweep if a newer one wrote it"
        )
    try:
        return [DatasetVersion.from_dict(v) for v in raw["versions"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise IntegrityError(f"the version ledger {path} has a malformed entry ({exc}); "
                             "restore it from a backup") from None


def write_ledger(home: Home, name: str, versions: list[DatasetVersion]) -> None:
    """Replace the ledger atomically: a reader sees the old list or the new one."""
    body = {"format": LEDGER_FORMAT, "dataset": name, "versions": [v.to_dict() for v in versions]}
    write_bytes_atomic(ledger_path(home, name), (json.dumps(body, indent=2) + "\n").encode())


def pick_version(
    versions: list[DatasetVersion], base: DatasetVersion, wanted: str | None, name: str,
) -> DatasetVersion:
    """The latest version, or the one ``wanted`` names (see :func:`match_version`)."""
    every = [base, *versions]
    if wanted is None:
        return every[-1]
    return every[match_version([(v.version, v.fingerprint) for v in every], wanted, name)]


#: A fingerprint prefix shorter than this could be mistaken for a version number, or match many.
MIN_PREFIX = 6


def match_version(numbered: list[tuple[int, str]], wanted: str, name: str) -> int:
    """The index in ``numbered`` (version number, fingerprint) of the version ``wanted`` names.

    ``wanted`` is a version number, a whole fingerprint, or a prefix of one of at
    least :data:`MIN_PREFIX` characters that only one version has. Raises
    :class:`VersionNotFoundError` naming what exists.
    """
    wanted = wanted.strip()
    for i, (number, fingerprint) in enumerate(numbered):
        if wanted in (str(number), fingerprint):
            return i
    hits = [i for i, (_, fp) in enumerate(numbered)
            if len(wanted) >= MIN_PREFIX and fp.startswith(wanted.lower())]
    if len(hits) == 1:
        return hits[0]
    span = (f"versions {numbered[0][0]}-{numbered[-1][0]}" if numbered else "no versions")
    if hits:
        raise VersionNotFoundError(
            f"dataset {name!r}: fingerprint prefix {wanted!r} matches versions "
            f"{', '.join(str(numbered[i][0]) for i in hits)}; give more of the fingerprint "
            f"(see `shadow data versions {name}`)"
        )
    raise VersionNotFoundError(
        f"dataset {name!r} has no version {wanted[:16]!r}; it has {span}: give a version number "
        f"or a fingerprint (or a prefix of {MIN_PREFIX}+ characters) from "
        f"`shadow data versions {name}`"
    )


def record_checked(home: Home, name: str, plan: Callable[[], tuple[int, Any]],
                   write: Callable[[Any], None]) -> int:
    """Record a version of dataset ``name``: ``plan`` it, then again under the dataset's lock.

    ``plan`` returns the version's number and what to write (None: recorded already); it may
    raise, and does so before the home is touched. Planning again under the non-waiting lock
    means two recorders cannot disagree. Returns the number.
    """
    number, body = plan()  # refuses before any write
    if body is None:
        return number
    folder = dataset_dir(home.check_folder(), name)
    folder.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(folder / ".lock", lambda holder: StoreError(
            f"another process is recording versions of dataset {name!r} ({holder}); "
            "wait for it, then run again")):
        number, body = plan()
        if body is not None:
            write(body)
        return number
