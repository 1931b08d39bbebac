"""Appending a batch of labelled rows to a catalog dataset: checked whole, then stored atomically.

Every rule is checked before anything is written, so a bad batch changes
nothing: the batch must have the dataset's columns (no more, no fewer), pass
the loader's own rules (:func:`shadow.data.loader.validate_frame`: numeric
features, no gaps, time order), keep time order across the boundary with the
rows before it, not repeat a batch already appended, and leave a version that
loads. Label values never seen before are allowed but reported (a new class
changes what a model outputs).

Then the batch file is written byte for byte under the home, and the ledger
is replaced atomically (:mod:`shadow.data.versions`), under a per-dataset lock
so two appends cannot both become version N.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from selection.atomic import exclusive_lock, write_bytes_atomic
from selection.home import Home
from shadow.data.batch_rules import (
    check_boundary,
    check_columns,
    check_label_type,
    classes_of,
    new_labels,
)
from shadow.data.frames import (
    combined_dataset,
    parse_batch,
    validate_frame,
)
from shadow.data.loader import version_frames
from shadow.data.manifest import DatasetManifest
from shadow.data.sources import ARRAY_SOURCES
from shadow.data.versions import (
    AppendResult,
    Batch,
    DatasetVersion,
    batch_path,
    dataset_dir,
    read_ledger,
    version_fingerprint,
    write_ledger,
)
from shadow.errors import DatasetError, StoreError


@dataclass(frozen=True)
class _Plan:
    versions: list[DatasetVersion]  # the ledger the plan was checked against
    version: DatasetVersion
    data: bytes
    batch: Batch
    new_labels: dict[str, int]


def append_batch(manifest: DatasetManifest, file: Path, home: Home) -> AppendResult:
    """Check ``file`` as the next batch of ``manifest``'s dataset and store it in ``home``.

    Raises DatasetError (nothing written) for a batch that breaks a rule. A
    folder dataset gets the file copied into its folder instead
    (:mod:`shadow.data.folder_append`); a SQL table is refused (insert the rows).
    """
    if manifest.source.kind == "directory":  # the folder is the dataset: the file goes there
        from shadow.data.folder_append import append_to_folder

        return append_to_folder(manifest, file, home)
    plan = _plan(manifest, file, home)  # fails before the home is touched
    folder = dataset_dir(home.check_folder(), manifest.name)
    (folder / "batches").mkdir(parents=True, exist_ok=True)
    with exclusive_lock(folder / ".lock", _busy(manifest.name)):
        if read_ledger(home, manifest.name) != plan.versions:  # another append got in first
            plan = _plan(manifest, file, home)
        path = batch_path(home, manifest.name, plan.batch)
        write_bytes_atomic(path, plan.data)  # the batch first: the ledger never names a missing file
        write_ledger(home, manifest.name, [*plan.versions, plan.version])
    return AppendResult(plan.version, plan.batch.rows, plan.new_labels, path)


def _busy(name: str) -> Callable[[str], BaseException]:
    def busy(holder: str) -> StoreError:
        return StoreError(f"another append to dataset {name!r} is running ({holder}); "
                          "wait for it to finish, then append again")
    return busy


def _plan(manifest: DatasetManifest, file: Path, home: Home) -> _Plan:
    name = file.name
    where = f"batch {name!r}"
    if manifest.source.kind in ARRAY_SOURCES:
        raise DatasetError(
            f"dataset {manifest.name!r} is read from {manifest.source.kind} files, which cannot "
            "grow; append to a tabular (csv or package) dataset"
        )
    if manifest.source.kind == "sql":
        raise DatasetError(
            f"dataset {manifest.name!r} reads table {manifest.source.location!r}: insert the new "
            f"rows into that table (with {manifest.source.order_by} after the rows there); "
            "`shadow data append` grows csv and package datasets"
        )
    try:
        data = file.read_bytes()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError) as exc:
        raise DatasetError(f"cannot read {where} ({exc.strerror}); pass a CSV or Parquet file "
                           f"that exists: {str(file)!r}") from None
    sha = hashlib.sha256(data).hexdigest()
    frames, base, current = version_frames(manifest, home)
    versions = read_ledger(home, manifest.name)
    for batch in current.batches:
        if batch.sha256 == sha:
            seq = current.batches.index(batch) + 1
            raise DatasetError(
                f"{where} is already in dataset {manifest.name!r} (version {seq}, from "
                f"{batch.source!r}; same sha256 {sha[:12]}); a batch is appended once: "
                "append only rows not yet added"
            )
    frame = parse_batch(data, file, manifest)
    if len(frame) == 0:
        raise DatasetError(f"{where} has no rows; append a file with at least one row")
    check_columns(frame, frames[0], where)
    frame = frame[list(frames[0].columns)]
    validate_frame(frame, manifest, where, min_rows=1)
    check_label_type(frame[manifest.target], frames[0][manifest.target], where, manifest.target)
    if manifest.time_column:
        check_boundary(frames[-1][manifest.time_column], frame[manifest.time_column], where,
                        manifest.time_column)
    fresh = new_labels(frame[manifest.target], base_classes=classes_of(frames, manifest))
    number = len(versions) + 1
    batch = Batch(sha256=sha, file=f"{number:06d}-{sha[:12]}{file.suffix.lower()}",
                  rows=len(frame), source=name)
    shas = [b.sha256 for b in current.batches] + [sha]
    fingerprint = version_fingerprint(base.fingerprint, shas)
    # The whole new version must load (class counts and all): check it now, not at sweep time.
    grown = combined_dataset([*frames, frame], manifest, fingerprint)
    version = DatasetVersion(
        version=number, fingerprint=fingerprint, base_fingerprint=base.fingerprint,
        batches=(*current.batches, batch), rows=grown.n_rows,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"), source=name,
        new_labels=tuple(fresh),
    )
    return _Plan(versions, version, data, batch, fresh)
