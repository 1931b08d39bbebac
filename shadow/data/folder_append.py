"""``shadow data append`` on a folder dataset: the file checked as the next batch, then copied in.

A file dropped straight into the folder is read as it is, and a bad one
breaks every load until it is removed. Appending through the verb checks it
first, by the same rules as every batch (:func:`directory_source.read_frames`:
columns, numbers, no gaps, time order from the file before), that it is not a
copy of a file already there, that its name matches the pattern and sorts
after the last file (name order is version order), and that the grown
version loads. Only then is it written into the folder atomically (a
dot-named temporary file, renamed: readers skip dot-names, so none sees half
a file), and its version is pinned in the home. A refusal writes nothing.
"""

from __future__ import annotations

import fnmatch
import hashlib
from datetime import UTC, datetime
from pathlib import Path

from selection.atomic import write_bytes_atomic
from selection.home import Home
from shadow.data.batch_rules import check_label_type, classes_of, new_labels
from shadow.data.directory_ledger import BatchFile, base_fingerprint
from shadow.data.directory_source import (
    fingerprints,
    folder_files,
    read_frames,
    record_version,
)
from shadow.data.frames import combined_dataset
from shadow.data.manifest import DatasetManifest
from shadow.data.versions import BATCH_SUFFIXES, AppendResult, Batch, DatasetVersion
from shadow.errors import DatasetError, StoreError


def append_to_folder(manifest: DatasetManifest, file: Path, home: Home) -> AppendResult:
    """Check ``file`` as the next batch of ``manifest``'s folder, copy it in, pin the version."""
    source, name = manifest.source, file.name
    where = f"batch {name!r}"
    try:
        data = file.read_bytes()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError) as exc:
        raise DatasetError(f"cannot read {where} ({exc.strerror}); pass a CSV or Parquet file "
                           f"that exists: {str(file)!r}") from None
    sha = hashlib.sha256(data).hexdigest()
    files = folder_files(manifest, home, allow_empty=True)
    for i, there in enumerate(files):
        if there.sha256 == sha:
            raise DatasetError(
                f"{where} is already in dataset {manifest.name!r} (as {there.name!r}, version "
                f"{i + 1}; same sha256 {sha[:12]}); a batch is added once: append only new rows"
            )
    if name.startswith(".") or not fnmatch.fnmatchcase(name, source.pattern) or (
            Path(name).suffix.lower() not in BATCH_SUFFIXES):
        raise DatasetError(
            f"{where}: dataset {manifest.name!r} reads files matching {source.pattern!r} ending "
            "in .csv or .parquet (not starting with '.'); rename the file to such a name"
        )
    if files and name <= files[-1].name:
        raise DatasetError(
            f"{where} would sort before {files[-1].name!r}, the folder's last batch, and files are "
            "read in name order; rename it to sort after that one (e.g. a later date or number)"
        )
    if (Path(source.location) / name).exists():
        raise DatasetError(f"{where}: {str(Path(source.location) / name)!r} already exists; "
                           "rename the file")
    batch = BatchFile(name, data, sha)
    frames = read_frames(manifest, [*files, batch])  # the rules, time order from the last file
    if files:
        check_label_type(frames[-1][manifest.target], frames[0][manifest.target], where,
                         manifest.target)
    fingerprint = fingerprints(manifest, [*files, batch])[-1]
    grown = combined_dataset(frames, manifest, fingerprint)  # the whole version must load
    # The first file of an empty folder brings every label: nothing there to be new against.
    labels = new_labels(frames[-1][manifest.target], classes_of(frames[:-1], manifest)) if files else {}
    target = Path(source.location) / name
    write_bytes_atomic(target, data)
    try:
        number = record_version(manifest, home, fingerprint)
    except StoreError:
        # Another process is pinning versions right now. The batch is in the folder, checked
        # and valid: failing here would leave it there while saying it was not appended (and a
        # retry would be refused as a copy). It is pinned when a sweep uses it or
        # `shadow data versions` lists it.
        number = len(files) + 1
    batches = tuple(Batch(f.sha256, f.name, len(fr), f.name) for f, fr in zip([*files, batch], frames))
    version = DatasetVersion(number, fingerprint, base_fingerprint(manifest), batches, grown.n_rows,
                             datetime.now(UTC).isoformat(timespec="seconds"), name, tuple(labels))
    return AppendResult(version, len(frames[-1]), labels, target)
