"""The ledger of a folder dataset: which files its recorded versions hold, and the check against it.

``$SHADOW_HOME/data/<name>/directory.json`` lists, in name order, each batch
file of every version something depends on (name, sha256, rows, when it was
recorded), and how the manifest read them (:func:`base_fingerprint`). Why a
ledger at all, and when it is written: :mod:`shadow.data.directory_source`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from selection.atomic import write_bytes_atomic
from selection.home import Home
from shadow.data.manifest import DatasetManifest
from shadow.data.versions import dataset_dir
from shadow.errors import DatasetError, IntegrityError

LEDGER_FORMAT = 1
LEDGER_NAME = "directory.json"



@dataclass(frozen=True)
class BatchFile:
    """One batch file as found in the folder: its name, bytes and content hash."""

    name: str
    data: bytes
    sha256: str


@dataclass(frozen=True)
class Recorded:
    """One ledger entry: a file some version held, as it was then."""

    name: str
    sha256: str
    rows: int
    recorded_at: str


def ledger_path(home: Home, name: str) -> Path:
    """Where the files of a directory dataset's recorded versions are listed."""
    return dataset_dir(home, name) / LEDGER_NAME


def base_fingerprint(manifest: DatasetManifest) -> str:
    """What the fingerprint of every version starts from: how the manifest reads a file."""
    reading = [manifest.target, *manifest.features, *manifest.label_features, "\x1e",
               *manifest.segment_columns, "\x1e",
               manifest.time_column or "", str(manifest.source.index_col)]
    return hashlib.sha256(("shadow directory source\x1e" + "\x1f".join(reading)).encode()).hexdigest()


def read_ledger(home: Home, manifest: DatasetManifest) -> list[Recorded]:
    """The files recorded for ``manifest``'s dataset in ``home``; empty if none was."""
    path = ledger_path(home, manifest.name)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise IntegrityError(f"the directory ledger {path} is not valid JSON ({exc}); it is only "
                             "ever replaced whole: restore it from a backup") from None
    if not isinstance(raw, dict) or raw.get("format") != LEDGER_FORMAT or raw.get("dataset") != manifest.name:
        raise IntegrityError(f"{path} is not a format-{LEDGER_FORMAT} directory ledger of dataset "
                             f"{manifest.name!r}; restore it from a backup")
    if raw.get("base_fingerprint") != base_fingerprint(manifest):
        raise DatasetError(
            f"dataset {manifest.name!r}: the manifest reads the batch files differently since "
            f"versions were recorded (target, features, segment, time or index columns changed; "
            f"ledger {path}); restore those manifest keys, or move the ledger away to record "
            "versions afresh"
        )
    try:
        return [Recorded(str(e["name"]), str(e["sha256"]), int(e["rows"]), str(e["recorded_at"]))
                for e in raw["files"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise IntegrityError(f"the directory ledger {path} has a malformed entry ({exc}); "
                             "restore it from a backup") from None


def check_recorded(files: list[BatchFile], recorded: list[Recorded], manifest: DatasetManifest,
                   home: Home) -> None:
    """Every recorded file is still there, unchanged, at its place in name order."""
    names = [f.name for f in files]
    present = set(names)
    folder, where = manifest.source.location, f"dataset {manifest.name!r}"
    fix = (f"batch files are immutable once a version holds them: restore it, put new rows in a "
           f"new file named to sort after {recorded[-1].name!r}, or move the ledger "
           f"{ledger_path(home, manifest.name)} away to record versions afresh")
    for i, entry in enumerate(recorded):
        if entry.name not in present:
            raise IntegrityError(
                f"{where}: batch file {entry.name!r} (version {i + 1}, sha256 "
                f"{entry.sha256[:12]}) is gone from {folder!r}; {fix}"
            )
        if names[i] != entry.name:
            raise IntegrityError(
                f"{where}: file {names[i]!r} in {folder!r} sorts before {entry.name!r}, which "
                f"version {i + 1} already holds; a new batch must sort after the last recorded "
                f"one ({recorded[-1].name!r}): rename it (e.g. with a date or zero-padded number)"
            )
        if files[i].sha256 != entry.sha256:
            raise IntegrityError(
                f"{where}: batch file {entry.name!r} in {folder!r} changed since version {i + 1} "
                f"was recorded (sha256 {files[i].sha256[:12]} now, {entry.sha256[:12]} then); {fix}"
            )


def write_ledger(home: Home, name: str, body: dict[str, Any]) -> None:
    """Replace the ledger atomically: a reader sees the old list or the new one."""
    write_bytes_atomic(ledger_path(home, name), (json.dumps(body, indent=1) + "\n").encode())
