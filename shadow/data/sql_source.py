"""A dataset that grows where the user keeps it: a SQL table ordered by a time or id column.

``[source] kind = "sql"``, ``url`` (SQLAlchemy; ``postgresql://`` uses psycopg 3),
``table``, ``order_by``. Rows are read in ``order_by`` order (ties broken by
the manifest's columns, so the order is the same on every read). New rows must
come after the rows already there in ``order_by``, as new batches do.

A version is the rows up to a watermark of ``order_by``: the first ``rows``
rows in that order. Its fingerprint is a sha256 over the table's name, the
columns the manifest reads and those rows' values (written out as CSV text,
row by row, so one pass over the table fingerprints every version at once).

How versions are recorded, and why. A table keeps no history: once a row is
edited nothing in the database says what it was. So a ledger under the home
(``data/<name>/sql.json``) records each version something depends on (a sweep
that trained on it, via :func:`record_version`; a ``shadow data versions``
listing) as its row count, watermark and fingerprint. Every load recomputes
the fingerprint of each recorded version from the rows there now and refuses,
in one line naming the version and its watermark, a table whose recorded rows
were edited, deleted or had rows inserted among them; rows added after the
last watermark are the next version. Loading writes nothing; only recording
does (atomically, under a per-dataset lock).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from selection.atomic import write_bytes_atomic
from selection.home import Home
from shadow.data.frames import Dataset, combined_dataset
from shadow.data.manifest import DatasetManifest
from shadow.data.versions import DatasetVersion, dataset_dir, match_version, record_checked
from shadow.errors import DatasetError, IntegrityError

LEDGER_FORMAT = 1
LEDGER_NAME = "sql.json"


@dataclass(frozen=True)
class SqlVersion:
    """A version of a table: its first ``rows`` rows in order, the last one at ``watermark``."""

    version: int
    rows: int
    watermark: str  # the order column's value on the version's last row, as text
    fingerprint: str
    recorded_at: str  # "" for a version not recorded yet


def ledger_path(home: Home, name: str) -> Path:
    """Where the recorded versions of a SQL dataset are listed."""
    return dataset_dir(home, name) / LEDGER_NAME


def _url(manifest: DatasetManifest) -> Any:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(manifest.source.url)
    except ArgumentError:
        raise DatasetError(
            f"dataset {manifest.name!r}: [source] url is not a database URL; write one such as "
            f"'postgresql://user@127.0.0.1:5432/db' or 'sqlite:////abs/path.db' in {manifest.path}"
        ) from None
    if url.drivername in ("postgresql", "postgres"):  # psycopg 3 is the driver shipped
        url = url.set(drivername="postgresql+psycopg")
    return url


def read_all(manifest: DatasetManifest) -> pd.DataFrame:
    """Every row of the table now, in order: the manifest's columns and the order column."""
    import sqlalchemy as sa
    from sqlalchemy.exc import NoSuchModuleError, NoSuchTableError, SQLAlchemyError

    source, where = manifest.source, f"dataset {manifest.name!r}"
    url = _url(manifest)
    shown = url.render_as_string(hide_password=True)
    schema, _, name = source.location.rpartition(".")
    try:
        engine = sa.create_engine(url, connect_args=(
            {"connect_timeout": 10} if url.get_backend_name() == "postgresql" else {}))
    except (NoSuchModuleError, ModuleNotFoundError) as exc:
        raise DatasetError(f"{where}: no database driver for {shown} ({exc}); install it, or fix "
                           f"[source] url in {manifest.path}") from None
    try:
        with engine.connect() as conn:
            try:
                table = sa.Table(name, sa.MetaData(), schema=schema or None, autoload_with=conn)
            except NoSuchTableError:
                raise DatasetError(f"{where}: table {source.location!r} does not exist in {shown}; "
                                   f"create it, or fix [source] table in {manifest.path}") from None
            have = [c.name for c in table.columns]
            time = (manifest.time_column,) if manifest.time_column else ()
            wanted = list(dict.fromkeys((source.order_by, manifest.target, *manifest.features,
                                         *manifest.segment_columns, *time)))
            missing = [c for c in wanted if c not in have]
            if missing:
                what = ("order_by column" if missing[0] == source.order_by else "column")
                raise DatasetError(
                    f"{where}: {what} {missing[0]!r} is not in table {source.location!r}; it has "
                    f"{', '.join(repr(c) for c in have)}. Fix [source] order_by or the manifest's "
                    "columns"
                )
            query = sa.select(*(table.c[c] for c in wanted)).order_by(*(table.c[c] for c in wanted))
            return pd.read_sql(query, conn)
    except SQLAlchemyError as exc:
        detail = " ".join(str(getattr(exc, "orig", None) or exc).split())[:200]
        raise DatasetError(
            f"{where}: cannot read table {source.location!r} from {shown} ({detail}); check "
            f"[source] url in {manifest.path} and that the database is running"
        ) from None
    finally:
        engine.dispose()


def _digest_after(manifest: DatasetManifest, frame: pd.DataFrame, rows: int) -> Any:
    """The fingerprint's running sha256 after the first ``rows`` rows."""
    digest = hashlib.sha256(b"shadow sql source\x1e")
    # Lagged labels (derived features) are part of how the rows are read; none: as before.
    lags = f"\x1flabel_lags={manifest.label_lags}" if manifest.label_lags else ""
    digest.update(f"{manifest.source.location}\x1f{','.join(map(str, frame.columns))}{lags}\x1e"
                  .encode())
    if rows:
        digest.update(frame.iloc[:rows].to_csv(index=False, header=False).encode())
    return digest


def _fingerprints(manifest: DatasetManifest, frame: pd.DataFrame, cuts: list[int]) -> list[str]:
    """The fingerprint of the first ``n`` rows, for each ``n`` in ``cuts`` (ascending)."""
    digest = _digest_after(manifest, frame, 0)
    out, done = [], 0
    for n in cuts:
        if n > done:
            digest.update(frame.iloc[done:n].to_csv(index=False, header=False).encode())
            done = n
        out.append(digest.copy().hexdigest())
    return out


def read_ledger(home: Home, manifest: DatasetManifest) -> list[SqlVersion]:
    """The versions recorded for ``manifest``'s dataset in ``home``."""
    path = ledger_path(home, manifest.name)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        if raw.get("format") != LEDGER_FORMAT or raw.get("dataset") != manifest.name:
            raise ValueError("not a ledger of this dataset")
        return [SqlVersion(int(v["version"]), int(v["rows"]), str(v["watermark"]),
                           str(v["fingerprint"]), str(v["recorded_at"])) for v in raw["versions"]]
    except FileNotFoundError:
        return []
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as exc:
        raise IntegrityError(f"{path} is not a format-{LEDGER_FORMAT} ledger of SQL dataset "
                             f"{manifest.name!r} ({exc}); restore it from a backup") from None


def current_versions(manifest: DatasetManifest, home: Home | None,
                     frame: pd.DataFrame | None = None) -> tuple[pd.DataFrame, list[SqlVersion]]:
    """The table now and its versions: the recorded ones, verified, then the latest if newer."""
    frame = read_all(manifest) if frame is None else frame
    recorded = read_ledger(home, manifest) if home is not None else []
    order = manifest.source.order_by
    kept = [v for v in recorded if v.rows <= len(frame)]
    for version, now in zip(kept, _fingerprints(manifest, frame, [v.rows for v in kept])):
        last = str(frame[order].iloc[version.rows - 1]) if version.rows else ""
        if now != version.fingerprint or last != version.watermark:
            raise _changed(manifest, home, version, "")
    if len(kept) < len(recorded):
        raise _changed(manifest, home, recorded[len(kept)], f"; the table has {len(frame)} rows now")
    versions = list(recorded)
    if len(frame) and (not recorded or len(frame) > recorded[-1].rows):
        fingerprint = _fingerprints(manifest, frame, [len(frame)])[0]
        versions.append(SqlVersion(len(recorded) + 1, len(frame), str(frame[order].iloc[-1]),
                                   fingerprint, ""))
    if not versions:
        raise DatasetError(f"dataset {manifest.name!r}: table {manifest.source.location!r} is "
                           "empty; insert rows first")
    return frame, versions


def _changed(manifest: DatasetManifest, home: Home | None, version: SqlVersion,
             detail: str) -> IntegrityError:
    where = ledger_path(home, manifest.name) if home is not None else "of the home"
    return IntegrityError(
        f"dataset {manifest.name!r}: the rows of table {manifest.source.location!r} up to "
        f"{manifest.source.order_by} = {version.watermark} changed since version "
        f"{version.version} was recorded ({version.rows} rows, fingerprint "
        f"{version.fingerprint[:12]}{detail}); rows a version holds must not be edited, deleted "
        f"or inserted among: restore them, or move the ledger {where} away to record versions "
        "afresh"
    )


def _pick(manifest: DatasetManifest, versions: list[SqlVersion], wanted: str | None) -> SqlVersion:
    if wanted is None:
        return versions[-1]
    numbered = [(v.version, v.fingerprint) for v in versions]
    return versions[match_version(numbered, wanted, manifest.name)]


def _with_prefix(manifest: DatasetManifest, frame: pd.DataFrame, versions: list[SqlVersion],
                 wanted: str | None) -> list[SqlVersion]:
    """``versions``, or, for a whole fingerprint none of them has, the recorded ones and the
    unrecorded prefix of the table that has it (rows inserted since it was loaded)."""
    if wanted is None or len(wanted) != 64 or wanted in {v.fingerprint for v in versions}:
        return versions
    recorded = [v for v in versions if v.recorded_at]
    done = recorded[-1].rows if recorded else 0
    lines = frame.iloc[done:].to_csv(index=False, header=False).splitlines(keepends=True)
    if len(lines) != len(frame) - done:  # a value with a line break: rows are not lines
        return versions
    digest = _digest_after(manifest, frame, done)
    for n, line in enumerate(lines, start=done + 1):
        digest.update(line.encode())
        if digest.copy().hexdigest() == wanted:
            watermark = str(frame[manifest.source.order_by].iloc[n - 1])
            return [*recorded, SqlVersion(len(recorded) + 1, n, watermark, wanted, "")]
    return versions


def load_sql(manifest: DatasetManifest, home: Home | None, version: str | None) -> Dataset:
    """Version ``version`` (a number, fingerprint or prefix; None: the latest) of the table.

    A whole fingerprint of a version never recorded is found as long as its
    rows are still the table's first ones (rows inserted after it are fine).
    """
    frame, versions = current_versions(manifest, home)
    chosen = _pick(manifest, _with_prefix(manifest, frame, versions, version), version)
    # The order column rides along; the table rules read only the manifest's columns.
    rows = frame.iloc[:chosen.rows].reset_index(drop=True)
    return combined_dataset([rows], manifest, chosen.fingerprint)


def sql_versions(manifest: DatasetManifest, home: Home | None) -> list[DatasetVersion]:
    """The versions as the listing shows them (``watermark`` in ``source``)."""
    _, versions = current_versions(manifest, home)
    return [DatasetVersion(v.version, v.fingerprint, "", (), v.rows, v.recorded_at,
                           f"{manifest.source.order_by} <= {v.watermark}") for v in versions]


def record_version(manifest: DatasetManifest, home: Home, fingerprint: str | None) -> int:
    """Pin the version named ``fingerprint`` (None: the latest); returns its number. Idempotent.

    A version loaded before more rows were inserted is found and pinned as it
    was loaded (a sweep pins what it trained on, not what is there now).
    Checked before the home is touched, then again under a per-dataset lock.
    """
    return record_checked(
        home, manifest.name, lambda: _record_plan(manifest, home, fingerprint),
        lambda body: write_bytes_atomic(ledger_path(home, manifest.name),
                                        (json.dumps(body, indent=1) + "\n").encode()))


def _record_plan(manifest: DatasetManifest, home: Home,
                 fingerprint: str | None) -> tuple[int, dict[str, Any] | None]:
    frame, versions = current_versions(manifest, home)
    versions = _with_prefix(manifest, frame, versions, fingerprint)
    chosen = _pick(manifest, versions, fingerprint)
    if chosen.recorded_at:
        return chosen.version, None
    now = datetime.now(UTC).isoformat(timespec="seconds")
    return chosen.version, {
        "format": LEDGER_FORMAT, "dataset": manifest.name, "table": manifest.source.location,
        "order_by": manifest.source.order_by,
        "versions": [{"version": v.version, "rows": v.rows, "watermark": v.watermark,
                      "fingerprint": v.fingerprint, "recorded_at": v.recorded_at or now}
                     for v in versions if v.recorded_at or v is chosen]}
