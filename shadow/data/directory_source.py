"""A dataset that grows where the user keeps it: a folder of batch files (``kind = "directory"``).

(The ledger's format and its check: :mod:`shadow.data.directory_ledger`; ``shadow data
append`` into the folder: :mod:`shadow.data.folder_append`.)

Each file in the folder whose name matches ``[source] pattern`` is one
immutable batch of rows (CSV or Parquet), read in name order (so name the
files as time goes: ``2026-11-01.csv``, ``000042.parquet``). Names starting
with ``.`` are never read: write a batch as ``.name.tmp`` and rename it in, and
no reader sees half a file. Version N is the first N files; its fingerprint is
a sha256 over how the manifest reads the rows (target, features, segment and
time columns) and the content sha256 of each of those files, in order, so it
names the exact rows.

How versions are recorded, and why. The folder is the truth of what exists
now, but it cannot say what it held before, so a ledger under the home
(``data/<name>/directory.json``) records each file of every version that
something depends on: a sweep that trained on it (recorded by
:func:`record_version`, which the sweep runner calls when it stores the sweep)
or a listing that showed it (``shadow data versions``). Every later load checks
the folder against the ledger first: a recorded file that changed, disappeared,
or had a new file sorted in before it is refused with one line naming the file
and the fix, before any row is parsed. Loading itself writes nothing, so a
refused sweep leaves the home as it was; the files are hashed, not copied (the
folder may be large and it is the user's), which is why a changed file can
only be restored, not rebuilt.
"""

from __future__ import annotations

import fnmatch
import hashlib
from collections import OrderedDict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from selection.home import Home
from shadow.data.batch_rules import check_boundary, check_columns
from shadow.data.directory_ledger import (
    LEDGER_FORMAT,
    BatchFile,
    base_fingerprint,
    check_recorded,
    read_ledger,
    write_ledger,
)
from shadow.data.frames import (
    Dataset,
    combined_dataset,
    parse_batch,
    validate_frame,
)
from shadow.data.manifest import DatasetManifest
from shadow.data.versions import (
    BATCH_SUFFIXES,
    Batch,
    DatasetVersion,
    match_version,
    record_checked,
    version_fingerprints,
)
from shadow.errors import DatasetError


def scan(manifest: DatasetManifest, allow_empty: bool = False) -> list[BatchFile]:
    """The batch files in the folder, in name order, hashed; refuses anything else matching."""
    source = manifest.source
    folder = Path(source.location)
    where = f"dataset {manifest.name!r}"
    if not folder.is_dir():
        raise DatasetError(
            f"{where}: batch folder {str(folder)!r} does not exist; create it and drop CSV or "
            f"Parquet batch files there, or fix [source] path in {manifest.path}"
        )
    found = []
    for path in sorted(folder.iterdir(), key=lambda p: p.name):
        if path.name.startswith(".") or not fnmatch.fnmatchcase(path.name, source.pattern):
            continue
        if not path.is_file() or path.suffix.lower() not in BATCH_SUFFIXES:
            raise DatasetError(
                f"{where}: {path.name!r} in batch folder {str(folder)!r} is not a batch file "
                f"(.csv or .parquet); move it out of the folder, or set [source] pattern (now "
                f"{source.pattern!r}) to match only batch files"
            )
        data = path.read_bytes()
        found.append(BatchFile(path.name, data, hashlib.sha256(data).hexdigest()))
    if not found and not allow_empty:
        raise DatasetError(
            f"{where}: batch folder {str(folder)!r} holds no file matching {source.pattern!r}; "
            "drop CSV or Parquet batch files there"
        )
    return found


def fingerprints(manifest: DatasetManifest, files: list[BatchFile]) -> list[str]:
    """The fingerprint of each version 1..N (the first N files)."""
    return version_fingerprints(base_fingerprint(manifest), [f.sha256 for f in files])


def read_frames(manifest: DatasetManifest, files: list[BatchFile]) -> list[pd.DataFrame]:
    """Each file parsed and held to the table rules, with time order across files.

    The rules run once over all the rows (per file they cost more than the
    parsing, on small files); only if they fail are the files checked one by
    one, so the message names the file that breaks them.
    """
    frames: list[pd.DataFrame] = []
    folder = Path(manifest.source.location)
    for file in files:
        where = _where(manifest, file)
        frame = _parse(file, folder, manifest)
        if len(frame) == 0:
            raise DatasetError(f"{where} has no rows; remove it or write its rows")
        if frames:
            check_columns(frame, frames[0], where)
            if list(frame.columns) != list(frames[0].columns):
                frame = frame[list(frames[0].columns)]
        frames.append(frame)
    if not frames:
        return frames
    try:
        validate_frame(pd.concat(frames, ignore_index=True), manifest,
                       f"dataset {manifest.name!r}", min_rows=1)
    except DatasetError:
        _name_the_file(manifest, files, frames)
        raise
    return frames


#: Parsed batch files by content: a file's rows never change while its sha256 does not, and a
#: controller (or one sweep: load, plan, pin) reads the same files again and again.
_PARSED: OrderedDict[tuple[str, str, int | None], pd.DataFrame] = OrderedDict()
_PARSED_MAX = 4096


def _parse(file: BatchFile, folder: Path, manifest: DatasetManifest) -> pd.DataFrame:
    key = (file.sha256, Path(file.name).suffix.lower(), manifest.source.index_col)
    frame = _PARSED.get(key)
    if frame is None:
        frame = parse_batch(file.data, folder / file.name, manifest)
        _PARSED[key] = frame
        if len(_PARSED) > _PARSED_MAX:
            _PARSED.popitem(last=False)
    else:
        _PARSED.move_to_end(key)
    return frame  # never changed in place: callers select and concatenate, which copy


def _where(manifest: DatasetManifest, file: BatchFile) -> str:
    return f"batch file {file.name!r} of dataset {manifest.name!r}"


def _name_the_file(manifest: DatasetManifest, files: list[BatchFile],
                   frames: list[pd.DataFrame]) -> None:
    """Raise the first file's own error (or the time order across two files), if there is one."""
    for i, (file, frame) in enumerate(zip(files, frames)):
        validate_frame(frame, manifest, _where(manifest, file), min_rows=1)
        if i and manifest.time_column:
            check_boundary(frames[i - 1][manifest.time_column], frame[manifest.time_column],
                           _where(manifest, file), manifest.time_column)


def _chosen(manifest: DatasetManifest, files: list[BatchFile], version: str | None) -> int:
    """How many files the version ``version`` (None: the latest) holds."""
    if version is None:
        return len(files)
    numbered = list(enumerate(fingerprints(manifest, files), start=1))
    return match_version(numbered, version, manifest.name) + 1


def folder_files(manifest: DatasetManifest, home: Home | None,
                 allow_empty: bool = False) -> list[BatchFile]:
    """The folder's batch files, checked against what ``home`` recorded of them."""
    files = scan(manifest, allow_empty)
    if home is not None:
        recorded = read_ledger(home, manifest)
        if recorded:
            check_recorded(files, recorded, manifest, home)
    return files


def load_directory(manifest: DatasetManifest, home: Home | None, version: str | None) -> Dataset:
    """Version ``version`` (a number, fingerprint or prefix; None: the latest) of the folder."""
    files = folder_files(manifest, home)
    count = _chosen(manifest, files, version)
    frames = read_frames(manifest, files[:count])
    return combined_dataset(frames, manifest, fingerprints(manifest, files[:count])[-1])


def read_all(manifest: DatasetManifest) -> pd.DataFrame:
    """Every row in the folder now, as one table (the files in name order)."""
    frames = read_frames(manifest, scan(manifest))
    return pd.concat(frames, ignore_index=True)


def directory_versions(manifest: DatasetManifest, home: Home | None) -> list[DatasetVersion]:
    """Every version the folder holds now (1..N), checked against the ledger."""
    files = folder_files(manifest, home)
    recorded = {e.name: e.recorded_at for e in (read_ledger(home, manifest) if home else [])}
    frames = read_frames(manifest, files)
    base, out, rows = base_fingerprint(manifest), [], 0
    batches: list[Batch] = []
    for file, frame, fingerprint in zip(files, frames, fingerprints(manifest, files)):
        rows += len(frame)
        batches.append(Batch(file.sha256, file.name, len(frame), file.name))
        out.append(DatasetVersion(len(batches), fingerprint, base, tuple(batches), rows,
                                  recorded.get(file.name, ""), file.name))
    return out


def record_version(manifest: DatasetManifest, home: Home, fingerprint: str | None) -> int:
    """Pin the files of the version named ``fingerprint`` (None: the latest); returns its number.

    Idempotent. Everything is checked before the home is touched, then again
    under a per-dataset lock, so a refusal writes nothing and two recorders
    cannot disagree.
    """
    return record_checked(home, manifest.name, lambda: _record_plan(manifest, home, fingerprint),
                          lambda body: write_ledger(home, manifest.name, body))


def _record_plan(manifest: DatasetManifest, home: Home,
                 fingerprint: str | None) -> tuple[int, dict[str, Any] | None]:
    """The version's number, and the new ledger (None if it is recorded already)."""
    files = folder_files(manifest, home)
    count = _chosen(manifest, files, fingerprint)
    recorded = read_ledger(home, manifest)
    frames = read_frames(manifest, files[:count])  # each file held to the rules before pinning
    if count <= len(recorded):
        return count, None
    now = datetime.now(UTC).isoformat(timespec="seconds")
    entries = [*({"name": e.name, "sha256": e.sha256, "rows": e.rows,
                  "recorded_at": e.recorded_at} for e in recorded),
               *({"name": f.name, "sha256": f.sha256, "rows": len(frame), "recorded_at": now}
                 for f, frame in zip(files[len(recorded):count], frames[len(recorded):]))]
    return count, {"format": LEDGER_FORMAT, "dataset": manifest.name,
                   "folder": manifest.source.location,
                   "base_fingerprint": base_fingerprint(manifest), "files": entries}
